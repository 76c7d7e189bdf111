"""Trivial next-chunk predictors that every model is compared against, on the same sequences.

All share the `Baseline` interface: `fit(vectors, seqs)`, `predict(ctx (B, N, D)) -> (B, D)` unit rows,
`save(path)` to a small `.npz` (no pickle) and `load_baseline(path)`. Sequences are row-index windows
(`lvm_core.data.windows.SequenceSet`, checked by its `check_windows`); fitting gathers vectors in batches
(`iter_gathered`) so `(n, N, D)` is never built for all windows at once. Scoring a baseline on windows is
the models' own path, `lvm_core.models.predict`.

- `CopyLast`: ctx[-1].
- `ContextMean`: mean of the context.
- `RecencyWeightedMean`: one weight per context slot, fitted on train to maximise the mean cosine
  (least-squares start, then L-BFGS on the exact mean cosine using per-window slot Gram matrices).
- `RidgeBaseline`: ridge regression from the flattened context to the target, alpha chosen on a held-out
  slice of train articles (or fixed), solved in closed form in the primal or the dual, whichever is smaller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.linalg
import scipy.optimize

from lvm_core.data.windows import SequenceLike, check_windows, iter_gathered
from lvm_core.io.storage import atomic_path
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.predict import mean_cosine as mean_cosine  # scoring is the one prediction path's

DEFAULT_BATCH_SIZE = 4096
BASELINE_FILE_SUFFIX = ".npz"


class BaselineFileError(ValueError):
    """A saved baseline file is missing, unreadable or names an unknown baseline."""


def _check_ctx(ctx: np.ndarray, name: str, context_len: int | None = None, dim: int | None = None) -> np.ndarray:
    ctx = np.asarray(ctx)
    if ctx.ndim != 3:
        raise ValueError(f"{name}.predict expects ctx of shape (B, context_len, dim), got {ctx.shape}")
    if context_len is not None and ctx.shape[1] != context_len:
        raise ValueError(f"{name} was fitted with context_len={context_len}, got ctx shape {ctx.shape}")
    if dim is not None and ctx.shape[2] != dim:
        raise ValueError(f"{name} was fitted with dim={dim}, got ctx shape {ctx.shape}")
    return ctx.astype(np.float32, copy=False)


# --- interface ---------------------------------------------------------------------------------------


@runtime_checkable
class Baseline(Protocol):
    """A fitted trivial predictor with the models' interface."""

    name: str

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> Baseline: ...

    def predict(self, ctx: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> Path: ...


class _SavedBaseline:
    """`.npz` persistence: a `name`, a JSON `meta` string and plain numeric arrays (no pickle)."""

    name: ClassVar[str]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _meta(self) -> dict[str, Any]:
        return {}

    def save(self, path: Path) -> Path:
        """Write `path` (a `.npz`) atomically; returns the path."""
        path = Path(path)
        payload = {
            "name": np.array(self.name),
            "meta": np.array(json.dumps(self._meta())),
            **self._arrays(),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **payload)
        return path

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> _SavedBaseline:
        return cls()


class CopyLast(_SavedBaseline):
    """Predict the last context chunk: the "nothing changes" answer."""

    name = "copy_last"

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> CopyLast:
        check_windows(seqs, vectors, what="seqs", allow_empty=False)
        return self

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        ctx = _check_ctx(ctx, self.name)
        return l2_normalize(ctx[:, -1])


class ContextMean(_SavedBaseline):
    """Predict the (normalised) mean of the context: the "same topic" answer."""

    name = "context_mean"

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> ContextMean:
        check_windows(seqs, vectors, what="seqs", allow_empty=False)
        return self

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        ctx = _check_ctx(ctx, self.name)
        return l2_normalize(ctx.mean(axis=1))


class RecencyWeightedMean(_SavedBaseline):
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
        ctx = _check_ctx(ctx, self.name, context_len=self.weights.shape[0])
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


class RidgeBaseline(_SavedBaseline):
    """Ridge regression from the flattened context (N·D features) to the target vector; output normalised.

    `alpha=None` (default) picks alpha from `alphas` by mean cosine on a held-out slice of the training
    windows — whole articles when `seqs.article_ids` exists (windows of one article overlap, so a random
    window split would favour too little regularisation), else the last `holdout_fraction` of windows —
    then refits on all training windows. A float fixes alpha. With more windows than features the primal
    statistics X^T X / X^T Y are accumulated batch by batch; otherwise the (smaller) dual is solved.
    """

    name = "ridge"

    def __init__(
        self,
        alpha: float | None = None,
        alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        holdout_fraction: float = 0.1,
        fit_intercept: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        max_holdout_windows: int = 20_000,
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
                stats.add(ctx.reshape(ctx.shape[0], -1), tgt)
            return stats, None
        xs, ys = [], []
        for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, idx):
            xs.append(ctx.reshape(ctx.shape[0], -1))
            ys.append(tgt)
        return np.concatenate(xs), np.concatenate(ys)

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> RidgeBaseline:
        windows = check_windows(seqs, vectors, what="seqs", allow_empty=False)
        n, slots = windows.context_rows.shape
        d = vectors.shape[1]
        p = slots * d
        self.context_len, self.dim = slots, d
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
                sums = np.zeros(len(self.alphas))
                for ctx, tgt in iter_gathered(vectors, windows, self.batch_size, score_idx):
                    x = ctx.reshape(ctx.shape[0], -1).astype(np.float64)
                    t = l2_normalize(tgt)
                    for i, (w, b) in enumerate(solutions):
                        sums[i] += float((l2_normalize(x @ w + b) * t).sum())
                scores = sums / score_idx.size
                self.holdout_scores = {repr(a): float(s) for a, s in zip(self.alphas, scores)}
                alpha = self.alphas[int(np.argmax(scores))]
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
        ctx = _check_ctx(ctx, self.name, self.context_len, self.dim)
        return l2_normalize(ctx.reshape(ctx.shape[0], -1) @ self.coef + self.intercept)

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.coef is None or self.intercept is None:
            raise RuntimeError(f"{self.name} is not fitted; nothing to save")
        return {"coef": self.coef, "intercept": self.intercept}

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
        obj.chosen_alpha = meta.get("alpha")
        obj.holdout_scores = dict(meta.get("holdout_scores") or {})
        obj.context_len = meta.get("context_len")
        obj.dim = meta.get("dim")
        obj.solver = str(meta.get("solver", ""))
        return obj


BASELINE_CLASSES: dict[str, type[_SavedBaseline]] = {
    cls.name: cls for cls in (CopyLast, ContextMean, RecencyWeightedMean, RidgeBaseline)
}


# --- collection helpers ------------------------------------------------------------------------------


def fit_baselines(
    vectors: np.ndarray,
    train_seqs: SequenceLike,
    *,
    ridge_alpha: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> dict[str, Baseline]:
    """Fit all four trivial baselines on the training windows; keys are the baselines' names."""
    check_windows(train_seqs, vectors, what="train_seqs", allow_empty=False)
    baselines: list[Any] = [
        CopyLast(),
        ContextMean(),
        RecencyWeightedMean(batch_size=batch_size, seed=seed),
        RidgeBaseline(alpha=ridge_alpha, batch_size=batch_size, seed=seed),
    ]
    return {b.name: b.fit(vectors, train_seqs) for b in baselines}


def load_baseline(path: Path) -> Baseline:
    """Load a baseline written by `save` (`allow_pickle=False`)."""
    path = Path(path)
    if not path.is_file():
        raise BaselineFileError(f"{path}: no such baseline file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BaselineFileError(f"{path}: not a readable baseline .npz ({exc})") from exc
    if "name" not in arrays or "meta" not in arrays:
        raise BaselineFileError(f"{path}: missing 'name'/'meta' entries; not a saved baseline")
    name = str(arrays.pop("name"))
    meta = json.loads(str(arrays.pop("meta")))
    cls = BASELINE_CLASSES.get(name)
    if cls is None:
        raise BaselineFileError(f"{path}: unknown baseline {name!r}; known: {', '.join(BASELINE_CLASSES)}")
    return cls._from_saved(meta, arrays)  # type: ignore[return-value]


def save_baselines(baselines: dict[str, Baseline], directory: Path) -> dict[str, Path]:
    """Write each baseline to `<directory>/<name>.npz`; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {name: b.save(directory / f"{name}{BASELINE_FILE_SUFFIX}") for name, b in baselines.items()}
