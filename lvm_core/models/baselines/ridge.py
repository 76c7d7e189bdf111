"""`RidgeBaseline`: ridge regression from the flattened context to the residual of the recency-weighted mean
(target − recency mean), alpha chosen on held-out articles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg

from lvm_core.data.windows import SequenceLike, check_windows, iter_gathered
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.baselines.base import DEFAULT_BATCH_SIZE, SavedBaseline, check_ctx
from lvm_core.models.baselines.recency import RecencyWeightedMean


class _PrimalStats:
    """Additive sufficient statistics of a ridge problem: X^T X, X^T Y, column sums, count."""

    def __init__(self, p: int, d: int):
        self.xtx = np.zeros((p, p), dtype=np.float64)
        self.xty = np.zeros((p, d), dtype=np.float64)
        self.sx = np.zeros(p, dtype=np.float64)
        self.sy = np.zeros(d, dtype=np.float64)
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        self.xtx += x64.T @ x64
        self.xty += x64.T @ y64
        self.sx += x64.sum(axis=0)
        self.sy += y64.sum(axis=0)
        self.n += x.shape[0]

    def merged(self, other: _PrimalStats) -> _PrimalStats:
        out = _PrimalStats(self.sx.shape[0], self.sy.shape[0])
        out.xtx, out.xty = self.xtx + other.xtx, self.xty + other.xty
        out.sx, out.sy, out.n = self.sx + other.sx, self.sy + other.sy, self.n + other.n
        return out

    def centred(self, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(C, B, mean_x, mean_y) with C = Xc^T Xc and B = Xc^T Yc."""
        if not fit_intercept:
            return self.xtx, self.xty, np.zeros_like(self.sx), np.zeros_like(self.sy)
        mx, my = self.sx / self.n, self.sy / self.n
        return self.xtx - self.n * np.outer(mx, mx), self.xty - self.n * np.outer(mx, my), mx, my


