"""`evaluate_predictors`: every metric for every predictor on the same windows of each split.

Numbers only mean something beside the baselines (DESIGN "Evaluation"), so the model and every trivial
baseline go through the same table of metrics (`METRICS`: name, step, who) on identical windows, and the
bootstrap intervals are added once per split afterwards (`lvm_core.evaluation.intervals`). A step turns
one predictor's predictions on one split into numbers by calling the pure functions of
`lvm_core.evaluation.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import numpy as np

from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.rows import unit_rows
from lvm_core.data.windows import SequenceLike, SequenceSet, data_direction
from lvm_core.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from lvm_core.evaluation.inputs import EvaluationError, check_windows, predict_rows, subsample_windows
from lvm_core.evaluation.intervals import record_intervals
from lvm_core.evaluation.metrics.ablations import ablations
from lvm_core.evaluation.metrics.breakdown import cosine_by_bin, neighbor_table
from lvm_core.evaluation.metrics.contrastive import contrastive_shares, mean_share
from lvm_core.evaluation.metrics.cosine import cosine_to_target, margin_vs_last, mean_or_nan
from lvm_core.evaluation.metrics.offsets import offset_sweep, peak_offset
from lvm_core.evaluation.metrics.retrieval import rank_summary, retrieval_ranks, within_article_ranks
from lvm_core.evaluation.metrics.rollout import rollout, rollout_mask
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.models.predict import PredictionError, Predictor, as_predict_fn

__all__ = ["METRICS", "Metric", "evaluate_predictors"]


@dataclass(frozen=True)
class Chunks:
    """The checked chunk table every split's windows index into (vectors unit rows)."""

    vectors: np.ndarray
    article_ids: np.ndarray
    chunk_index: np.ndarray
    text_hash: np.ndarray
    texts: Sequence[str] | np.ndarray  # indexed by row; a ColumnRows reads only the rows asked for
    bank: ChunkBank


@dataclass(frozen=True)
class Options:
    """Settings every metric step may read."""

    seed: int
    horizon: int
    max_negatives: int
    batch_size: int
    n_neighbor_samples: int
    neighbor_k: int
    article_bins: Mapping[int, Any] | None


@dataclass(frozen=True)
class Split:
    """One split's checked windows with the chunk table and the settings."""

    name: str
    w: SequenceSet
    chunks: Chunks
    opts: Options

    @property
    def vectors(self) -> np.ndarray:
        return self.chunks.vectors

    @cached_property
    def targets(self) -> np.ndarray:
        return cast(np.ndarray, self.vectors[self.w.target_rows])

    @cached_property
    def target_hashes(self) -> np.ndarray:
        return cast(np.ndarray, self.chunks.text_hash[self.w.target_rows])


@dataclass
class Measured:
    """What one metric step found for one predictor on one split."""

    values: dict[str, Any] = field(default_factory=dict)  # -> metrics[predictor][split]
    per_window: dict[str, np.ndarray] = field(default_factory=dict)  # -> bootstrap intervals
    per_predictor: dict[str, Any] = field(default_factory=dict)  # result field -> value at [predictor][split]
    per_split: dict[str, Any] = field(default_factory=dict)  # result field -> value at [split]


