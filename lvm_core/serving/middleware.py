"""Pure ASGI middleware of the service: the request body limit, and the request id, access log and
per-endpoint/per-version observation.

Pure ASGI (not `BaseHTTPMiddleware`) so a body over the limit is refused before it is read, so the
observer sees every answer, the body limit's 413s included, and so the hot path pays for no extra task.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any, cast

import orjson

from lvm_core.contracts.errors import LvmError

if TYPE_CHECKING:  # annotations only: a server runner imports this module without the model code
    from lvm_core.serving.holder import ModelHolder
    from lvm_core.serving.live_stats import LiveStats
    from lvm_core.serving.metrics import ServeMetrics

ENDPOINTS = {"/v1/predict", "/v1/predict/text", "/v1/feedback", "/v1/models", "/v1/rollout/stats", "/healthz",
             "/readyz", "/metrics"}
PREDICT_ENDPOINTS = {"/v1/predict", "/v1/predict/text"}  # what rollout stats count per version
REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "lvm.serve.access"

_REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode()
_GOOD_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # what a client may name its request (else one is made)
_access = logging.getLogger(ACCESS_LOGGER)


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over `limit` bytes, by Content-Length before reading, else while
    reading (a chunked body). At most `drain` bytes past the limit are read and dropped, so a client still
    sending reads the 413 instead of a reset, and the connection is then closed: an endless body costs the
    server a bounded read, never an unbounded one."""

    def __init__(self, app: Any, limit: int, drain: int = 8 * 1024 * 1024):
        self.app = app
        self.limit = limit
        self.drain = drain

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if raw is not None:
            try:
                length = int(raw)
            except ValueError:
                await self._reject(scope, send, 400, "invalid Content-Length header")
                return
            if length > self.limit:
                if length <= self.limit + self.drain:  # else closed unread: the client may see a reset
                    await self._drain(receive, length)
                await self._reject(scope, send, 413, f"body of {length} bytes is over the limit of {self.limit} bytes")
                return
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return cast(dict[str, Any], message)

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._drain(receive, self.drain)
            await self._reject(scope, send, 413, f"body is over the limit of {self.limit} bytes")

    @staticmethod
    async def _drain(receive: Any, budget: int) -> None:
        """Read and drop the rest of the body, at most `budget` bytes of it."""
        left = budget
        while left > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, scope: dict[str, Any], send: Any, status: int, message: str) -> None:
        scope.setdefault("state", {})["lvm_error"] = "validation"
        body = orjson.dumps({"error": "validation", "detail": message})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(LvmError):
    pass


class Observe:
    """Pure ASGI middleware: a request id (the client's `X-Request-ID` when it is a plain token, else a new
    one) echoed in the answer's header; request count, latency and errors per endpoint and model version;
    and, with `access_log`, one JSON line per request on the `lvm.serve.access` logger."""

    def __init__(self, app: Any, metrics: ServeMetrics, holder: ModelHolder, live: LiveStats, access_log: bool = True):
        self.app = app
        self.metrics = metrics
        self.holder = holder
        self.live = live
        self.access_log = access_log
        self._prefix = os.urandom(4).hex()  # ids are unique across restarts and processes, and cheap to make
        self._next = itertools.count(1)

    def request_id(self, scope: dict[str, Any]) -> str:
        for k, v in scope.get("headers") or ():
            if k == _REQUEST_ID_RAW:
                if _GOOD_ID.fullmatch(v):
                    return cast(str, v.decode())
                break
        return f"{self._prefix}-{next(self._next):x}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        rid = state["request_id"] = self.request_id(scope)
        id_header = (_REQUEST_ID_RAW, rid.encode())
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, state, status["code"], time.perf_counter() - start)

    def _record(self, scope: dict[str, Any], state: dict[str, Any], code: int, elapsed: float) -> None:
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        version = state.get("lvm_version")
        if version is None:
            cur = self.holder.current
            version = cur.version_label if cur is not None else "none"
        self.metrics.requests.labels(endpoint, version, str(code)).inc()
        self.metrics.latency.labels(endpoint, version).observe(elapsed)
        kind = None
        if code >= 400:
            kind = state.get("lvm_error") or ("auth" if code == 401 else "internal" if code >= 500 else "validation")
            self.metrics.errors.labels(kind, endpoint, version).inc()
        if endpoint in PREDICT_ENDPOINTS and state.get("lvm_version") is not None:
            self.live.record_request(version, elapsed, code, kind, client=state.get("lvm_client"))
        if self.access_log and _access.isEnabledFor(logging.INFO):
            client = scope.get("client")
            _access.info(orjson.dumps({
                "ts": round(time.time(), 3), "request_id": state["request_id"], "method": scope.get("method"),
                "path": path, "status": code, "ms": round(elapsed * 1e3, 3), "version": version, "error": kind,
                "client": client[0] if client else None}).decode())
