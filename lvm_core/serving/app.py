"""The inference service: FastAPI app answering with the model a `ModelHolder` serves.

Endpoints: POST /v1/predict, POST /v1/predict/text, POST /v1/feedback, GET /v1/models, GET /v1/rollout/stats
(token when `LVM_SERVE_TOKEN` is set), GET /healthz, /readyz, /metrics (always open). During a staged
rollout (lvm_core.rollout) each predict request is answered by the champion or the challenger, chosen by
its client key (`X-Client-Key` header, else the body's `client_key`), and the answer names the version.
Bodies are JSON only (never unpickled or evaluated), bounded in bytes before parsing and in contexts
after; bad input gets a 4xx whose `detail` says what was wrong. Metrics live in the app's own Prometheus `CollectorRegistry`.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import json
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, Summary
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from lvm_core.io.vectors import row_norms
from lvm_core.serving.holder import DEFAULT_MODEL_REF, DEFAULT_REFRESH_S, ModelHolder, Served
from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.text import TextSearch, TextUnavailable
from lvm_core.serving.window import ContextWindow

_log = logging.getLogger(__name__)

TOKEN_ENV = "LVM_SERVE_TOKEN"
_ENDPOINTS = {"/v1/predict", "/v1/predict/text", "/v1/feedback", "/v1/models", "/v1/rollout/stats", "/healthz",
              "/readyz", "/metrics"}
_PREDICT_ENDPOINTS = {"/v1/predict", "/v1/predict/text"}  # what rollout stats count per version
CLIENT_KEY_HEADER = "X-Client-Key"


@dataclasses.dataclass
class ServeSettings:
    max_batch: int = 256  # contexts per request
    max_body_bytes: int = 8 * 1024 * 1024  # checked on Content-Length before reading, and while reading
    unit_norm_tol: float = 1e-3
    feedback_capacity: int = 100_000  # predictions kept for feedback (memory ≈ capacity × D × 4 bytes)
    token: Optional[str] = None  # None: read LVM_SERVE_TOKEN; "" : no token
    max_text_chars: int = 10_000  # per context text of /v1/predict/text
    max_k: int = 50  # neighbours per /v1/predict/text answer
    contexts_path: Optional[Path] = None  # where the received-context window goes for the drift monitor
    contexts_window: int = 5000  # contexts kept in that window
    contexts_flush_s: float = 30.0  # seconds between rewrites of the window file


class InputError(ValueError):
    """Bad client input: answered with `status` and the message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# --- metrics ---------------------------------------------------------------------------------------


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lvm_serve_requests", "Requests by endpoint, model version and status code",
                                ["endpoint", "version", "code"], registry=r)
        self.latency = Histogram("lvm_serve_request_latency_seconds", "Request latency by endpoint and model version",
                                 ["endpoint", "version"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.errors = Counter("lvm_serve_errors", "Failed requests by kind (validation, auth, not_found, "
                              "unavailable, internal), endpoint and model version", ["kind", "endpoint", "version"],
                              registry=r)
        self.contexts = Counter("lvm_serve_predicted_contexts", "Contexts predicted, by model version",
                                ["version"], registry=r)
        self.online_cosine = Summary("lvm_serve_online_cosine", "cos(prediction, true next chunk) from feedback",
                                     ["version"], registry=r)
        self.online_cosine_mean = Gauge("lvm_serve_online_cosine_mean", "Mean online cosine since start, by version",
                                        ["version"], registry=r)
        self.model_info = Gauge("lvm_serve_model_info", "1 for each model version being served",
                                ["name", "version", "alias"], registry=r)
        self.traffic_share = Gauge("lvm_serve_traffic_share", "Share of client keys each version answers "
                                   "(a staged rollout splits it between champion and challenger)", ["version"],
                                   registry=r)
        self.swaps = Counter("lvm_serve_model_swaps", "Models loaded and swapped in", registry=r)
        self.load_failures = Counter("lvm_serve_model_load_failures", "Failed alias lookups or model loads", registry=r)
        ProcessCollector(registry=r)

    def on_swap(self, old: Optional[Served], new: Served) -> None:
        self.swaps.inc()

    def sync(self, holder: ModelHolder) -> None:
        """Model info and traffic shares from what the holder serves now (after a swap or a rollout change)."""
        self.model_info.clear()
        self.traffic_share.clear()
        for served, share in holder.serving():
            self.model_info.labels(str(served.model.name), served.version_label, str(served.alias)).set(1)
            self.traffic_share.labels(served.version_label).set(share)

    def on_load_error(self, exc: BaseException) -> None:
        self.load_failures.inc()


class FeedbackStore:
    """The last `capacity` predictions (id → version, vector) and the online cosine per version."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: collections.OrderedDict[str, tuple[str, np.ndarray]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._sums: dict[str, list[float]] = {}  # version -> [sum, count]

    def put(self, version: str, predictions: np.ndarray) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(len(predictions))]
        with self._lock:
            for pid, vec in zip(ids, predictions):
                self._items[pid] = (version, np.array(vec, dtype=np.float32, copy=True))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return ids

    def take(self, pid: str, dim: int) -> tuple[str, Optional[tuple[str, np.ndarray]]]:
        """('ok', item) and forget the id; ('unknown', None); ('dim', item) when the dims differ (id kept)."""
        with self._lock:
            item = self._items.get(pid)
            if item is None:
                return "unknown", None
            if item[1].shape[0] != dim:
                return "dim", item
            del self._items[pid]
            return "ok", item

    def record(self, version: str, cosine: float) -> float:
        with self._lock:
            acc = self._sums.setdefault(version, [0.0, 0])
            acc[0] += cosine
            acc[1] += 1
            return acc[0] / acc[1]

    def online(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {v: {"mean": s / n if n else float("nan"), "count": n} for v, (s, n) in self._sums.items()}


# --- input checks ----------------------------------------------------------------------------------


def _parse_json(body: bytes) -> Any:
    """orjson for speed; the standard parser for what orjson refuses (NaN literals, huge integers), so such
    input gets the same specific 4xx as before instead of a generic parse error."""
    if not body:
        raise InputError("empty body: send a JSON object", 400)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"body is not valid JSON: {exc}", 400) from None


def _json(content: Any) -> Response:
    """A JSON response; numpy arrays are written directly (float32 rows of a prediction) by orjson."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _as_array(value: Any, what: str, ndim: int) -> np.ndarray:
    try:
        with np.errstate(all="ignore"):
            arr = np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(f"{what} must be a rectangular array of numbers (rows of unequal length?)") from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must contain only numbers (got {arr.dtype.kind!r}-typed values)")
    if arr.ndim != ndim:
        raise InputError(f"{what} must be a {ndim}-d array, got {arr.ndim}-d with shape {list(arr.shape)}")
    with np.errstate(all="ignore"):
        return arr.astype(np.float32)


def _check_vectors(x: np.ndarray, what: str, tol: float) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        idx = [int(i) for i in np.argwhere(bad)[0]]
        raise InputError(f"{what} contains NaN or infinite values (first at index {idx})")
    norms = row_norms(x.astype(np.float64))
    off = np.abs(norms - 1.0) > tol
    if off.any():
        idx = [int(i) for i in np.argwhere(off)[0]]
        raise InputError(f"{what} must be unit vectors (|norm - 1| <= {tol:g}); vector at index {idx} has norm "
                         f"{float(norms[tuple(idx)]):.6g}")


def validate_contexts(payload: Any, model: Any, settings: ServeSettings) -> np.ndarray:
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object with a 'contexts' field", 400)
    if "contexts" not in payload:
        raise InputError("missing field 'contexts' (a list of n contexts, each ctx vectors of D floats)")
    ctxs = payload["contexts"]
    if not isinstance(ctxs, list):
        raise InputError("'contexts' must be a list of contexts")
    if not ctxs:
        raise InputError("empty batch: 'contexts' has no contexts")
    if len(ctxs) > settings.max_batch:
        raise InputError(f"batch of {len(ctxs)} contexts is over the limit of {settings.max_batch}", 413)
    x = _as_array(ctxs, "'contexts'", 3)
    n, c, d = x.shape
    if c != model.context_len or d != model.dim:
        raise InputError(f"'contexts' has shape [{n}, {c}, {d}] but model {model.name} v{model.version} expects "
                         f"[n, {model.context_len}, {model.dim}] (ctx={model.context_len} chunk vectors of "
                         f"dim {model.dim} from its encoder)")
    _check_vectors(x, "'contexts'", settings.unit_norm_tol)
    return x


def validate_texts(payload: Any, model: Any, settings: ServeSettings) -> tuple[list[str], int]:
    """(context texts, k) of a /v1/predict/text body: exactly ctx non-empty strings, each within the limit."""
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object with a 'texts' field", 400)
    if "texts" not in payload:
        raise InputError(f"missing field 'texts' (the {model.context_len} chunk texts of one context, oldest first)")
    texts = payload["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError("'texts' must be a list of strings")
    if not texts:
        raise InputError(f"empty context: 'texts' has no texts (model {model.name} v{model.version} reads "
                         f"{model.context_len})")
    if len(texts) != model.context_len:
        raise InputError(f"'texts' has {len(texts)} texts but model {model.name} v{model.version} reads contexts "
                         f"of exactly {model.context_len} chunks")
    for i, t in enumerate(texts):
        if not t.strip():
            raise InputError(f"text {i} of 'texts' is empty")
        if len(t) > settings.max_text_chars:
            raise InputError(f"text {i} of 'texts' has {len(t)} characters, over the limit of "
                             f"{settings.max_text_chars}", 413)
    k = payload.get("k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k:
        raise InputError(f"'k' must be an integer from 1 to {settings.max_k}, got {k!r}")
    return texts, k


# --- the app ---------------------------------------------------------------------------------------


_DRAIN_FACTOR = 8
_INLINE_CONTEXTS = 8  # predict batches up to this size on the event loop (well under a millisecond)


class _BodyLimit:
    """Pure ASGI middleware: 413 for a body over `limit` bytes, by Content-Length before reading, else while reading."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
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

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

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

    async def _reject(self, scope: dict, send: Any, status: int, message: str) -> None:
        scope.setdefault("state", {})["lvm_error"] = "validation"
        body = json.dumps({"error": "validation", "detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _Observe:
    """Pure ASGI middleware: request count, latency and errors per endpoint and model version."""

    def __init__(self, app: Any, metrics: ServeMetrics, holder: ModelHolder, live: LiveStats):
        self.app = app
        self.metrics = metrics
        self.holder = holder
        self.live = live

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in _ENDPOINTS else "other"
            version = state.get("lvm_version")
            if version is None:
                cur = self.holder.current
                version = cur.version_label if cur is not None else "none"
            code = status["code"]
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(endpoint, version, str(code)).inc()
            self.metrics.latency.labels(endpoint, version).observe(elapsed)
            kind = None
            if code >= 400:
                kind = state.get("lvm_error") or ("auth" if code == 401 else "internal" if code >= 500 else "validation")
                self.metrics.errors.labels(kind, endpoint, version).inc()
            if endpoint in _PREDICT_ENDPOINTS and state.get("lvm_version") is not None:
                self.live.record_request(version, elapsed, code, kind)


def _error(request: Request, status: int, kind: str, message: str) -> JSONResponse:
    request.state.lvm_error = kind
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": kind, "detail": message}, status_code=status, headers=headers)


def create_app(
    model_ref: str = DEFAULT_MODEL_REF,
    data_dir: Optional[Path | str] = None,
    *,
    settings: Optional[ServeSettings] = None,
    refresh_s: float = DEFAULT_REFRESH_S,
    holder: Optional[ModelHolder] = None,
) -> FastAPI:
    """The service app. Without `holder`, one is made for `model_ref`/`data_dir`; on startup the model is
    loaded in the background (`/readyz` answers 503 until it is) and its alias is re-read every `refresh_s`
    (with the rollout state: a challenger is loaded and served its share while a rollout is active)."""
    settings = settings or ServeSettings()
    token = settings.token if settings.token is not None else os.environ.get(TOKEN_ENV, "")
    metrics = ServeMetrics()
    live = LiveStats()
    if holder is None:
        holder = ModelHolder(model_ref, data_dir, refresh_s=refresh_s)

    def on_swap(old: Optional[Served], new: Served) -> None:
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
    feedback = FeedbackStore(settings.feedback_capacity)
    texts = TextSearch(device=holder.device)
    window = (ContextWindow(settings.contexts_path, settings.contexts_window, settings.contexts_flush_s)
              if settings.contexts_path else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        if window is not None:
            window.start()
        try:
            yield
        finally:
            holder.stop()
            if window is not None:
                window.stop()

    app = FastAPI(title="lvm serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.feedback = feedback
    app.state.settings = settings
    app.state.live_stats = live
    app.state.texts = texts
    app.state.context_window = window

    def authorized(request: Request) -> bool:
        if not token:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def unauthorized(request: Request) -> JSONResponse:
        return _error(request, 401, "auth", "missing or wrong token: send 'Authorization: Bearer <token>'")

    def client_key(request: Request, payload: Any) -> Optional[str]:
        """`X-Client-Key` header, else the body's `client_key` (a string); None routes at random."""
        key = request.headers.get(CLIENT_KEY_HEADER)
        if key:
            return key
        if isinstance(payload, dict) and payload.get("client_key") is not None:
            if not isinstance(payload["client_key"], str):
                raise InputError("'client_key' must be a string")
            return payload["client_key"] or None
        return None

    async def predict_with(served: Served, x: np.ndarray) -> np.ndarray:
        """The one prediction path of every endpoint: the model's batched predict, off the event loop."""
        if len(x) <= _INLINE_CONTEXTS:  # a few contexts cost less than the hop to a worker thread
            pred = served.model.predict(x)
        else:
            pred = await run_in_threadpool(served.model.predict, x)
        if not np.isfinite(pred).all():
            raise ValueError("model produced non-finite predictions")
        metrics.contexts.labels(served.version_label).inc(len(pred))
        if window is not None:
            window.add(x)
        return pred

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        cur = holder.current
        if cur is None:
            return JSONResponse({"ready": False, "detail": holder.last_error or "model not loaded yet"}, status_code=503)
        return JSONResponse({"ready": True, "name": cur.model.name, "version": cur.model.version})

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized(request)
        online = feedback.online()
        serving = []
        for served, share in holder.serving():
            entry = served.describe(share)
            entry["online_cosine"] = online.get(served.version_label)
            serving.append(entry)
        return JSONResponse({"serving": serving, "online_cosine": online, **holder.status()})

    @app.get("/v1/rollout/stats")
    async def rollout_stats(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized(request)
        snap = live.snapshot()
        snap["shares"] = {served.version_label: share for served, share in holder.serving()}
        return JSONResponse(snap)

    async def routed(request: Request) -> tuple[Any, Optional[Served], Optional[Response]]:
        """(payload, the model version that answers it, None), or (None, None, the 4xx/503 to send)."""
        if not authorized(request):
            return None, None, unauthorized(request)
        if holder.current is None:
            return None, None, _error(request, 503, "unavailable", holder.last_error or "model not loaded yet")
        try:
            payload = _parse_json(await request.body())
            key = client_key(request, payload)
        except InputError as exc:
            return None, None, _error(request, exc.status, "validation", str(exc))
        served = holder.route(key)  # read once: a swap during this request does not affect it
        request.state.lvm_version = served.version_label
        return payload, served, None

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        payload, served, refused = await routed(request)
        if refused is not None:
            return refused
        try:
            x = validate_contexts(payload, served.model, settings)
        except InputError as exc:
            return _error(request, exc.status, "validation", str(exc))
        try:
            pred = await predict_with(served, x)
        except Exception:
            _log.exception("prediction failed on %s", served.model.describe())
            return _error(request, 500, "internal", "prediction failed (logged on the server)")
        ids = feedback.put(served.version_label, pred)
        return _json({"predictions": np.ascontiguousarray(pred, dtype=np.float32), "model": served.model.name, "version": served.model.version,
                             "prediction_ids": ids})

    @app.post("/v1/predict/text")
    async def predict_text(request: Request) -> Response:
        payload, served, refused = await routed(request)
        if refused is not None:
            return refused
        try:
            context, k = validate_texts(payload, served.model, settings)
        except InputError as exc:
            return _error(request, exc.status, "validation", str(exc))
        try:
            index = await run_in_threadpool(texts.index_for, served.model)
            x = await run_in_threadpool(index.encoder.encode, context)
        except TextUnavailable as exc:
            return _error(request, exc.status, "unavailable", str(exc))
        try:
            pred = await predict_with(served, x[None, :, :].astype(np.float32))
            hits = await run_in_threadpool(index.neighbours, pred, k, context)
        except Exception:
            _log.exception("text prediction failed on %s", served.model.describe())
            return _error(request, 500, "internal", "prediction failed (logged on the server)")
        [pid] = feedback.put(served.version_label, pred)
        return JSONResponse({"prediction": pred[0].tolist(), "prediction_id": pid, "neighbors": hits[0],
                             "model": served.model.name, "version": served.model.version,
                             "dataset": Path(index.dataset).name})

    @app.post("/v1/feedback")
    async def give_feedback(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized(request)
        try:
            payload = _parse_json(await request.body())
            if not isinstance(payload, dict):
                raise InputError("body must be a JSON object with 'prediction_id' and 'target'", 400)
            pid = payload.get("prediction_id")
            if not isinstance(pid, str) or not pid:
                raise InputError("'prediction_id' must be a non-empty string from a /v1/predict answer")
            if "target" not in payload:
                raise InputError("missing field 'target' (the true next chunk's vector)")
            target = _as_array(payload["target"], "'target'", 1)
            _check_vectors(target, "'target'", settings.unit_norm_tol)
        except InputError as exc:
            return _error(request, exc.status, "validation", str(exc))
        outcome, item = feedback.take(pid, target.shape[0])
        if item is None:
            return _error(request, 404, "not_found", f"unknown prediction_id {pid!r} (never issued, already "
                          f"answered, or older than the last {feedback.capacity} predictions)")
        version, pred = item
        request.state.lvm_version = version
        if outcome == "dim":
            return _error(request, 422, "validation", f"'target' has dim {target.shape[0]}, the prediction has dim "
                          f"{pred.shape[0]}")
        cos = float(np.dot(pred.astype(np.float64), target.astype(np.float64))
                    / (np.linalg.norm(pred) * np.linalg.norm(target)))
        mean = feedback.record(version, cos)
        live.record_cosine(version, cos)
        metrics.online_cosine.labels(version).observe(cos)
        metrics.online_cosine_mean.labels(version).set(mean)
        return JSONResponse({"prediction_id": pid, "version": int(version) if version.isdigit() else version,
                             "cosine": cos, "online_cosine": mean})

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_Observe, metrics=metrics, holder=holder, live=live)  # outermost: sees the body limit's 413s too
    return app
