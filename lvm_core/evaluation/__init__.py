"""Evaluation of next-chunk predictors: one function per metric, every predictor on the same windows.

A predictor is any callable ``predict(ctx (B, ctx, D) float32) -> (B, D)`` (the trained model wrapper
and the trivial baselines alike). Windows come from a sequence set: ``context_rows (n, ctx)``,
``target_rows (n,)``, ``article_ids (n,)``, ``target_chunk_index (n,)`` — row indices into the chunk
vector array, whose rows are sorted by article then chunk_index. Any object with those attributes works.

Numbers only mean something beside the baselines (DESIGN "Evaluation"), so `evaluate_predictors`
computes every metric for every predictor on identical windows and the report puts them side by side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lvm_core.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, ArticleBootstrap
from lvm_core.io.plain import to_plain
from lvm_core.contracts import DataContractError
from lvm_core.data.retrieval import TIE_EPS, ChunkBank, oracle_recall_at_k, unit_rows
from lvm_core.data.windows import SequenceLike, SequenceSet
from lvm_core.data.windows import check_windows as check_windows_against
from lvm_core.data.windows import data_direction as sequence_data_direction
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.predict import PredictionError, Predictor, as_predict_fn, check_predictions
from lvm_core.models.predict import predict_rows as predict_context_rows

#: Offsets after the target covered by the offset sweep (k = 1..OFFSET_AFTER).
OFFSET_AFTER = 3
#: Metrics where a lower value is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"median_rank"})
SUMMARY_METRICS = ("cosine", "margin", "r@5", "mrr", "contrastive_acc")
#: Metrics that are means over windows: each gets an article-bootstrap interval, and a model − baseline
#: delta with its interval (DESIGN "Evaluation": intervals).
INTERVAL_METRICS = (
    "cosine", "margin", "r@1", "r@5", "r@10", "mrr", "within_r@1", "within_r@5", "within_mrr", "contrastive_acc",
)
#: Split whose numbers are reported and gated: `test` where the evaluation has it, else `val` (older datasets).
REPORTING_SPLITS = ("test", "val")


def reporting_split(source: Any) -> str:
    """The split to report and gate: "test" when `source` has test windows, otherwise "val".

    `source` is an `EvaluationResult`, its `to_dict()`, a `metrics[predictor][split][metric]` dict or a
    sequence of split names. A test split listed with 0 windows does not count.
    """
    if isinstance(source, EvaluationResult):
        splits, metrics = source.splits, source.metrics
    elif isinstance(source, Mapping) and "splits" in source:
        splits, metrics = list(source["splits"]), source.get("metrics") or {}
    elif isinstance(source, Mapping):
        metrics = source
        splits = sorted({s for per_split in metrics.values() if isinstance(per_split, Mapping) for s in per_split})
    else:
        splits, metrics = list(source), {}

    def has_windows(split: str) -> bool:
        if split not in splits:
            return False
        counts = [m.get(split, {}).get("n_windows") for m in metrics.values() if isinstance(m, Mapping)]
        counts = [c for c in counts if c is not None]
        return not counts or any(int(c) > 0 for c in counts)

    return next((s for s in REPORTING_SPLITS if has_windows(s)), "val")


class EvaluationError(ValueError):
    """Bad input to an evaluation (misaligned arrays, windows crossing articles, bad predictor output)."""


def _windows(seqs: SequenceLike) -> SequenceSet:
    try:
        return SequenceSet.of(seqs)
    except DataContractError as exc:
        raise EvaluationError(str(exc)) from exc


def check_windows(seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray) -> SequenceSet:
    """Validate windows against the chunk table (`lvm_core.data.windows.check_windows`): rows in range, one
    article, consecutive chunk indices. A window crossing an article boundary, or a target that is not the
    chunk right after its context, would silently corrupt every metric (and the offset sweep's indexing)."""
    try:
        return check_windows_against(seqs, article_ids=article_ids, chunk_index=chunk_index)
    except DataContractError as exc:
        raise EvaluationError(str(exc)) from exc


_unit = l2_normalize


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", _unit(a), _unit(b)).astype(np.float64)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if np.size(x) else float("nan")


def _check_pred(pred: np.ndarray, n: int, dim: int, what: str = "pred") -> np.ndarray:
    try:
        return check_predictions(pred, n, dim, what)
    except PredictionError as exc:
        raise EvaluationError(str(exc)) from exc


def predict_rows(
    predict: Predictor, vectors: np.ndarray, context_rows: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Unit predictions (n, D) for windows given as row indices (`lvm_core.models.predict.predict_rows`)."""
    try:
        return predict_context_rows(predict, vectors, context_rows, batch_size, unit=True, finite=True)
    except PredictionError as exc:
        raise EvaluationError(str(exc)) from exc


# --- per-window metrics ----------------------------------------------------------------------------


def cosine_to_target(pred: np.ndarray, vectors: np.ndarray, seqs: SequenceLike) -> np.ndarray:
    """cos(pred, target) per window."""
    w = _windows(seqs)
    pred = _check_pred(pred, w.n, vectors.shape[1])
    return _rowwise_cos(pred, vectors[w.target_rows])


def margin_vs_last(pred: np.ndarray, vectors: np.ndarray, seqs: SequenceLike) -> np.ndarray:
    """cos(pred, target) - cos(pred, ctx[-1]) per window: > 0 means closer to the future than to the past."""
    w = _windows(seqs)
    pred = _check_pred(pred, w.n, vectors.shape[1])
    return _rowwise_cos(pred, vectors[w.target_rows]) - _rowwise_cos(pred, vectors[w.context_rows[:, -1]])


def offset_rows(
    seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row of the chunk at position target+k per window and whether it exists in the same article.

    k = 0 is the target, k = -1 is ctx[-1], k = -ctx is ctx[0]. Rows are sorted by article then
    chunk_index, so the candidate is row target+k; it counts only when that row belongs to the same
    article and has chunk_index = target_chunk_index + k.
    """
    w = _windows(seqs)
    n_rows = np.asarray(article_ids).shape[0]
    rows = w.target_rows + int(k)
    inside = (rows >= 0) & (rows < n_rows)
    safe = np.clip(rows, 0, n_rows - 1)
    valid = (
        inside
        & (np.asarray(article_ids)[safe] == w.article_ids)
        & (np.asarray(chunk_index)[safe] == w.target_chunk_index + int(k))
    )
    return safe, valid


def offset_sweep(
    pred: np.ndarray,
    vectors: np.ndarray,
    seqs: SequenceLike,
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    ctx: int | None = None,
    after: int = OFFSET_AFTER,
) -> dict[int, dict[str, float]]:
    """k -> {"cosine": mean cos(pred, chunk at target+k), "n": windows where that chunk exists}.

    k runs from -ctx (ctx[0]) to +after; k = 0 is the target, k = -1 is ctx[-1]. A good predictor
    peaks at k = 0; a copy-last-like one peaks at k = -1.
    """
    w = _windows(seqs)
    pred = _unit(_check_pred(pred, w.n, vectors.shape[1]))
    ctx = w.ctx if ctx is None else int(ctx)
    out: dict[int, dict[str, float]] = {}
    for k in range(-ctx, after + 1):
        rows, valid = offset_rows(w, article_ids, chunk_index, k)
        cos = np.einsum("ij,ij->i", pred[valid], _unit(vectors[rows[valid]])).astype(np.float64)
        out[k] = {"cosine": _mean(cos), "n": int(valid.sum())}
    return out


def _rank_summary(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


def retrieval_metrics(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Rank of the true target among ALL bank chunks, the window's own context rows excluded.

    Returns r@k for each k, mrr and median_rank. Ties are pessimistic; chunks with the target's text
    hash count as the target (see `ChunkBank.rank_of`).
    """
    ranks = retrieval_ranks(pred, bank, seqs)
    out = _rank_summary(ranks, ks)
    out["median_rank"] = float(np.median(ranks))
    return out


def retrieval_ranks(pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike) -> np.ndarray:
    """Per-window rank (1 = best) of the true target in the whole bank, context rows excluded."""
    w = _windows(seqs)
    pred = _check_pred(pred, w.n, bank.dim)
    return np.asarray(bank.rank_of(pred, w.target_rows, w.context_rows))


def within_article_metrics(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, ks: Sequence[int] = (1, 5), tie_eps: float = TIE_EPS
) -> dict[str, float]:
    """Rank of the true target among its own article's chunks minus the window's context rows.

    Harder than it sounds: neighbouring chunks of one article are the closest distractors.
    Same tie policy as `ChunkBank.rank_of` (pessimistic; same-text-hash chunks count as the target).
    """
    return _rank_summary(within_article_ranks(pred, bank, seqs, tie_eps), ks)


def within_article_ranks(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, tie_eps: float = TIE_EPS
) -> np.ndarray:
    """Per-window rank of the true target among its own article's chunks minus the context rows."""
    w = _windows(seqs)
    pred = _unit(_check_pred(pred, w.n, bank.dim))
    ranks = np.ones(w.n, dtype=np.int64)
    codes = bank.hash_codes
    for aid in np.unique(w.article_ids):
        win = np.flatnonzero(w.article_ids == aid)
        rows = bank.rows_of_article(int(aid))
        pos_t = np.searchsorted(rows, w.target_rows[win])
        if (
            rows.size == 0
            or (pos_t >= rows.size).any()
            or (rows[np.minimum(pos_t, rows.size - 1)] != w.target_rows[win]).any()
        ):
            raise EvaluationError(
                f"within_article_metrics: a target row of article {int(aid)} is not in the bank's article"
            )
        scores = pred[win] @ bank.vectors[rows].T
        true_s = scores[np.arange(win.size), pos_t]
        ahead = scores >= (true_s - np.float32(tie_eps))[:, None]
        if codes is not None:
            ahead &= codes[rows][None, :] != codes[w.target_rows[win]][:, None]
        ahead[np.arange(win.size), pos_t] = False
        ctx_rows = w.context_rows[win]
        pos_c = np.searchsorted(rows, ctx_rows)
        in_art = (pos_c < rows.size) & (rows[np.minimum(pos_c, rows.size - 1)] == ctx_rows)
        ii, jj = np.nonzero(in_art)
        ahead[ii, pos_c[ii, jj]] = False
        ranks[win] = 1 + ahead.sum(axis=1)
    return ranks


def contrastive_accuracy(
    pred: np.ndarray,
    targets: np.ndarray,
    *,
    max_negatives: int = 1024,
    seed: int = 0,
    target_keys: np.ndarray | None = None,
    tie_eps: float = TIE_EPS,
) -> float:
    """Mean over windows of `contrastive_shares` (NaN windows, those without negatives, left out)."""
    shares = contrastive_shares(
        pred, targets, max_negatives=max_negatives, seed=seed, target_keys=target_keys, tie_eps=tie_eps
    )
    return float(np.nanmean(shares)) if np.isfinite(shares).any() else float("nan")


def contrastive_shares(
    pred: np.ndarray,
    targets: np.ndarray,
    *,
    max_negatives: int = 1024,
    seed: int = 0,
    target_keys: np.ndarray | None = None,
    tie_eps: float = TIE_EPS,
) -> np.ndarray:
    """Per window: the share of OTHER targets farther from the prediction than the true one (NaN: none).

    As in Meta's Large Concept Model paper. All other targets are negatives when there are at most
    `max_negatives` of them; otherwise each window draws `max_negatives` (with replacement) from a
    seeded generator, so the number is reproducible. Negatives with the same `target_keys` entry (e.g.
    the same text hash) are skipped: they are the same text. "Farther" means a lower cosine by more
    than `tie_eps` (ties are not counted as farther).
    """
    p = _unit(np.asarray(pred, dtype=np.float32))
    t = _unit(np.asarray(targets, dtype=np.float32))
    if p.shape != t.shape or p.ndim != 2:
        raise EvaluationError(f"contrastive_accuracy: pred {p.shape} and targets {t.shape} must be equal (n, D)")
    n = p.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    keys = None
    if target_keys is not None:
        _, keys = np.unique(np.asarray(target_keys), return_inverse=True)
        keys = keys.reshape(-1)
        if keys.shape != (n,):
            raise EvaluationError(f"contrastive_accuracy: target_keys has {keys.shape[0]} entries for {n} windows")
    true_s = np.einsum("ij,ij->i", p, t)
    sampled = n - 1 > max_negatives
    if sampled:
        rng = np.random.default_rng(seed)
        neg = rng.integers(0, n - 1, size=(n, max_negatives))
        neg += neg >= np.arange(n)[:, None]  # skip the window's own target
    block = max(1, (1 << 22) // n)
    shares = np.full(n, np.nan)
    for s in range(0, n, block):
        e = min(n, s + block)
        scores = p[s:e] @ t.T
        idx = np.arange(s, e)
        if sampled:
            cols = neg[s:e]
            scores = np.take_along_axis(scores, cols, axis=1)
            valid = np.ones(cols.shape, dtype=bool)
        else:
            cols = np.broadcast_to(np.arange(n), scores.shape)
            valid = cols != idx[:, None]
        if keys is not None:
            valid &= keys[cols] != keys[idx][:, None]
        farther = (scores < (true_s[s:e] - np.float32(tie_eps))[:, None]) & valid
        n_valid = valid.sum(axis=1)
        ok = n_valid > 0
        shares[s:e][ok] = farther.sum(axis=1)[ok] / n_valid[ok]
    return shares


# --- context ablations and rollout -----------------------------------------------------------------


def ablation_contexts(seqs: SequenceLike, seed: int = 0) -> dict[str, np.ndarray]:
    """Altered context row matrices (same shape as context_rows) for each ablation.

    shuffled: a seeded random non-identity permutation per window; reversed; leave_one_out_pos{j}: slot
    j replaced by its neighbour (j-1, or 1 for j=0) so the length stays; repeat_padded: all slots ctx[-1].
    """
    w = _windows(seqs)
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
    An order-blind predictor has shuffled = reversed = 0; a predictor that uses only ctx[-1] has
    repeat_padded = 0.
    """
    w = _windows(seqs)
    tgt = vectors[w.target_rows]
    if base_pred is None:
        base_pred = predict_rows(predict, vectors, w.context_rows, batch_size)
    base = _mean(_rowwise_cos(_check_pred(base_pred, w.n, vectors.shape[1]), tgt))
    out: dict[str, float] = {}
    loo = []
    for name, rows in ablation_contexts(w, seed).items():
        delta = _mean(_rowwise_cos(predict_rows(predict, vectors, rows, batch_size), tgt)) - base
        out[name] = delta
        if name.startswith("leave_one_out_pos"):
            loo.append(delta)
    out["leave_one_out"] = float(np.mean(loo)) if loo else 0.0
    return out


def rollout_mask(seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray, horizon: int) -> np.ndarray:
    """Windows whose target and the next horizon-1 chunks exist in the same article."""
    w = _windows(seqs)
    mask = np.ones(w.n, dtype=bool)
    for h in range(horizon):
        mask &= offset_rows(w, article_ids, chunk_index, h)[1]
    return mask


def rollout(
    predict: Predictor,
    vectors: np.ndarray,
    seqs: SequenceLike,
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    horizon: int = 3,
    *,
    batch_size: int = 1024,
) -> list[float]:
    """Mean cos to the true future chunk at steps h = 1..horizon, feeding predictions back.

    Step 1 predicts the target; step h appends the step h-1 prediction to the context (dropping the
    oldest slot) and is compared with the chunk at target+h-1. Only windows with `horizon` future chunks
    in the same article take part (`rollout_mask`), so every step averages the same windows.
    """
    if horizon < 1:
        raise EvaluationError(f"rollout: horizon must be >= 1, got {horizon}")
    w = _windows(seqs)
    keep = np.flatnonzero(rollout_mask(w, article_ids, chunk_index, horizon))
    if keep.size == 0:
        return [float("nan")] * horizon
    sums = np.zeros(horizon)
    for s in range(0, keep.size, batch_size):
        idx = keep[s : s + batch_size]
        ctx = np.ascontiguousarray(vectors[w.context_rows[idx]], dtype=np.float32)
        for h in range(horizon):
            p = _unit(_check_pred(np.asarray(predict(ctx)), idx.size, vectors.shape[1], "predictor output"))
            sums[h] += _rowwise_cos(p, vectors[w.target_rows[idx] + h]).sum()
            ctx = np.concatenate([ctx[:, 1:], p[:, None, :]], axis=1)
    return [float(x / keep.size) for x in sums]


def neighbor_table(
    pred: np.ndarray,
    bank: ChunkBank,
    texts: Sequence[str] | np.ndarray,
    seqs: SequenceLike,
    n_samples: int = 5,
    k: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Nearest chunk texts to the prediction for a few seeded sample windows (context rows excluded).

    Each row: window, article_id, target_chunk_index, context_last (text), target (text),
    cosine_to_target, target_rank, neighbors [{row, score, text, is_target}] — for a human to judge.
    """
    w = _windows(seqs)
    pred = _check_pred(pred, w.n, bank.dim)
    texts = np.asarray(texts, dtype=object)
    if texts.shape != (bank.n,):
        raise EvaluationError(f"neighbor_table: texts has shape {texts.shape}, expected ({bank.n},)")
    if w.n == 0 or n_samples < 1:
        return []
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(w.n, size=min(n_samples, w.n), replace=False))
    sub = w.subset(pick)
    scores, rows = bank.search(pred[pick], k, sub.context_rows)
    ranks = bank.rank_of(pred[pick], sub.target_rows, sub.context_rows)
    cos = _rowwise_cos(pred[pick], bank.vectors[sub.target_rows])
    codes = bank.hash_codes
    out = []
    for i, win in enumerate(pick):
        t = int(sub.target_rows[i])
        neigh = []
        for s, r in zip(scores[i], rows[i]):
            if r < 0:
                continue
            same = r == t or (codes is not None and codes[r] == codes[t])
            neigh.append({"row": int(r), "score": float(s), "text": str(texts[r]), "is_target": bool(same)})
        out.append(
            {
                "window": int(win),
                "article_id": int(sub.article_ids[i]),
                "target_chunk_index": int(sub.target_chunk_index[i]),
                "context_last": str(texts[int(sub.context_rows[i, -1])]),
                "target": str(texts[t]),
                "cosine_to_target": float(cos[i]),
                "target_rank": int(ranks[i]),
                "neighbors": neigh,
            }
        )
    return out


def cosine_by_bin(
    cos: np.ndarray, seqs: SequenceLike, article_bins: Mapping[int, Any]
) -> tuple[dict[Any, float], dict[Any, int]]:
    """Mean per-window cosine per coherence bin of the window's article (articles without a bin skipped)."""
    w = _windows(seqs)
    labels = [article_bins.get(int(a)) for a in w.article_ids]
    means: dict[Any, float] = {}
    counts: dict[Any, int] = {}
    for b in sorted({b for b in labels if b is not None}, key=lambda x: (str(type(x)), x)):
        sel = np.array([lab == b for lab in labels])
        means[b] = _mean(cos[sel])
        counts[b] = int(sel.sum())
    return means, counts


# --- all metrics, all predictors -------------------------------------------------------------------


def _int_keys(d: Mapping[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in d.items()}


def _nan(v: Any) -> Any:
    return float("nan") if v is None else v


@dataclass
class EvaluationResult:
    """All metrics of all predictors on the same windows; the first predictor is the model.

    metrics[predictor][split][metric]; offset_sweep[predictor][split][k] = mean cosine, with
    offset_counts[split][k] windows; neighbors[split] for the model; metrics_by_bin[predictor][split][bin]
    = mean cosine with bin_counts[split][bin]; oracle_recall[split] at K=5; data_direction[split][j].

    Intervals (article-level bootstrap, settings in config["bootstrap"]):
    intervals[predictor][split][metric] = {"mean", "low", "high"} for every metric in INTERVAL_METRICS;
    deltas[split][baseline][metric] = {"delta", "low", "high"}: model − baseline on the same windows.
    """

    predictors: list[str]
    splits: list[str]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    offset_sweep: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    offset_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    neighbors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics_by_bin: dict[str, dict[str, dict[Any, float]]] = field(default_factory=dict)
    bin_counts: dict[str, dict[Any, int]] = field(default_factory=dict)
    oracle_recall: dict[str, float] = field(default_factory=dict)
    data_direction: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    deltas: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.predictors[0]

    @property
    def reporting_split(self) -> str:
        """ "test" when this result has test windows, else "val" (see `reporting_split`)."""
        return reporting_split(self)

    def interval(self, predictor: str, split: str, name: str = "cosine") -> tuple[float, float]:
        """(low, high) of a metric's article-bootstrap interval; (nan, nan) when none was computed."""
        iv = self.intervals.get(predictor, {}).get(split, {}).get(name) or {}
        return float(_nan(iv.get("low"))), float(_nan(iv.get("high")))

    def delta(self, baseline: str, split: str, name: str = "cosine") -> dict[str, float]:
        """{"delta", "low", "high"} of model − `baseline` on `split` (NaN entries when not computed)."""
        d = self.deltas.get(split, {}).get(baseline, {}).get(name) or {}
        return {k: float(_nan(d.get(k))) for k in ("delta", "low", "high")}

    def metric(self, predictor: str, split: str, name: str) -> float:
        try:
            return float(_nan(self.metrics[predictor][split][name]))
        except KeyError as exc:
            raise EvaluationError(f"no metric {name!r} for predictor {predictor!r} on split {split!r}") from exc

    def best_baseline(
        self, split: str = "val", metric: str = "cosine", exclude: str | Iterable[str] | None = None
    ) -> tuple[str, float]:
        """(name, value) of the best predictor other than `exclude` (default: the model)."""
        excl = {self.model_name} if exclude is None else ({exclude} if isinstance(exclude, str) else set(exclude))
        cands = []
        for p in self.predictors:
            if p in excl:
                continue
            v = self.metrics.get(p, {}).get(split, {}).get(metric)
            if v is not None and math.isfinite(float(v)):
                cands.append((p, float(v)))
        if not cands:
            raise EvaluationError(f"best_baseline: no baseline has metric {metric!r} on split {split!r}")
        pick = min if metric in LOWER_IS_BETTER else max
        return pick(cands, key=lambda c: c[1])

    def ood_val_gap(self, predictor: str | None = None, metric: str = "cosine") -> float:
        """|ood - val| of a metric (default: the model's cosine)."""
        p = predictor or self.model_name
        return abs(self.metric(p, "ood", metric) - self.metric(p, "val", metric))

    def summary_table(self, metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict[str, Any]]:
        """Rows predictor × split with cosine, margin, r@5, mrr, contrastive accuracy and n_windows."""
        rows = []
        for p in self.predictors:
            for s in self.splits:
                m = self.metrics.get(p, {}).get(s, {})
                row: dict[str, Any] = {"predictor": p, "split": s}
                row.update({k: m.get(k) for k in metrics})
                row["n_windows"] = m.get("n_windows")
                rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, int keys -> str); written as evaluation.json, read back by `from_dict`."""
        return to_plain(
            {
                "predictors": self.predictors,
                "splits": self.splits,
                "metrics": self.metrics,
                "offset_sweep": self.offset_sweep,
                "offset_counts": self.offset_counts,
                "neighbors": self.neighbors,
                "metrics_by_bin": self.metrics_by_bin,
                "bin_counts": self.bin_counts,
                "oracle_recall": self.oracle_recall,
                "data_direction": self.data_direction,
                "config": self.config,
                "intervals": self.intervals,
                "deltas": self.deltas,
            },
            nan_to_none=True,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        """Inverse of `to_dict`: a stored evaluation.json as a result again (the model gates accept either).

        Bin keys stay strings and None stays None; results written before intervals existed load with none.
        """
        return cls(
            predictors=list(data["predictors"]),
            splits=list(data["splits"]),
            metrics=data.get("metrics", {}),
            offset_sweep={p: {s: _int_keys(v) for s, v in d.items()} for p, d in data.get("offset_sweep", {}).items()},
            offset_counts={s: _int_keys(v) for s, v in data.get("offset_counts", {}).items()},
            neighbors=data.get("neighbors", {}),
            metrics_by_bin=data.get("metrics_by_bin", {}),
            bin_counts=data.get("bin_counts", {}),
            oracle_recall=data.get("oracle_recall", {}),
            data_direction=data.get("data_direction", {}),
            config=data.get("config", {}),
            intervals=data.get("intervals", {}),
            deltas=data.get("deltas", {}),
        )


def subsample_windows(seqs: SequenceLike, max_windows: int | None, seed: int = 0) -> SequenceSet:
    """At most `max_windows` windows, drawn with a seeded generator and kept in their original order."""
    w = _windows(seqs)
    if max_windows is None or w.n <= max_windows:
        return w
    if max_windows < 1:
        raise EvaluationError(f"max_windows must be >= 1, got {max_windows}")
    idx = np.sort(np.random.default_rng(seed).choice(w.n, size=int(max_windows), replace=False))
    return w.subset(idx)


def evaluate_predictors(
    predictors: Mapping[str, Predictor],
    vectors: np.ndarray,
    seqs_by_split: Mapping[str, SequenceLike],
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    text_hash: Sequence[str] | np.ndarray,
    texts: Sequence[str] | np.ndarray,
    splits: Sequence[str] = ("val", "ood"),
    max_windows: int | None = None,
    seed: int = 0,
    *,
    article_bins: Mapping[int, Any] | None = None,
    bank: ChunkBank | None = None,
    horizon: int = 3,
    n_neighbor_samples: int = 5,
    neighbor_k: int = 3,
    max_negatives: int = 1024,
    batch_size: int = 1024,
    n_resamples: int = DEFAULT_RESAMPLES,
    interval_level: float = DEFAULT_LEVEL,
) -> EvaluationResult:
    """Every metric for every predictor on the same windows of each split.

    The first predictor is treated as the model (neighbour table, `best_baseline` default exclusion).
    `article_bins` (article_id -> coherence bin) adds a per-bin cosine breakdown. `bank` defaults to an
    exact ChunkBank over `vectors`. A split with no windows is recorded with n_windows = 0.
    Every metric in INTERVAL_METRICS gets an article-bootstrap interval (`n_resamples` seeded with `seed`,
    the same article draws for every predictor of a split), and so does every model − baseline delta;
    `n_resamples=0` skips them.
    """
    if not predictors:
        raise EvaluationError("evaluate_predictors: no predictors given")
    try:
        vectors = unit_rows(vectors, "vectors")
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    n_rows = vectors.shape[0]
    article_ids = np.asarray(article_ids).astype(np.int64, copy=False)
    chunk_index = np.asarray(chunk_index).astype(np.int64, copy=False)
    text_hash = np.asarray(text_hash)
    texts = np.asarray(texts, dtype=object)
    for name, arr in (
        ("article_ids", article_ids),
        ("chunk_index", chunk_index),
        ("text_hash", text_hash),
        ("texts", texts),
    ):
        if arr.shape != (n_rows,):
            raise EvaluationError(f"{name}: shape {arr.shape}, expected ({n_rows},) to match vectors")
    if bank is None:
        bank = ChunkBank(vectors, article_ids, text_hash)
    elif bank.n != n_rows or bank.dim != vectors.shape[1]:
        raise EvaluationError(f"bank: {bank.n}x{bank.dim} does not match vectors {vectors.shape}")
    missing = [s for s in splits if s not in seqs_by_split]
    if missing:
        raise EvaluationError(f"evaluate_predictors: no sequences for split(s) {', '.join(missing)}")

    names = list(predictors)
    res = EvaluationResult(
        predictors=names,
        splits=list(splits),
        config={
            "seed": seed,
            "max_windows": max_windows,
            "horizon": horizon,
            "max_negatives": max_negatives,
            "bank_backend": bank.backend,
            "n_chunks": n_rows,
            "dim": int(vectors.shape[1]),
            "tie_policy": "pessimistic; same text hash counts as the target",
            "bootstrap": {
                "unit": "article",
                "n_resamples": int(n_resamples),
                "level": float(interval_level),
                "seed": seed,
                "n_articles": {},
            },
        },
    )
    for p in names:
        res.metrics[p] = {}
        res.offset_sweep[p] = {}
        if article_bins is not None:
            res.metrics_by_bin[p] = {}

    for split in splits:
        w = subsample_windows(check_windows(seqs_by_split[split], article_ids, chunk_index), max_windows, seed)
        if w.n == 0:
            for p in names:
                res.metrics[p][split] = {"n_windows": 0}
            res.neighbors[split] = []
            continue
        ctx = w.ctx
        tgt = vectors[w.target_rows]
        res.oracle_recall[split] = oracle_recall_at_k(
            bank, w.target_rows, 5, target_vectors=tgt, target_hashes=text_hash[w.target_rows]
        )
        res.data_direction[split] = sequence_data_direction(vectors, w)
        roll_n = int(rollout_mask(w, article_ids, chunk_index, horizon).sum())
        per_window: dict[str, dict[str, np.ndarray]] = {}
        for i, p in enumerate(names):
            t0 = time.perf_counter()
            try:
                predict = as_predict_fn(predictors[p], p)
            except PredictionError as exc:
                raise EvaluationError(str(exc)) from exc
            pred = predict_rows(predict, vectors, w.context_rows, batch_size)
            cos = cosine_to_target(pred, vectors, w)
            margin = margin_vs_last(pred, vectors, w)
            m: dict[str, float] = {
                "n_windows": w.n,
                "cosine": _mean(cos),
                "cosine_std": float(np.std(cos)),
                "margin": _mean(margin),
            }
            ranks = retrieval_ranks(pred, bank, w)
            m.update(_rank_summary(ranks, (1, 5, 10)))
            m["median_rank"] = float(np.median(ranks))
            w_ranks = within_article_ranks(pred, bank, w)
            m.update({f"within_{k}": v for k, v in _rank_summary(w_ranks, (1, 5)).items()})
            shares = contrastive_shares(
                pred, tgt, max_negatives=max_negatives, seed=seed, target_keys=text_hash[w.target_rows]
            )
            m["contrastive_acc"] = float(np.nanmean(shares)) if np.isfinite(shares).any() else float("nan")
            per_window[p] = {
                "cosine": cos,
                "margin": margin,
                **{f"r@{k}": (ranks <= k).astype(np.float64) for k in (1, 5, 10)},
                "mrr": 1.0 / ranks,
                **{f"within_r@{k}": (w_ranks <= k).astype(np.float64) for k in (1, 5)},
                "within_mrr": 1.0 / w_ranks,
                "contrastive_acc": shares,
            }
            for k, v in ablations(predict, vectors, w, seed, base_pred=pred, batch_size=batch_size).items():
                m[f"ablation_{k}"] = v
            for h, v in enumerate(
                rollout(predict, vectors, w, article_ids, chunk_index, horizon, batch_size=batch_size), 1
            ):
                m[f"rollout_h{h}"] = v
            m["rollout_n"] = roll_n
            sweep = offset_sweep(pred, vectors, w, article_ids, chunk_index, ctx)
            res.offset_sweep[p][split] = {k: v["cosine"] for k, v in sweep.items()}
            res.offset_counts[split] = {k: int(v["n"]) for k, v in sweep.items()}
            m["offset_peak_k"] = int(
                max(sweep, key=lambda k: -np.inf if math.isnan(sweep[k]["cosine"]) else sweep[k]["cosine"])
            )
            if article_bins is not None:
                means, counts = cosine_by_bin(cos, w, article_bins)
                res.metrics_by_bin[p][split] = means
                res.bin_counts[split] = counts
            if i == 0:
                res.neighbors[split] = neighbor_table(pred, bank, texts, w, n_neighbor_samples, neighbor_k, seed)
            m["seconds"] = time.perf_counter() - t0
            res.metrics[p][split] = m
        if n_resamples > 0:
            _add_intervals(res, split, w, per_window, n_resamples, interval_level, seed)
    return res


def _add_intervals(
    res: EvaluationResult,
    split: str,
    w: SequenceSet,
    per_window: Mapping[str, Mapping[str, np.ndarray]],
    n_resamples: int,
    level: float,
    seed: int,
) -> None:
    """Article-bootstrap intervals of every INTERVAL_METRICS mean and every model − baseline delta of `split`."""
    boot = ArticleBootstrap(w.article_ids, n_resamples, level, seed)
    res.config["bootstrap"]["n_articles"][split] = boot.n_articles
    model = res.model_name
    columns: dict[tuple[str, str, str], np.ndarray] = {}
    for p, cols in per_window.items():
        for name in INTERVAL_METRICS:
            columns[("mean", p, name)] = cols[name]
            if p != model:
                columns[("delta", p, name)] = per_window[model][name] - cols[name]
    keys = list(columns)
    ivs = boot.intervals({str(i): columns[k] for i, k in enumerate(keys)})
    res.deltas[split] = {}
    for i, (kind, p, name) in enumerate(keys):
        iv = ivs[str(i)]
        if kind == "mean":
            res.intervals.setdefault(p, {}).setdefault(split, {})[name] = {
                "mean": iv.mean, "low": iv.low, "high": iv.high
            }
        else:
            res.deltas[split].setdefault(p, {})[name] = {"delta": iv.mean, "low": iv.low, "high": iv.high}
