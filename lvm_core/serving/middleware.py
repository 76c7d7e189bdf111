"""Pure ASGI middleware of the service: the request body limit and the per-endpoint/per-version observation.

Pure ASGI (not `BaseHTTPMiddleware`) so a body over the limit is refused before it is read, and so the
observer sees every answer, the body limit's 413s included.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from lvm_core.contracts.errors import LvmError
from lvm_core.serving.holder import ModelHolder
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.metrics import ServeMetrics

ENDPOINTS = {"/v1/predict", "/v1/predict/text", "/v1/feedback", "/v1/models", "/v1/rollout/stats", "/healthz",
             "/readyz", "/metrics"}
PREDICT_ENDPOINTS = {"/v1/predict", "/v1/predict/text"}  # what rollout stats count per version

_DRAIN_FACTOR = 8


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over `limit` bytes, by Content-Length before reading, else while reading."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"content-length")
        if raw is not None:
            try:
                length = int(raw)
            except ValueError:
                await self._reject(scope, send, 400, "invalid Content-Length header")
                return
            if length > self.limit:
                # Refused unread: the body is drained without being kept (so the client, still sending, reads
                # the answer instead of a reset connection), up to a bound past which the connection is dropped.
                if length <= self.limit * _DRAIN_FACTOR:
                    await self._drain(receive)
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
            await self._drain(receive)  # bounded by the server's own read loop; nothing is kept
            await self._reject(scope, send, 413, f"body is over the limit of {self.limit} bytes")

    @staticmethod
    async def _drain(receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _reject(self, scope: dict[str, Any], send: Any, status: int, message: str) -> None:
        scope.setdefault("state", {})["lvm_error"] = "validation"
        body = json.dumps({"error": "validation", "detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(LvmError):
    pass


class Observe:
    """Pure ASGI middleware: request count, latency and errors per endpoint and model version."""

    def __init__(self, app: Any, metrics: ServeMetrics, holder: ModelHolder, live: LiveStats):
        self.app = app
        self.metrics = metrics
        self.holder = holder
        self.live = live

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope.get("path", ""), state, status["code"], time.perf_counter() - start)

    def _record(self, path: str, state: dict[str, Any], code: int, elapsed: float) -> None:
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
            self.live.record_request(version, elapsed, code, kind)
