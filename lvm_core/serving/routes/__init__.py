"""The service's HTTP routes, one router per concern; `create_app` includes them."""

from lvm_core.serving.routes.feedback import router as feedback_router
from lvm_core.serving.routes.predict import router as predict_router
from lvm_core.serving.routes.status import router as status_router

__all__ = ["feedback_router", "predict_router", "status_router"]