class RidgeBaseline(SavedBaseline):
    """Ridge regression from the flattened context (N·D features) to the residual of the recency-weighted
    mean: prediction = L2norm(Σ_j w_j·ctx_j + ridge(ctx)), w the `RecencyWeightedMean` weights.

    Shrinking the coefficients therefore shrinks toward the recency-weighted mean (the best trivial
    baseline), not toward the average target, so a strong alpha gives that baseline back (the intercept is
    the mean train residual). `anchor_weights` reuses an already fitted recency mean; None fits one on the
    same windows. Files saved before the anchor load with a zero anchor, as they were fitted.

    `alpha=None` (default) picks alpha from `alphas` by mean cosine on a held-out slice of the training
    windows — whole articles when `seqs.article_ids` exists (windows of one article overlap, so a random
    window split would favour too little regularisation), else the last `holdout_fraction` of windows —
    taking the strongest alpha within one per-article standard error of the best, then refits on all
    training windows. A float fixes alpha. With more windows than features the primal
    statistics X^T X / X^T Y are accumulated batch by batch; otherwise the (smaller) dual is solved.
    """

    name = "ridge"

    def __init__(
        self,
        alpha: float | None = None,
        alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0),
        holdout_fraction: float = 0.1,
        fit_intercept: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        max_holdout_windows: int = 20_000,
        anchor_weights: np.ndarray | None = None,
    ):
        if alpha is not None and alpha < 0:
            raise ValueError(f"ridge alpha must be >= 0, got {alpha}")
        if not alphas or min(alphas) < 0:
            raise ValueError(f"ridge alphas must be a non-empty list of values >= 0, got {alphas}")
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"ridge holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.alpha = alpha
        self.alphas = tuple(float(a) for a in alphas)
        self.holdout_fraction = holdout_fraction
        self.fit_intercept = fit_intercept
        self.batch_size = batch_size
        self.seed = seed
        self.max_holdout_windows = max_holdout_windows
        self.anchor_weights = None if anchor_weights is None else np.asarray(anchor_weights, dtype=np.float32)
        self.coef: np.ndarray | None = None  # (N*D, D)
        self.intercept: np.ndarray | None = None  # (D,)
        self.context_len: int | None = None
        self.dim: int | None = None
        self.chosen_alpha: float | None = None
        self.holdout_scores: dict[str, float] = {}
        self.solver: str = ""

    # -- fitting --

    def _holdout_mask(self, seqs: SequenceLike, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        article_ids = getattr(seqs, "article_ids", None)
        if article_ids is not None and len(article_ids) == n:
            ids = np.asarray(article_ids)
            uniq = np.unique(ids)
            if uniq.shape[0] >= 2:
                rng = np.random.default_rng(self.seed)
                k = min(max(1, int(round(self.holdout_fraction * uniq.shape[0]))), uniq.shape[0] - 1)
                held = rng.choice(uniq, size=k, replace=False)
                return np.isin(ids, held)
        k = int(round(self.holdout_fraction * n))
        if 0 < k < n:
            mask[n - k :] = True
        return mask

    @staticmethod
    def _groups(seqs: SequenceLike, idx: np.ndarray) -> np.ndarray:
        """Article of each scored window (each window its own group when articles are not known)."""
        article_ids = getattr(seqs, "article_ids", None)
        if article_ids is not None and len(article_ids) > int(idx.max(initial=-1)):
            return np.asarray(np.asarray(article_ids)[idx])
        return np.arange(idx.size)

    def _one_se_choice(self, cosines: np.ndarray, groups: np.ndarray) -> int:
        """The strongest alpha whose held-out cosine is within one standard error of the best one's.

        The standard error is that of the paired per-article difference to the best alpha (the
        one-standard-error rule, by article): on few held-out articles, differences smaller than that are
        noise, and the stronger shrinkage — toward the recency-weighted mean — is the safer choice.
        """
        scores = cosines.mean(axis=0)
        best = int(np.argmax(scores))
        uniq, inverse = np.unique(groups, return_inverse=True)
        if uniq.size < 2:
            return best
        per_article = np.zeros((uniq.size, cosines.shape[1]))
        np.add.at(per_article, inverse, cosines)
        per_article /= np.bincount(inverse)[:, None]
        diff = per_article - per_article[:, [best]]
        se = diff.std(axis=0, ddof=1) / np.sqrt(uniq.size)
        ok = [i for i in range(len(self.alphas)) if scores[i] >= scores[best] - se[i]]
        return max(ok, key=lambda i: self.alphas[i])

    def _solve(self, x_or_stats: Any, y: np.ndarray | None, alphas: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ridge solutions (W, b) for each alpha, from primal stats or from materialised (X, Y)."""
        out = []
        if isinstance(x_or_stats, _PrimalStats):
            c, b, mx, my = x_or_stats.centred(self.fit_intercept)
            p = c.shape[0]
            if len(alphas) == 1:
                w = scipy.linalg.solve(c + alphas[0] * np.eye(p), b, assume_a="pos")
                return [(w, my - mx @ w)]
            lam, v = np.linalg.eigh(c)
            vtb = v.T @ b
            for alpha in alphas:
                w = v @ (vtb / np.maximum(lam + alpha, 1e-12)[:, None])
                out.append((w, my - mx @ w))
            return out
        x = np.asarray(x_or_stats, dtype=np.float64)
        y64 = np.asarray(y, dtype=np.float64)
        mx = x.mean(axis=0) if self.fit_intercept else np.zeros(x.shape[1])
        my = y64.mean(axis=0) if self.fit_intercept else np.zeros(y64.shape[1])
        xc, yc = x - mx, y64 - my
        mu, u = np.linalg.eigh(xc @ xc.T)
        uty = u.T @ yc
        for alpha in alphas:
            w = xc.T @ (u @ (uty / np.maximum(mu + alpha, 1e-12)[:, None]))
            out.append((w, my - mx @ w))
        return out

    def _gather(self, vectors: np.ndarray, windows: Any, idx: np.ndarray, primal: bool) -> Any:
        p, d = windows.ctx * vectors.shape[1], vectors.shape[1]
        if primal:
            stats = _PrimalStats(p, d)
            for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, idx):
                stats.add(ctx.reshape(ctx.shape[0], -1), self._residual_target(ctx, tgt))
            return stats, None
        xs, ys = [], []
        for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, idx):
            xs.append(ctx.reshape(ctx.shape[0], -1))
            ys.append(self._residual_target(ctx, tgt))
        return np.concatenate(xs), np.concatenate(ys)

    def _anchor(self, ctx: np.ndarray) -> np.ndarray:
        """The recency-weighted mean of each context, (B, D) (zeros for a file saved before the anchor)."""
        if self.anchor_weights is None:
            return np.zeros((ctx.shape[0], ctx.shape[2]), dtype=np.float32)
        return np.asarray(np.einsum("bjd,j->bd", ctx, self.anchor_weights), dtype=np.float32)

    def _residual_target(self, ctx: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        return np.asarray(tgt - self._anchor(ctx))

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> RidgeBaseline:
        windows = check_windows(seqs, vectors, what="seqs", allow_empty=False)
        n, slots = windows.context_rows.shape
        d = vectors.shape[1]
        p = slots * d
        self.context_len, self.dim = slots, d
        if self.anchor_weights is None:
            weights = RecencyWeightedMean(batch_size=self.batch_size, seed=self.seed).fit(vectors, seqs).weights
            self.anchor_weights = np.asarray(weights, dtype=np.float32)
        elif self.anchor_weights.shape != (slots,):
            raise ValueError(f"ridge anchor_weights must have one weight per context slot ({slots}), "
                             f"got shape {self.anchor_weights.shape}")
        all_idx = np.arange(n)
        alpha = self.alpha
        self.holdout_scores = {}
        if alpha is None:
            held = self._holdout_mask(seqs, n)
            fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
            if fit_idx.size == 0 or held_idx.size == 0:
                alpha = 1.0  # too few windows to hold any out
            else:
                primal = fit_idx.size > p
                fit_x, fit_y = self._gather(vectors, windows, fit_idx, primal)
                solutions = self._solve(fit_x, fit_y, self.alphas)
                score_idx = held_idx
                if score_idx.size > self.max_holdout_windows:
                    rng = np.random.default_rng(self.seed)
                    score_idx = np.sort(rng.choice(held_idx, self.max_holdout_windows, replace=False))
                parts = []
                for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, score_idx):
                    x = ctx.reshape(ctx.shape[0], -1).astype(np.float64)
                    t, base = l2_normalize(tgt), self._anchor(ctx)
                    parts.append(np.stack([(l2_normalize(base + x @ w + b) * t).sum(axis=1) for w, b in solutions], 1))
                cosines = np.concatenate(parts)  # (windows, alphas)
                self.holdout_scores = {repr(a): float(s) for a, s in zip(self.alphas, cosines.mean(axis=0))}
                alpha = self.alphas[self._one_se_choice(cosines, self._groups(seqs, score_idx))]
                if primal and all_idx.size > p:
                    # Reuse the fit-part statistics: add only the held-out windows.
                    held_stats, _ = self._gather(vectors, windows, held_idx, True)
                    (w, b), = self._solve(fit_x.merged(held_stats), None, [alpha])
                    self._set_solution(w, b, alpha, "primal")
                    return self
        primal = n > p
        x, y = self._gather(vectors, windows, all_idx, primal)
        (w, b), = self._solve(x, y, [alpha])
        self._set_solution(w, b, alpha, "primal" if primal else "dual")
        return self

    def _set_solution(self, w: np.ndarray, b: np.ndarray, alpha: float, solver: str) -> None:
        self.coef = w.astype(np.float32)
        self.intercept = np.asarray(b, dtype=np.float32)
        self.chosen_alpha = float(alpha)
        self.solver = solver

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        if self.coef is None or self.intercept is None:
            raise RuntimeError(f"{self.name} is not fitted; call fit(vectors, seqs) first")
        ctx = check_ctx(ctx, self.name, self.context_len, self.dim)
        return l2_normalize(self._anchor(ctx) + ctx.reshape(ctx.shape[0], -1) @ self.coef + self.intercept)

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.coef is None or self.intercept is None:
            raise RuntimeError(f"{self.name} is not fitted; nothing to save")
        arrays = {"coef": self.coef, "intercept": self.intercept}
        if self.anchor_weights is not None:
            arrays["anchor_weights"] = self.anchor_weights
        return arrays

    def _meta(self) -> dict[str, Any]:
        return {
            "alpha": self.chosen_alpha,
            "alphas": list(self.alphas),
            "holdout_scores": self.holdout_scores,
            "fit_intercept": self.fit_intercept,
            "context_len": self.context_len,
            "dim": self.dim,
            "solver": self.solver,
            "seed": self.seed,
        }

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> RidgeBaseline:
        obj = cls(alpha=meta.get("alpha"), fit_intercept=bool(meta.get("fit_intercept", True)), seed=int(meta.get("seed", 0)))
        obj.coef = np.asarray(arrays["coef"], dtype=np.float32)
        obj.intercept = np.asarray(arrays["intercept"], dtype=np.float32)
        if "anchor_weights" in arrays:  # absent from files saved before the anchor: no anchor, as fitted
            obj.anchor_weights = np.asarray(arrays["anchor_weights"], dtype=np.float32)
        obj.chosen_alpha = meta.get("alpha")
        obj.holdout_scores = dict(meta.get("holdout_scores") or {})
        obj.context_len = meta.get("context_len")
        obj.dim = meta.get("dim")
        obj.solver = str(meta.get("solver", ""))
        return obj
