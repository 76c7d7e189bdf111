"""What every route of one app shares: the model holder, settings, token, stores and the one prediction path.

One `Service` per app, kept on `app.state.service`; routes receive it through the `ServiceDep`
dependency, so the routers are module-level and hold no per-app state themselves.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import Annotated, Any, cast

import numpy as np
import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lvm_core.serving.feedback_store import FeedbackStore
from lvm_core.serving.holder import ModelHolder, Served
from lvm_core.serving.inputs import InputError, client_key, parse_json
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.metrics import ServeMetrics
from lvm_core.serving.settings import ServeSettings
from lvm_core.serving.text import TextSearch
from lvm_core.serving.window import ContextWindow

_INLINE_CONTEXTS = 8  # predict batches up to this size on the event loop (well under a millisecond)


def error(request: Request, status: int, kind: str, message: str) -> JSONResponse:
    """The service's error answer: `{"error": kind, "detail": message}`, its kind kept for the metrics."""
    request.state.lvm_error = kind
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": kind, "detail": message}, status_code=status, headers=headers)


def json_response(content: Any) -> Response:
    """A JSON response; numpy arrays are written directly (float32 rows of a prediction) by orjson."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@dataclasses.dataclass
class Service:
    holder: ModelHolder
    settings: ServeSettings
    token: str  # "" : no token required
    metrics: ServeMetrics
    live: LiveStats
    feedback: FeedbackStore
    texts: TextSearch
    window: ContextWindow | None

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    @staticmethod
    def unauthorized(request: Request) -> JSONResponse:
        return error(request, 401, "auth", "missing or wrong token: send 'Authorization: Bearer <token>'")

    async def routed(self, request: Request) -> tuple[Any, Served | None, Response | None]:
        """(payload, the model version that answers it, None), or (None, None, the 4xx/503 to send)."""
        if not self.authorized(request):
            return None, None, self.unauthorized(request)
        holder = self.holder
        if holder.current is None:
            return None, None, error(request, 503, "unavailable", holder.last_error or "model not loaded yet")
        try:
            payload = parse_json(await request.body())
            key = client_key(request, payload)
        except InputError as exc:
            return None, None, error(request, exc.status, "validation", str(exc))
        served = holder.route(key)  # read once: a swap during this request does not affect it
        if served is None:  # not reached: a loaded model is swapped, never unloaded
            return None, None, error(request, 503, "unavailable", holder.last_error or "model not loaded yet")
        request.state.lvm_version = served.version_label
        return payload, served, None

    async def predict_with(self, served: Served, x: np.ndarray) -> np.ndarray:
        """The one prediction path of every endpoint: the model's batched predict, off the event loop."""
        if len(x) <= _INLINE_CONTEXTS:  # a few contexts cost less than the hop to a worker thread
            pred = served.model.predict(x)
        else:
            pred = await run_in_threadpool(served.model.predict, x)
        if not np.isfinite(pred).all():
            raise ValueError("model produced non-finite predictions")
        self.metrics.contexts.labels(served.version_label).inc(len(pred))
        if self.window is not None:
            self.window.add(x)
        return cast(np.ndarray, pred)


async def get_service(request: Request) -> Service:
    """The app's `Service` (async: a sync dependency would cost a worker-thread hop per request)."""
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]
