"""Running the service: uvicorn with the JSON access lines on stdout, one torch thread, and a drain on SIGTERM.

Kept apart from `app` so that what only runs a server (the CLI, a test of the shutdown) does not import the
registry and model code the app needs.
"""

from __future__ import annotations

from typing import Any

from lvm_core.serving.middleware import ACCESS_LOGGER
from lvm_core.serving.settings import ServeSettings


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging plus the JSON access lines on stdout (uvicorn's own text access log is left off:
    ours carries the request id and the version that answered)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {**LOGGING_CONFIG, "formatters": {**LOGGING_CONFIG["formatters"],
                                                               "line": {"format": "%(message)s"}}}
    config["handlers"] = {**LOGGING_CONFIG["handlers"],
                          "lvm_access": {"class": "logging.StreamHandler", "formatter": "line",
                                         "stream": "ext://sys.stdout"}}
    config["loggers"] = {**LOGGING_CONFIG["loggers"],
                         ACCESS_LOGGER: {"handlers": ["lvm_access"], "level": level.upper(), "propagate": False}}
    return config


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve `app` until SIGINT/SIGTERM; then stop accepting, let requests in flight finish for the settings'
    `shutdown_drain_s` (cut after that), run the shutdown (window flushed, holder stopped) and return.

    Torch gets `torch_threads` intra-op threads: a served batch is a few contexts, where a second thread
    only adds its hand-off (and, on a busy machine, waits for a core): see docs/architecture.md."""
    import uvicorn

    settings: ServeSettings = app.state.settings
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, log_config=log_config(log_level),
                timeout_graceful_shutdown=max(1, round(settings.shutdown_drain_s)))
