"""Request bodies in, checked arrays out: every 4xx the service gives for bad input is raised here.

Bodies are JSON or raw little-endian float32 (`application/octet-stream`, contexts only), never unpickled or
evaluated; each check names what was wrong in the message the client gets as `detail`. Anything a body can
make the parser or numpy raise is a 4xx here, never a 500: a malformed body is the client's error and must
not count toward the service's error rate.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from lvm_core.contracts.errors import UserError
from lvm_core.io.vectors import row_norms
from lvm_core.serving.settings import ServeSettings

BINARY_TYPE = "application/octet-stream"
_NUMBER_TYPES = {float, int}


class InputError(UserError, ValueError):
    """Bad client input: answered with `status` and the message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> Any:
    """orjson for speed; the standard parser only for what orjson refuses but JSON writers emit (NaN literals,
    integers past 64 bits), so such input gets its specific 4xx. Every failure, including the standard parser's
    own limits (digits of an integer, nesting depth), is a 400."""
    if not body:
        raise InputError("empty body: send a JSON object", 400)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # the standard parser would recurse until RecursionError
            raise InputError(f"body is not valid JSON: nested too deeply ({exc})", 400) from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise InputError(f"body is not valid JSON: {str(exc)[:200]}", 400) from None


def as_array(value: Any, what: str, ndim: int) -> np.ndarray:
    """A float32 array of `ndim` dimensions; a 4xx naming the problem otherwise.

    The common case (a rectangular list of floats) converts directly; only a failure pays for the slower
    checks that say what was wrong.
    """
    if isinstance(value, list):
        try:
            with np.errstate(all="ignore"):
                arr = np.array(value, dtype=np.float32)
            if arr.ndim == ndim and _only_numbers(value, ndim):
                return arr
        except (ValueError, TypeError, OverflowError, RecursionError):
            pass
    try:
        with np.errstate(all="ignore"):
            arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError(f"{what} must be a rectangular array of numbers (rows of unequal length?)") from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must contain only numbers (got {arr.dtype.kind!r}-typed values)")
    if arr.ndim != ndim:
        raise InputError(f"{what} must be a {ndim}-d array, got {arr.ndim}-d with shape {list(arr.shape)}")
    with np.errstate(all="ignore"):
        return arr.astype(np.float32)


def _only_numbers(value: list[Any], ndim: int) -> bool:
    """False when the first row holds what float32 conversion accepts but JSON numbers are not ("1.5", true):
    such a body then takes the slow path, which names the problem. A cheap spot check, not a full scan."""
    row: Any = value
    for _ in range(ndim - 1):
        row = row[0] if row else []
    return isinstance(row, list) and set(map(type, row)) <= _NUMBER_TYPES


def check_vectors(x: np.ndarray, what: str, tol: float) -> None:
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


def _check_shape(x: np.ndarray, model: Any) -> None:
    n, c, d = x.shape
    if c != model.context_len or d != model.dim:
        raise InputError(f"'contexts' has shape [{n}, {c}, {d}] but model {model.name} v{model.version} expects "
                         f"[n, {model.context_len}, {model.dim}] (ctx={model.context_len} chunk vectors of "
                         f"dim {model.dim} from its encoder)")


def _check_batch(n: int, settings: ServeSettings) -> None:
    if not n:
        raise InputError("empty batch: 'contexts' has no contexts")
    if n > settings.max_batch:
        raise InputError(f"batch of {n} contexts is over the limit of {settings.max_batch}", 413)


def validate_contexts(payload: Any, model: Any, settings: ServeSettings) -> np.ndarray:
    """(n, ctx, D) float32 unit vectors of a JSON /v1/predict body."""
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object with a 'contexts' field", 400)
    if "contexts" not in payload:
        raise InputError("missing field 'contexts' (a list of n contexts, each ctx vectors of D floats)")
    ctxs = payload["contexts"]
    if not isinstance(ctxs, list):
        raise InputError("'contexts' must be a list of contexts")
    _check_batch(len(ctxs), settings)
    x = as_array(ctxs, "'contexts'", 3)
    _check_shape(x, model)
    check_vectors(x, "'contexts'", settings.unit_norm_tol)
    return x


def binary_contexts(body: bytes, model: Any, settings: ServeSettings) -> np.ndarray:
    """(n, ctx, D) float32 unit vectors of an `application/octet-stream` /v1/predict body: n×ctx×D
    little-endian float32 values, row-major; n follows from the length (a quarter of the JSON's bytes)."""
    per = 4 * model.context_len * model.dim
    if not body:
        raise InputError("empty batch: the body has no contexts")
    if len(body) % per:
        raise InputError(f"binary body of {len(body)} bytes is not a whole number of contexts: model {model.name} "
                         f"v{model.version} reads ctx={model.context_len} × dim={model.dim} float32 values "
                         f"({per} bytes) per context")
    _check_batch(len(body) // per, settings)
    x = np.frombuffer(body, dtype="<f4").reshape(-1, model.context_len, model.dim).astype(np.float32)
    check_vectors(x, "'contexts'", settings.unit_norm_tol)
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


def validate_feedback(payload: Any, settings: ServeSettings) -> tuple[str, np.ndarray]:
    """(prediction id, target vector) of a /v1/feedback body."""
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object with 'prediction_id' and 'target'", 400)
    pid = payload.get("prediction_id")
    if not isinstance(pid, str) or not pid:
        raise InputError("'prediction_id' must be a non-empty string from a /v1/predict answer")
    if "target" not in payload:
        raise InputError("missing field 'target' (the true next chunk's vector)")
    target = as_array(payload["target"], "'target'", 1)
    check_vectors(target, "'target'", settings.unit_norm_tol)
    return pid, target


def body_client_key(header_key: str | None, payload: Any) -> str | None:
    """`X-Client-Key` header, else the body's `client_key` (a string); None routes at random."""
    if header_key:
        return header_key
    if isinstance(payload, dict) and payload.get("client_key") is not None:
        if not isinstance(payload["client_key"], str):
            raise InputError("'client_key' must be a string")
        return payload["client_key"] or None
    return None