#: A step: (split, predict function, its unit predictions on the split's windows) -> what it measured.
Step = Callable[[Split, Predictor, np.ndarray], Measured]


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: `step` runs for the model only when `model_only`, else for all."""

    name: str
    step: Step
    model_only: bool = False


def _cosine(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    cos = cosine_to_target(pred, s.vectors, s.w)
    margin = margin_vs_last(pred, s.vectors, s.w)
    values = {"cosine": mean_or_nan(cos), "cosine_std": float(np.std(cos)), "margin": mean_or_nan(margin)}
    return Measured(values, {"cosine": cos, "margin": margin})


def _hits(ranks: np.ndarray, ks: Sequence[int], prefix: str = "") -> dict[str, np.ndarray]:
    """Per-window columns whose means are `rank_summary(ranks, ks)`: r@k hits (0/1) and 1/rank."""
    cols = {f"{prefix}r@{k}": (ranks <= k).astype(np.float64) for k in ks}
    cols[f"{prefix}mrr"] = 1.0 / ranks
    return cols


def _retrieval(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    ranks = retrieval_ranks(pred, s.chunks.bank, s.w)
    values = rank_summary(ranks, (1, 5, 10))
    values["median_rank"] = float(np.median(ranks))
    return Measured(values, _hits(ranks, (1, 5, 10)))


def _within_article(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    ranks = within_article_ranks(pred, s.chunks.bank, s.w)
    values = {f"within_{k}": v for k, v in rank_summary(ranks, (1, 5)).items()}
    return Measured(values, _hits(ranks, (1, 5), "within_"))


def _contrastive(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    shares = contrastive_shares(
        pred, s.targets, max_negatives=s.opts.max_negatives, seed=s.opts.seed, target_keys=s.target_hashes
    )
    return Measured({"contrastive_acc": mean_share(shares)}, {"contrastive_acc": shares})


def _ablations(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    deltas = ablations(predict, s.vectors, s.w, s.opts.seed, base_pred=pred, batch_size=s.opts.batch_size)
    return Measured({f"ablation_{k}": v for k, v in deltas.items()})


def _rollout(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    ids, index, horizon = s.chunks.article_ids, s.chunks.chunk_index, s.opts.horizon
    steps = rollout(predict, s.vectors, s.w, ids, index, horizon, batch_size=s.opts.batch_size)
    values: dict[str, Any] = {f"rollout_h{h}": v for h, v in enumerate(steps, 1)}
    values["rollout_n"] = int(rollout_mask(s.w, ids, index, horizon).sum())
    return Measured(values)


def _offsets(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    sweep = offset_sweep(pred, s.vectors, s.w, s.chunks.article_ids, s.chunks.chunk_index, s.w.ctx)
    return Measured(
        {"offset_peak_k": peak_offset(sweep)},
        per_predictor={"offset_sweep": {k: v["cosine"] for k, v in sweep.items()}},
        per_split={"offset_counts": {k: int(v["n"]) for k, v in sweep.items()}},
    )


def _coherence_bins(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    if s.opts.article_bins is None:
        return Measured()
    means, counts = cosine_by_bin(cosine_to_target(pred, s.vectors, s.w), s.w, s.opts.article_bins)
    return Measured(per_predictor={"metrics_by_bin": means}, per_split={"bin_counts": counts})


def _neighbors(s: Split, predict: Predictor, pred: np.ndarray) -> Measured:
    o = s.opts
    table = neighbor_table(pred, s.chunks.bank, s.chunks.texts, s.w, o.n_neighbor_samples, o.neighbor_k, o.seed)
    return Measured(per_split={"neighbors": table})


#: Every metric, in the order its numbers appear in metrics[predictor][split].
METRICS: tuple[Metric, ...] = (
    Metric("cosine", _cosine),
    Metric("retrieval", _retrieval),
    Metric("within_article", _within_article),
    Metric("contrastive", _contrastive),
    Metric("ablations", _ablations),
    Metric("rollout", _rollout),
    Metric("offset_sweep", _offsets),
    Metric("coherence_bins", _coherence_bins),
    Metric("neighbors", _neighbors, model_only=True),
)


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
    ood_kind: str | None = None,
    interval_method: str = "cluster_t",
) -> EvaluationResult:
    """Every metric for every predictor on the same windows of each split.

    The first predictor is treated as the model (neighbour table, `best_baseline` default exclusion).
    `article_bins` (article_id -> coherence bin) adds a per-bin cosine breakdown. `bank` defaults to an
    exact ChunkBank over `vectors`. A split with no windows is recorded with n_windows = 0.
    Every metric in INTERVAL_METRICS gets an article-bootstrap interval (`n_resamples` seeded with `seed`,
    the same article draws for every predictor of a split), and so does every model − baseline delta;
    `n_resamples=0` skips them. `ood_kind` (the manifest's "shift" or "in_distribution") is recorded in
    `config` so the report, the card and the gates label and gate the ood split for what it is.
    """
    if not predictors:
        raise EvaluationError("evaluate_predictors: no predictors given")
    chunks = _checked_chunks(vectors, article_ids, chunk_index, text_hash, texts, bank)
    missing = [s for s in splits if s not in seqs_by_split]
    if missing:
        raise EvaluationError(f"evaluate_predictors: no sequences for split(s) {', '.join(missing)}")
    opts = Options(seed, horizon, max_negatives, batch_size, n_neighbor_samples, neighbor_k, article_bins)
    res = _new_result(list(predictors), splits, chunks, opts, max_windows, n_resamples, interval_level)
    res.config["ood_kind"] = ood_kind
    res.config["bootstrap"]["method"] = interval_method
    for split in splits:
        w = check_windows(seqs_by_split[split], chunks.article_ids, chunks.chunk_index)
        w = subsample_windows(w, max_windows, seed)
        if w.n == 0:
            for p in res.predictors:
                res.metrics[p][split] = {"n_windows": 0}
            res.neighbors[split] = []
            continue
        s = Split(split, w, chunks, opts)
        _record_split_facts(res, s)
        per_window = {p: _evaluate_one(res, p, predictors[p], s, i == 0) for i, p in enumerate(res.predictors)}
        if n_resamples > 0:
            record_intervals(res, split, w, per_window, n_resamples, interval_level, seed, interval_method)
    return res


def _checked_chunks(
    vectors: np.ndarray,
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    text_hash: Sequence[str] | np.ndarray,
    texts: Sequence[str] | np.ndarray,
    bank: ChunkBank | None,
) -> Chunks:
    """The chunk table with unit vectors, every column one entry per vector row, and a bank that matches."""
    try:
        vectors = unit_rows(vectors, "vectors")
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    n_rows = vectors.shape[0]
    columns = {
        "article_ids": np.asarray(article_ids).astype(np.int64, copy=False),
        "chunk_index": np.asarray(chunk_index).astype(np.int64, copy=False),
        "text_hash": np.asarray(text_hash),
    }
    for name, arr in columns.items():
        if arr.shape != (n_rows,):
            raise EvaluationError(f"{name}: shape {arr.shape}, expected ({n_rows},) to match vectors")
    if len(texts) != n_rows:  # texts stay as given: a lazy column is never materialised here
        raise EvaluationError(f"texts: {len(texts)} rows, expected {n_rows} to match vectors")
    if bank is None:
        bank = ChunkBank(vectors, columns["article_ids"], columns["text_hash"])
    elif bank.n != n_rows or bank.dim != vectors.shape[1]:
        raise EvaluationError(f"bank: {bank.n}x{bank.dim} does not match vectors {vectors.shape}")
    return Chunks(vectors=vectors, bank=bank, texts=texts, **columns)


def _new_result(
    names: list[str],
    splits: Sequence[str],
    chunks: Chunks,
    opts: Options,
    max_windows: int | None,
    n_resamples: int,
    interval_level: float,
) -> EvaluationResult:
    """An empty result with the run's settings in `config` and a slot per predictor."""
    res = EvaluationResult(
        predictors=names,
        splits=list(splits),
        config={
            "seed": opts.seed,
            "max_windows": max_windows,
            "horizon": opts.horizon,
            "max_negatives": opts.max_negatives,
            "bank_backend": chunks.bank.backend,
            "n_chunks": chunks.vectors.shape[0],
            "dim": int(chunks.vectors.shape[1]),
            "tie_policy": "pessimistic; same text hash counts as the target",
            "bootstrap": {
                "unit": "article",
                "n_resamples": int(n_resamples),
                "level": float(interval_level),
                "seed": opts.seed,
                "n_articles": {},
            },
        },
    )
    for p in names:
        res.metrics[p] = {}
        res.offset_sweep[p] = {}
        if opts.article_bins is not None:
            res.metrics_by_bin[p] = {}
    return res


def _record_split_facts(res: EvaluationResult, s: Split) -> None:
    """What a split says about the data, not a predictor: the data direction. (Querying the bank with its own
    target rows cannot fail, so no oracle is recorded here: the data gate re-encodes target texts.)"""
    res.data_direction[s.name] = data_direction(s.vectors, s.w)


def _evaluate_one(res: EvaluationResult, name: str, predictor: Predictor, s: Split, is_model: bool) -> dict[str, np.ndarray]:
    """Run every metric of `METRICS` for one predictor on one split into `res`; returns its per-window columns."""
    t0 = time.perf_counter()
    try:
        predict = as_predict_fn(predictor, name)
    except PredictionError as exc:
        raise EvaluationError(str(exc)) from exc
    pred = predict_rows(predict, s.vectors, s.w.context_rows, s.opts.batch_size)
    values: dict[str, Any] = {"n_windows": s.w.n}
    per_window: dict[str, np.ndarray] = {}
    for metric in METRICS:
        if metric.model_only and not is_model:
            continue
        found = metric.step(s, predict, pred)
        values.update(found.values)
        per_window.update(found.per_window)
        for attr, value in found.per_predictor.items():
            getattr(res, attr)[name][s.name] = value
        for attr, value in found.per_split.items():
            getattr(res, attr)[s.name] = value
    values["seconds"] = time.perf_counter() - t0
    res.metrics[name][s.name] = values
    return per_window
