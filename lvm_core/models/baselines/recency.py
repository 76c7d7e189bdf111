"""`RecencyWeightedMean`: one weight per context slot, fitted to maximise the exact mean train cosine."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.optimize

from lvm_core.data.windows import SequenceLike, check_windows, iter_gathered
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.baselines.base import DEFAULT_BATCH_SIZE, SavedBaseline, check_ctx


class RecencyWeightedMean(SavedBaseline):
    """Weighted mean of the context with one weight per slot, fitted to maximise mean train cosine.

    For a window with slot vectors c_j and target t, cos(sum_j w_j c_j, t) = (w·a) / sqrt(w^T G w) with
    a_j = c_j·t and G_jk = c_j·c_k, so the exact objective needs only N + N^2 numbers per window. Up to
    `max_fit_windows` windows (seeded sample) are used. Weights are reported scaled to sum 1.
    """

    name = "recency_weighted_mean"

    def __init__(self, max_fit_windows: int = 200_000, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0):
        self.max_fit_windows = max_fit_windows
        self.batch_size = batch_size
        self.seed = seed
        self.weights: np.ndarray | None = None
        self.train_cosine: float | None = None
        self.n_fit_windows: int = 0

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> RecencyWeightedMean:
        windows = check_windows(seqs, vectors, what="seqs", allow_empty=False)
        n, slots = windows.context_rows.shape
        index = None
        if n > self.max_fit_windows:
            rng = np.random.default_rng(self.seed)
            index = np.sort(rng.choice(n, size=self.max_fit_windows, replace=False))
        a_parts, g_parts = [], []
        for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, index):
            tgt = l2_normalize(tgt)
            a_parts.append(np.einsum("bjd,bd->bj", ctx, tgt, dtype=np.float64))
            g_parts.append(np.einsum("bjd,bkd->bjk", ctx, ctx, dtype=np.float64))
        a = np.concatenate(a_parts)
        g = np.concatenate(g_parts)
        self.n_fit_windows = int(a.shape[0])

        # Least-squares start: argmin_w sum ||sum_j w_j c_j - t||^2.
        g_sum = g.sum(axis=0)
        ridge = 1e-9 * np.trace(g_sum) / slots
        w0 = np.linalg.solve(g_sum + ridge * np.eye(slots), a.sum(axis=0))
        if not np.all(np.isfinite(w0)) or w0.sum() <= 0:
            w0 = np.full(slots, 1.0 / slots)

        def neg_mean_cos(w: np.ndarray) -> tuple[float, np.ndarray]:
            gw = g @ w  # (n, N)
            s2 = np.maximum(gw @ w, 1e-24)
            s = np.sqrt(s2)
            u = a @ w
            cos = u / s
            grad = (a / s[:, None] - (u / (s2 * s))[:, None] * gw).mean(axis=0)
            return -float(cos.mean()), -grad

        res = scipy.optimize.minimize(neg_mean_cos, w0, jac=True, method="L-BFGS-B")
        candidates = [(neg_mean_cos(w0)[0], w0), (float(res.fun), np.asarray(res.x))]
        best_val, w = min(candidates, key=lambda c: c[0])
        scale = w.sum() if w.sum() > 0 else np.linalg.norm(w)
        self.weights = (w / scale).astype(np.float64)
        self.train_cosine = -best_val
        return self

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError(f"{self.name} is not fitted; call fit(vectors, seqs) first")
        ctx = check_ctx(ctx, self.name, context_len=self.weights.shape[0])
        return l2_normalize(np.einsum("bjd,j->bd", ctx, self.weights.astype(np.float32)))

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.weights is None:
            raise RuntimeError(f"{self.name} is not fitted; nothing to save")
        return {"weights": self.weights}

    def _meta(self) -> dict[str, Any]:
        return {"train_cosine": self.train_cosine, "n_fit_windows": self.n_fit_windows, "seed": self.seed}

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> RecencyWeightedMean:
        obj = cls(seed=int(meta.get("seed", 0)))
        obj.weights = np.asarray(arrays["weights"], dtype=np.float64)
        obj.train_cosine = meta.get("train_cosine")
        obj.n_fit_windows = int(meta.get("n_fit_windows", 0))
        return obj
