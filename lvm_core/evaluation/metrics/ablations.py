"""Context ablations: which parts of the context does a predictor actually use?

The same windows with an altered context (shuffled, reversed, one slot replaced, all slots the last
chunk); the change of mean cosine to the target says whether order and earlier chunks matter at all.
"""

from __future__ import annotations

import numpy as np

from lvm_core.data.windows import SequenceLike
from lvm_core.evaluation.inputs import checked_predictions, predict_rows, windows_of
from lvm_core.evaluation.metrics.cosine import mean_or_nan, rowwise_cosine
from lvm_core.models.predict import Predictor

__all__ = ["ablation_contexts", "ablations"]


def ablation_contexts(seqs: SequenceLike, seed: int = 0) -> dict[str, np.ndarray]:
    """Altered context row matrices (same shape as context_rows) for each ablation.

    shuffled: a seeded random non-identity permutation per window; reversed; leave_one_out_pos{j}: slot
    j replaced by its neighbour (j-1, or 1 for j=0) so the length stays; repeat_padded: all slots ctx[-1].
    """
    w = windows_of(seqs)
    rows, ctx = w.context_rows, w.ctx
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((w.n, ctx)), axis=1)
    if ctx > 1:
        ident = (perm == np.arange(ctx)).all(axis=1)
        perm[ident] = np.roll(np.arange(ctx), 1)
    out["shuffled"] = np.take_along_axis(rows, perm, axis=1)
    out["reversed"] = rows[:, ::-1].copy()
    if ctx > 1:
        for j in range(ctx):
            alt = rows.copy()
            alt[:, j] = rows[:, j - 1] if j > 0 else rows[:, 1]
            out[f"leave_one_out_pos{j}"] = alt
    out["repeat_padded"] = np.repeat(rows[:, -1:], ctx, axis=1)
    return out


def ablations(
    predict: Predictor,
    vectors: np.ndarray,
    seqs: SequenceLike,
    seed: int = 0,
    *,
    base_pred: np.ndarray | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean cosine to the target with an altered context minus the mean cosine with the intact one.

    Keys: shuffled, reversed, leave_one_out (mean over positions), leave_one_out_pos{j}, repeat_padded.
    Each is in [-2, 2]; 0 means the predictor ignores that change, negative means the change hurts (the
    predictor uses what was altered). An order-blind predictor has shuffled = reversed = 0; a predictor
    that uses only ctx[-1] has repeat_padded = 0.
    """
    w = windows_of(seqs)
    tgt = vectors[w.target_rows]
    if base_pred is None:
        base_pred = predict_rows(predict, vectors, w.context_rows, batch_size)
    base = mean_or_nan(rowwise_cosine(checked_predictions(base_pred, w.n, vectors.shape[1]), tgt))
    out: dict[str, float] = {}
    loo = []
    for name, rows in ablation_contexts(w, seed).items():
        delta = mean_or_nan(rowwise_cosine(predict_rows(predict, vectors, rows, batch_size), tgt)) - base
        out[name] = delta
        if name.startswith("leave_one_out_pos"):
            loo.append(delta)
    out["leave_one_out"] = float(np.mean(loo)) if loo else 0.0
    return out
