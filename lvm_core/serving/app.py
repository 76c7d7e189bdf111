"""The inference service: FastAPI app answering with the model a `ModelHolder` serves.

Endpoints: POST /v1/predict, POST /v1/predict/text, POST /v1/feedback, GET /v1/models, GET /v1/rollout/stats
(token when `LVM_SERVE_TOKEN` is set), GET /healthz, /readyz, /metrics (always open). During a staged
rollout (lvm_core.rollout) each predict request is answered by the champion or the challenger, chosen by
its client key (`X-Client-Key` header, else the body's `client_key`), and the answer names the version.
Bodies are JSON, or raw float32 (`application/octet-stream`) for /v1/predict, never unpickled or evaluated;
bounded in bytes before parsing and in contexts after; bad input gets a 4xx whose `detail` says what was
wrong. Every answer carries an `X-Request-ID` (the client's, or a new one), also in the JSON access log
line. Metrics live in the app's own Prometheus `CollectorRegistry`. /openapi.json and /docs describe the
API (open like /healthz: they show its shape, never data). `server.run` serves it.

This module only assembles: settings (`settings`), input checks (`inputs`), metrics (`metrics`), the
shared per-app state (`service`), middleware (`middleware`) and the routers (`routes/`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from lvm_core.serving.feedback_store import FeedbackStore
from lvm_core.serving.holder import DEFAULT_MODEL_REF, DEFAULT_REFRESH_S, ModelHolder, Served
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.metrics import ServeMetrics
from lvm_core.serving.middleware import BodyLimit, Observe
from lvm_core.serving.routes.feedback import router as feedback_router
from lvm_core.serving.routes.predict import router as predict_router
from lvm_core.serving.routes.status import router as status_router
from lvm_core.serving.service import Service
from lvm_core.serving.settings import TOKEN_ENV, ServeSettings
from lvm_core.serving.text import TextSearch
from lvm_core.serving.window import ContextWindow


def _follow_holder(holder: ModelHolder, metrics: ServeMetrics, live: LiveStats) -> None:
    """Keep metrics and live stats in step with what the holder serves (swaps, rollout changes, load errors)."""

    def on_swap(old: Served | None, new: Served) -> None:
        metrics.on_swap(old, new)
        metrics.sync(holder)

    def on_rollout(state: Any) -> None:
        if state is None or state.window != live.window:
            live.reset(state.window if state is not None else None)
        metrics.sync(holder)

    holder._on_swap = on_swap
    holder._on_load_error = metrics.on_load_error
    holder._on_rollout = on_rollout
    if holder.current is not None:
        metrics.sync(holder)
        st = holder.rollout_state
        live.reset(st.window if st is not None else None)


def _make_service(holder: ModelHolder, settings: ServeSettings) -> Service:
    token = settings.token if settings.token is not None else os.environ.get(TOKEN_ENV, "")
    metrics = ServeMetrics()
    live = LiveStats()
    _follow_holder(holder, metrics, live)
    window = (ContextWindow(settings.contexts_path, settings.contexts_window, settings.contexts_flush_s)
              if settings.contexts_path else None)
    return Service(holder=holder, settings=settings, token=token, metrics=metrics, live=live,
                   feedback=FeedbackStore(settings.feedback_capacity),
                   texts=TextSearch(device=holder.device, max_indexes=settings.max_text_indexes),
                   window=window)


def create_app(
    model_ref: str = DEFAULT_MODEL_REF,
    data_dir: Path | str | None = None,
    *,
    settings: ServeSettings | None = None,
    refresh_s: float = DEFAULT_REFRESH_S,
    holder: ModelHolder | None = None,
) -> FastAPI:
    """The service app. Without `holder`, one is made for `model_ref`/`data_dir`; on startup the model is
    loaded in the background (`/readyz` answers 503 until it is) and its alias is re-read every `refresh_s`
    (with the rollout state: a challenger is loaded and served its share while a rollout is active)."""
    settings = settings or ServeSettings()
    if holder is None:
        holder = ModelHolder(model_ref, data_dir, refresh_s=refresh_s)
    svc = _make_service(holder, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.holder.start()
        if svc.window is not None:
            svc.window.start()
        try:
            yield
        finally:
            svc.holder.stop()
            if svc.window is not None:
                svc.window.stop()

    docs = settings.docs
    app = FastAPI(title="lvm serve", lifespan=lifespan, docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None,
                  description="Predicts the embedding of a Wikipedia article's next chunk from its previous chunks' "
                  "embeddings. /v1/* needs `Authorization: Bearer <token>` when the service has one.")
    app.state.service = svc
    app.state.holder = svc.holder
    app.state.metrics = svc.metrics
    app.state.feedback = svc.feedback
    app.state.settings = svc.settings
    app.state.live_stats = svc.live
    app.state.texts = svc.texts
    app.state.context_window = svc.window
    for router in (predict_router, feedback_router, status_router):  # the hot path matched first
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, drain=settings.drain_body_bytes)
    app.add_middleware(Observe, metrics=svc.metrics, holder=holder, live=svc.live,  # outermost: sees the 413s too
                       access_log=settings.access_log)
    return app

