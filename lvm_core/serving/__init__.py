"""Serving: the FastAPI inference service (`lvm serve`) and the model holder that follows a registry alias."""

from lvm_core.serving.app import create_app
from lvm_core.serving.holder import DEFAULT_MODEL_REF, DEFAULT_REFRESH_S, ModelHolder, Served
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.settings import TOKEN_ENV, ServeSettings
from lvm_core.serving.text import TextSearch, TextUnavailable

__all__ = ["DEFAULT_MODEL_REF", "DEFAULT_REFRESH_S", "LiveStats", "ModelHolder", "Served", "ServeSettings", "TOKEN_ENV",
           "TextSearch", "TextUnavailable", "create_app"]
