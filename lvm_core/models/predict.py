"""The one batched prediction path: any predictor over windows or raw contexts, in bounded batches.

A predictor is a torch module (``(B, N, D)`` tensor in, ``(B, D)`` out), a loaded model or fitted
baseline (an object with ``.predict(ctx)``), or a plain callable ``predict(ctx (B, N, D) float32) ->
(B, D)``. Training (validation cosine), the baselines, evaluation, architecture comparison and the model
wrapper behind the service all predict through here, so every number comes from the same batching,
the same gathering (:mod:`lvm_core.data.windows`) and the same unit-normalisation
(:mod:`lvm_core.io.vectors`). Only one ``(batch_size, N, D)`` context slab exists at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lvm_core.contracts.errors import UserError
from lvm_core.data.windows import SequenceLike, check_windows, gather_rows, iter_gathered
from lvm_core.io.vectors import l2_normalize

Predictor = Callable[[np.ndarray], np.ndarray]
DEFAULT_BATCH_SIZE = 1024


class PredictionError(UserError, ValueError):
    """A predictor is not usable, or returned predictions of the wrong shape or with NaN/inf."""


class ModulePredictor:
    """A torch module as a numpy predictor: eval mode and no autograd during the call, inputs moved to the
    module's device; the module's train/eval mode is restored afterwards (validation during training)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, ctx: np.ndarray) -> np.ndarray:
        module = self.module
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = module.training
        if was_training:  # eval()/train() walk every submodule: a served model, already in eval, skips both
            module.eval()
        try:
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(ctx, dtype=np.float32)).to(device)
                return cast(np.ndarray, module(x).cpu().numpy())
        finally:
            if was_training:
                module.train(True)

    predict = __call__


def as_predict_fn(predictor: Any, name: str = "predictor") -> Predictor:
    """The numpy callable behind a torch module, an object with ``.predict`` or a callable."""
    if isinstance(predictor, nn.Module):
        return ModulePredictor(predictor)
    if callable(predictor):
        return cast(Predictor, predictor)
    fn = getattr(predictor, "predict", None)
    if callable(fn):
        return cast(Predictor, fn)
    raise PredictionError(
        f"{name}: expected a torch module, a callable predict(ctx) or an object with .predict, "
        f"got {type(predictor).__name__}"
    )


def check_predictions(pred: Any, n: int, dim: int, what: str = "predictor output", finite: bool = True) -> np.ndarray:
    """``pred`` as float32 ``(n, dim)``; a wrong shape (and, with ``finite``, NaN/inf) is an error."""
    pred = np.asarray(pred, dtype=np.float32)
    if pred.shape != (n, dim):
        raise PredictionError(f"{what}: shape {pred.shape}, expected ({n}, {dim})")
    if finite and not np.isfinite(pred).all():
        raise PredictionError(f"{what}: contains NaN or inf")
    return cast(np.ndarray, pred)


def _run(fn: Predictor, ctx: np.ndarray, finite: bool) -> np.ndarray:
    return check_predictions(fn(ctx), ctx.shape[0], ctx.shape[2], finite=finite)


def predict_contexts(
    predictor: Any, contexts: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, *, unit: bool = False,
    finite: bool = False,
) -> np.ndarray:
    """Predictions ``(n, D)`` float32 for raw contexts ``(n, N, D)``, ``batch_size`` contexts per call."""
    fn = as_predict_fn(predictor)
    x = np.asarray(contexts, dtype=np.float32)
    if x.ndim != 3:
        raise PredictionError(f"contexts must have shape (n, context_len, dim), got {x.shape}")
    out = np.empty((x.shape[0], x.shape[2]), dtype=np.float32)
    for s in range(0, x.shape[0], batch_size):
        out[s : s + batch_size] = _run(fn, x[s : s + batch_size], finite)
    return l2_normalize(out) if unit else out


def predict_rows(
    predictor: Any, vectors: np.ndarray, context_rows: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, *,
    unit: bool = False, finite: bool = False,
) -> np.ndarray:
    """Predictions ``(n, D)`` float32 for contexts given as row indices ``(n, N)`` into ``vectors`` (intact
    windows or altered ones, e.g. the ablations); ``unit`` scales the rows to unit length, ``finite``
    rejects NaN/inf."""
    fn = as_predict_fn(predictor)
    context_rows = np.asarray(context_rows)
    n, dim = context_rows.shape[0], vectors.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, batch_size):
        out[s : s + batch_size] = _run(fn, gather_rows(vectors, context_rows[s : s + batch_size]), finite)
    return l2_normalize(out) if unit else out


def predict_windows(
    predictor: Any, vectors: np.ndarray, seqs: SequenceLike, batch_size: int = DEFAULT_BATCH_SIZE, *,
    unit: bool = False, finite: bool = False,
) -> np.ndarray:
    """Predictions ``(n, D)`` float32 for every window of ``seqs`` (intact context), rows checked first."""
    rows = check_windows(seqs, vectors).context_rows
    return predict_rows(predictor, vectors, rows, batch_size, unit=unit, finite=finite)


def iter_predictions(
    predictor: Any, vectors: np.ndarray, seqs: SequenceLike, batch_size: int = DEFAULT_BATCH_SIZE,
    index: np.ndarray | None = None, *, what: str = "seqs", allow_empty: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(prediction (b, D), target (b, D))`` float32 batches over the windows of ``seqs`` (or ``index``),
    checked against ``vectors`` first (:func:`check_windows`)."""
    fn = as_predict_fn(predictor)
    windows = check_windows(seqs, vectors, what=what, allow_empty=allow_empty)
    for ctx, tgt in iter_gathered(vectors, windows, batch_size, index):
        yield _run(fn, ctx, finite=False), tgt


def mean_cosine(predictor: Any, vectors: np.ndarray, seqs: SequenceLike, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Mean cos(prediction, target) over the windows of ``seqs`` (which must hold at least one)."""
    total, n = 0.0, 0
    for pred, tgt in iter_predictions(predictor, vectors, seqs, batch_size, allow_empty=False):
        total += float((l2_normalize(pred) * l2_normalize(tgt)).sum(dtype=np.float64))
        n += pred.shape[0]
    return total / n
