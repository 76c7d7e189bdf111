"""What every route of one app shares: the model holder, settings, token, stores and the one prediction path.

One `Service` per app, kept on `app.state.service`; routes read it from there (a FastAPI dependency would
cost its resolution on every request of the hot path), so the routers are module-level and hold no per-app
state themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
from collections.abc import Callable
from typing import Annotated, Any, cast

import numpy as np
import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lvm_core.contracts.errors import LvmError
from lvm_core.io.context_window_file import client_group
from lvm_core.serving.feedback_store import FeedbackStore
from lvm_core.serving.holder import ModelHolder, Served
from lvm_core.serving.inputs import InputError, body_client_key, parse_json
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.metrics import ServeMetrics
from lvm_core.serving.settings import CLIENT_KEY_HEADER, ServeSettings
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


class MicroBatcher:
    """Concurrent small predictions of one version answered by one model call.

    A request due for a prediction joins the pending batch of its version and waits; the batch is run once
    the event loop has started every request whose bytes arrived with it (`call_soon`), so under load the
    model's per-call cost is paid once per batch instead of once per request, and an idle service pays
    only a future. Runs on the event loop: for the small bodies the hot path keeps there.
    """

    def __init__(self, predict: Callable[[Served, np.ndarray, Any], np.ndarray], max_contexts: int = 64):
        self._predict = predict  # (version, contexts, client key or one client group per context)
        self.max_contexts = max_contexts
        self._pending: dict[int, tuple[Served, list[_Pending]]] = {}
        self._size = 0
        self._scheduled = False

    async def predict(self, served: Served, x: np.ndarray, client: str | None = None) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.setdefault(id(served), (served, []))[1].append((x, client, fut))  # id: a version's snapshot
        self._size += len(x)
        if self._size >= self.max_contexts:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending, self._size = self._pending, {}, 0
        for served, items in pending.values():
            if len(items) == 1:
                x, client, _ = items[0]
                args: tuple[np.ndarray, Any] = (x, client)
            else:  # the context window keeps each context's client: one group per row
                args = (np.concatenate([x for x, _, _ in items]),
                        np.concatenate([np.full(len(x), client_group(c), dtype=np.uint64) for x, c, _ in items]))
            try:
                pred = self._predict(served, *args)
            except Exception as exc:  # noqa: BLE001 - each waiting request answers it (a 500, logged there)
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            start = 0
            for x, _, fut in items:
                if not fut.done():  # a request cancelled meanwhile (client gone) just drops its rows
                    fut.set_result(pred[start : start + len(x)])
                start += len(x)


_Pending = tuple[np.ndarray, str | None, "asyncio.Future[np.ndarray]"]


class Unavailable(LvmError):
    """No model to answer with yet (answered 503)."""


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
    batcher: MicroBatcher = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.batcher = MicroBatcher(self.predict_now)

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    @staticmethod
    def unauthorized(request: Request) -> JSONResponse:
        return error(request, 401, "auth", "missing or wrong token: send 'Authorization: Bearer <token>'")

    def refusal(self, request: Request) -> Response | None:
        """The 401 or 503 to answer before reading the body, None when the request may go on."""
        if not self.authorized(request):
            return self.unauthorized(request)
        if self.holder.current is None:
            return error(request, 503, "unavailable", self.holder.last_error or "model not loaded yet")
        return None

    def route_payload(self, body: bytes, header_key: str | None) -> tuple[Any, Served, str | None]:
        """(parsed JSON body, the version that answers it, the client key); InputError for a malformed body."""
        payload = parse_json(body)
        key = body_client_key(header_key, payload)
        return payload, self.route(key), key

    def route(self, key: str | None) -> Served:
        """The version that answers this client (read once: a swap during the request does not affect it)."""
        served = self.holder.route(key)
        if served is None:  # not reached once loaded: a loaded model is swapped, never unloaded
            raise Unavailable(self.holder.last_error or "model not loaded yet")
        return served

    def off_loop(self, body: bytes) -> bool:
        """Whether parsing this body would hold the event loop long enough to delay other requests."""
        return len(body) > self.settings.inline_body_bytes

    async def routed(self, request: Request) -> tuple[Any, Served | None, Response | None]:
        """(payload, the model version that answers it, None), or (None, None, the 4xx/503 to send)."""
        refused = self.refusal(request)
        if refused is not None:
            return None, None, refused
        body = await request.body()
        key = request.headers.get(CLIENT_KEY_HEADER)
        try:
            if self.off_loop(body):
                payload, served, key = await run_in_threadpool(self.route_payload, body, key)
            else:
                payload, served, key = self.route_payload(body, key)
        except InputError as exc:
            return None, None, error(request, exc.status, "validation", str(exc))
        except Unavailable as exc:
            return None, None, error(request, 503, "unavailable", str(exc))
        request.state.lvm_version = served.version_label
        request.state.lvm_client = key
        return payload, served, None

    def predict_now(self, served: Served, x: np.ndarray, client: str | None | np.ndarray = None) -> np.ndarray:
        """The one prediction path of every endpoint: the model's batched predict, on the calling thread.
        `client`: the request's client key, or one client group per context of a micro-batch."""
        pred = served.model.predict(x)
        if not np.isfinite(pred).all():
            raise ValueError("model produced non-finite predictions")
        self.metrics.contexts.labels(served.version_label).inc(len(pred))
        if self.window is not None:
            self.window.add(x, client)
        return cast(np.ndarray, pred)

    async def predict_with(self, served: Served, x: np.ndarray, client: str | None = None) -> np.ndarray:
        """`predict_now`, off the event loop for more than a few contexts."""
        if len(x) <= _INLINE_CONTEXTS:  # a few contexts cost less than the hop to a worker thread
            return self.predict_now(served, x, client)
        return await run_in_threadpool(self.predict_now, served, x, client)


async def get_service(request: Request) -> Service:
    """The app's `Service` (async: a sync dependency would cost a worker-thread hop per request)."""
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]
