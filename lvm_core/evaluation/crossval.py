"""Grouped cross-validation by article: every architecture and trivial baseline, every article tested once.

Why. One fixed test split of ~10 articles gives wide intervals, and its articles had been looked at when the
defaults were chosen. Here the dataset's articles (all splits pooled; a shift-mode ood split is left out,
it is not the same distribution) are dealt into K folds (a permutation seeded with `split_seed`, dealt round-robin). For
fold k:

- test = fold k's articles, looked at only to score;
- inner validation = fold k+1's articles (mod K): ALL selection happens there — early stopping and the
  epoch to keep, epoch 0 (the untrained model) included (`lvm_core.train.trainer.train`), and which trivial
  baseline is "the best baseline" of the fold;
- inner train = the other K − 2 folds: models and baselines are fitted on these windows only.

Each architecture is trained once per fold and seed with one fixed configuration (`CrossValConfig`): the
number of configurations tried is len(archs), recorded in the result. Scores are per article (mean over its
test windows) and pooled over folds, so each article counts once; model − best-baseline deltas are paired
by article and averaged over seeds, and their intervals come from `lvm_core.evaluation.cluster_t` (a
cluster-robust t that holds its level with few articles, the seed-to-seed spread folded in), with Holm's
correction across the models of the table. Beside cosine: within-article R@1 and MRR
(`metrics.retrieval.within_article_ranks`), which the topic mean cannot saturate — every chunk of the
article shares its topic.

The learning curve re-runs the fold loop for one architecture (the best by mean inner-validation cosine,
never by test) on nested, seeded subsets of each fold's inner-train articles
(`lvm_core.evaluation.learning_curve`).

No Prefect here; `jobs` trainings run side by side in worker processes (joblib), one torch thread each.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed  # type: ignore[import-untyped]

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import models_dir
from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.windows import SequenceSet
from lvm_core.evaluation.cluster_t import TInterval, cluster_t, holm, seeded_cluster_t
from lvm_core.evaluation.metrics.cosine import cosine_to_target
from lvm_core.evaluation.metrics.retrieval import within_article_ranks
from lvm_core.io.storage import read_json
from lvm_core.models.baselines.collection import fit_baselines
from lvm_core.models.config import ModelConfig
from lvm_core.models.predict import ModulePredictor, mean_cosine, predict_windows
from lvm_core.train.config import TrainConfig
from lvm_core.train.trainer import train

DEFAULT_ARCHS: tuple[str, ...] = ("amn", "amn_mix", "gru", "lstm", "transformer")
METRICS: tuple[str, ...] = ("cosine", "r@1", "mrr")
BEST_BASELINE = "best_baseline"
#: File names in a cross-validation's folder (`crossval_dir`).
CROSSVAL_JSON = "crossval.json"
CROSSVAL_CURVE_PNG = "learning_curve.png"


class CrossValError(UserError, ValueError):
    """Bad cross-validation input (too few articles for the folds, bad fold/seed counts, bad fractions)."""


@dataclass(frozen=True)
class CrossValConfig:
    """The one training configuration every fold uses, the fold layout and the learning-curve fractions.

    Defaults keep `lvm compare --folds 10 --seeds 3` within 15 minutes on 2 cores for the five default
    architectures (measured; see docs/why-amn.md): `lvm train`'s model and regularisation (dropout 0.5,
    weight decay 0.1) with at most 3 epochs, patience 1 (stop at the first epoch that does not improve inner
    validation: a model that cannot beat its epoch 0 costs one epoch) and batch 128 at lr 2e-4 (`lvm train`'s
    1e-4 at batch 64, scaled with the batch). Per-epoch CPU time, not the result, set these.
    """

    folds: int = 10
    seeds: int = 3
    archs: tuple[str, ...] = DEFAULT_ARCHS
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.1
    dropout: float = 0.5
    hidden: int = 256
    mlp_hidden: int = 512
    patience: int = 1
    split_seed: int = 0
    level: float = 0.95
    curve_fractions: tuple[float, ...] = (0.25, 0.5)
    jobs: int = 2

    def check(self) -> None:
        if self.folds < 3:
            raise CrossValError(f"folds must be >= 3 (test, inner validation, inner train), got {self.folds}")
        if self.seeds < 1:
            raise CrossValError(f"seeds must be >= 1, got {self.seeds}")
        if not self.archs:
            raise CrossValError("at least one architecture is needed")
        if any(not 0.0 < f < 1.0 for f in self.curve_fractions):
            raise CrossValError(f"learning-curve fractions must lie in (0, 1), got {list(self.curve_fractions)}")
        if self.jobs < 1:
            raise CrossValError(f"jobs must be >= 1, got {self.jobs}")


@dataclass(frozen=True)
class Fold:
    """Article ids of one fold's test, inner-validation and inner-train parts."""

    index: int
    test: np.ndarray
    inner_val: np.ndarray
    inner_train: np.ndarray


@dataclass
class CrossValResult:
    """Per-article scores of every predictor (`scores`), per-fold selections and training outcomes (`runs`),
    the table rows (`rows`) and the learning curve (`curve`)."""

    config: dict[str, Any]
    n_articles: int
    n_windows: int
    scores: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    curve_arch: str | None = None
    configurations_tried: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crossval_dir(data_dir: Path, dataset_id: str, folds: int, seeds: int) -> Path:
    """Where `lvm compare --folds K --seeds S` writes its table, JSON and learning curve for a dataset."""
    return models_dir(data_dir) / "comparisons" / dataset_id / f"crossval-{folds}x{seeds}"


def latest_crossval(data_dir: Path, dataset_id: str) -> tuple[Path, CrossValResult] | None:
    """The newest cross-validation of `dataset_id` (its folder and result), or None when none was run: the
    evaluation report and the model card show it beside the single-split evaluation."""
    found = sorted((models_dir(data_dir) / "comparisons" / dataset_id).glob(f"crossval-*/{CROSSVAL_JSON}"),
                   key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            d = read_json(path)
            return path.parent, CrossValResult(**{k: d[k] for k in CrossValResult.__dataclass_fields__ if k in d})
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a half-written or older-format file: the next newest one
    return None


def pooled_windows(sequences: dict[str, SequenceSet], ood_is_shift: bool) -> SequenceSet:
    """Every split's windows together; a shift-mode ood split stays out (another distribution)."""
    names = [s for s in ("train", "val", "test", "ood") if s in sequences and not (s == "ood" and ood_is_shift)]
    return SequenceSet.concat([SequenceSet.of(sequences[s]) for s in names if len(sequences[s])])


def article_folds(article_ids: np.ndarray, k: int, seed: int) -> list[Fold]:
    """K folds of articles: a seeded permutation dealt round-robin (fold sizes differ by at most one
    article); fold k+1 is fold k's inner validation."""
    unique = np.unique(np.asarray(article_ids))
    if unique.size < k:
        raise CrossValError(f"{unique.size} articles cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(unique)
    parts = [np.sort(order[i::k]) for i in range(k)]
    return [
        Fold(i, parts[i], parts[(i + 1) % k], np.concatenate([parts[j] for j in range(k) if j not in (i, (i + 1) % k)]))
        for i in range(k)
    ]


def subsample_articles(articles: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction·n) articles of a seeded permutation: nested across fractions (same seed)."""
    order = np.random.default_rng(seed).permutation(np.sort(articles))
    return np.sort(order[: max(1, math.ceil(fraction * order.size))])


def _windows_of(w: SequenceSet, articles: np.ndarray) -> SequenceSet:
    return w.subset(np.flatnonzero(np.isin(w.article_ids, articles)))


def _per_article(values: dict[str, np.ndarray], article_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Article ids, window counts and the mean of each per-window column per article."""
    aids, codes, counts = np.unique(article_ids, return_inverse=True, return_counts=True)
    return aids, counts, {k: np.bincount(codes, weights=v, minlength=aids.size) / counts for k, v in values.items()}


def score_windows(predictor: Any, vectors: np.ndarray, bank: ChunkBank, test: SequenceSet) -> dict[str, np.ndarray]:
    """Per-window cosine, R@1 indicator and reciprocal rank (within the article) of one predictor's predictions."""
    pred = predict_windows(predictor, vectors, test, unit=True, finite=True)
    ranks = within_article_ranks(pred, bank, test)
    return {"cosine": cosine_to_target(pred, vectors, test), "r@1": (ranks == 1).astype(np.float64),
            "mrr": 1.0 / ranks}


def _train_one(cfg: CrossValConfig, arch: str, seed: int, vectors: np.ndarray, train_w: SequenceSet,
               val_w: SequenceSet, threads: int | None, anchor: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """One training (worker process): the selected model and its outcome. `anchor`: the fold's fitted
    recency-weighted mean (the models' starting point), so it is not fitted again for every training."""
    mc = ModelConfig(arch=arch, dim=vectors.shape[1], context_len=train_w.ctx,
                     hidden=cfg.hidden, mlp_hidden=cfg.mlp_hidden, dropout=cfg.dropout)
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                     patience=cfg.patience, seed=seed, num_threads=threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lvm-cv-") as tmp:
        res = train(mc, tc, vectors, train_w, val_w, Path(tmp), anchor_weights=anchor)
    info = {"status": res.status, "best_epoch": res.best_epoch, "epochs_run": res.epochs_completed,
            "inner_val_cosine": res.best_val_cosine, "initial_val_cosine": res.initial_val_cosine,
            "train_seconds": time.perf_counter() - t0}
    return res.model, info


def _train_and_score(cfg: CrossValConfig, job: dict[str, Any], vectors: np.ndarray, pooled: SequenceSet,
                     bank: ChunkBank, threads: int | None) -> dict[str, Any]:
    train_w, val_w = _windows_of(pooled, job["train_articles"]), _windows_of(pooled, job["val_articles"])
    test_w = _windows_of(pooled, job["test_articles"])
    model, info = _train_one(cfg, job["arch"], job["seed"], vectors, train_w, val_w, threads, job.get("anchor"))
    if model is None:
        raise CrossValError(f"{job['arch']} fold {job['fold']} seed {job['seed']}: no model (not even epoch 0 scored)")
    per_window = score_windows(ModulePredictor(model), vectors, bank, test_w)
    keep = {k: v for k, v in job.items() if not k.endswith("_articles") and k != "anchor"}
    return {**keep, **info, "per_window": per_window}


def _baseline_scores(vectors: np.ndarray, pooled: SequenceSet, bank: ChunkBank, fold: Fold, train_articles: np.ndarray,
                     fraction: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit the trivial baselines on inner train, pick the best on inner val, score all on test, per article."""
    train_w, val_w, test_w = (_windows_of(pooled, a) for a in (train_articles, fold.inner_val, fold.test))
    baselines = fit_baselines(vectors, train_w)
    val_cos = {name: mean_cosine(b, vectors, val_w) for name, b in baselines.items()}
    best = max(val_cos, key=lambda n: val_cos[n])
    scores: list[dict[str, Any]] = []
    for name, b in baselines.items():
        cols = score_windows(b, vectors, bank, test_w)
        for pname in (name, BEST_BASELINE) if name == best else (name,):
            scores.extend(_score_records(cols, test_w.article_ids, fold.index, fraction, pname, "baseline", 0))
    recency = getattr(baselines.get("recency_weighted_mean"), "weights", None)
    run = {"fold": fold.index, "fraction": fraction, "predictor": "baselines", "best_baseline": best,
           "inner_val_cosine": val_cos, "n_train_articles": int(train_articles.size),
           "anchor": None if recency is None else [float(x) for x in recency]}
    return scores, run


def _score_records(cols: dict[str, np.ndarray], article_ids: np.ndarray, fold: int, fraction: float, predictor: str,
                   kind: str, seed: int) -> list[dict[str, Any]]:
    aids, counts, means = _per_article(cols, article_ids)
    return [{"article_id": int(a), "fold": fold, "fraction": fraction, "predictor": predictor, "kind": kind,
             "seed": seed, "n_windows": int(n), **{m: float(means[m][i]) for m in METRICS}}
            for i, (a, n) in enumerate(zip(aids, counts, strict=True))]


def run_crossval(
    vectors: np.ndarray,
    pooled: SequenceSet,
    chunk_article_ids: np.ndarray,
    text_hash: np.ndarray | None,
    cfg: CrossValConfig,
    progress: Callable[[str], None] | None = None,
) -> CrossValResult:
    """Grouped K-fold cross-validation of `cfg.archs` beside the trivial baselines; see the module docstring.

    `vectors` are the chunk vectors (row = chunk), `chunk_article_ids` / `text_hash` their article and text
    hash (the within-article ranks' bank), `pooled` every window to cross-validate.
    """
    cfg.check()
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    bank = ChunkBank(vectors, chunk_article_ids, text_hash)
    folds = article_folds(pooled.article_ids, cfg.folds, cfg.split_seed)
    out = CrossValResult(config=asdict(cfg), n_articles=int(np.unique(pooled.article_ids).size), n_windows=len(pooled),
                         configurations_tried=len(cfg.archs))
    _fit_baselines(cfg, [(fold, fold.inner_train, 1.0) for fold in folds], vectors, pooled, bank, out)
    jobs = [{"arch": a, "seed": s, "fold": f.index, "fraction": 1.0, "train_articles": f.inner_train,
             "val_articles": f.inner_val, "test_articles": f.test, "anchor": _anchor(out.runs, f.index, 1.0)}
            for s in range(cfg.seeds) for a in cfg.archs for f in folds]
    say(f"cross-validation: {len(jobs)} trainings ({len(cfg.archs)} architectures x {cfg.folds} folds x {cfg.seeds} seeds)")
    _run_jobs(cfg, jobs, vectors, pooled, bank, out, say)
    out.rows = summarize(out.scores, out.runs, cfg.archs, cfg.level)
    if cfg.curve_fractions:
        out.curve_arch = best_by_inner_val(out.runs, cfg.archs)
        parts = [(fold, subsample_articles(fold.inner_train, frac, cfg.split_seed + fold.index), frac)
                 for frac in cfg.curve_fractions for fold in folds]
        _fit_baselines(cfg, parts, vectors, pooled, bank, out)
        curve_jobs = [{"arch": out.curve_arch, "seed": 0, "fold": fold.index, "fraction": frac, "train_articles": sub,
                       "val_articles": fold.inner_val, "test_articles": fold.test,
                       "anchor": _anchor(out.runs, fold.index, frac)} for fold, sub, frac in parts]
        say(f"learning curve: {len(curve_jobs)} trainings of {out.curve_arch} on {list(cfg.curve_fractions)} of the training articles")
        _run_jobs(cfg, curve_jobs, vectors, pooled, bank, out, say)
        from lvm_core.evaluation.learning_curve import curve_points

        out.curve = curve_points(out.scores, out.runs, out.curve_arch, cfg.level)
    out.seconds = time.perf_counter() - t0
    return out


def _anchor(runs: Sequence[dict[str, Any]], fold: int, fraction: float) -> np.ndarray | None:
    """The recency-weighted mean's weights fitted on this fold's (and fraction's) training windows."""
    w = next(r["anchor"] for r in runs if r["predictor"] == "baselines" and r["fold"] == fold and r["fraction"] == fraction)
    return None if w is None else np.asarray(w, dtype=np.float64)


def _fit_baselines(cfg: CrossValConfig, parts: Sequence[tuple[Fold, np.ndarray, float]], vectors: np.ndarray,
                   pooled: SequenceSet, bank: ChunkBank, out: CrossValResult) -> None:
    """`_baseline_scores` of every (fold, training articles, fraction), `cfg.jobs` at a time."""
    calls = [delayed(_baseline_scores)(vectors, pooled, bank, fold, arts, frac) for fold, arts, frac in parts]
    results = Parallel(n_jobs=cfg.jobs)(calls) if cfg.jobs > 1 else [f(*a, **k) for f, a, k in calls]
    for scores, run in results:
        out.scores.extend(scores)
        out.runs.append(run)


def _run_jobs(cfg: CrossValConfig, jobs: Sequence[dict[str, Any]], vectors: np.ndarray, pooled: SequenceSet,
              bank: ChunkBank, out: CrossValResult, say: Callable[[str], None]) -> None:
    threads = 1 if cfg.jobs > 1 else None
    runner = Parallel(n_jobs=cfg.jobs, return_as="generator_unordered") if cfg.jobs > 1 else None
    calls = (delayed(_train_and_score)(cfg, j, vectors, pooled, bank, threads) for j in jobs)
    results = runner(calls) if runner is not None else (f(*a, **k) for f, a, k in calls)
    for i, r in enumerate(results, 1):
        per_window = r.pop("per_window")
        test_w = _windows_of(pooled, next(f for f in jobs if f["fold"] == r["fold"])["test_articles"])
        out.scores.extend(_score_records(per_window, test_w.article_ids, r["fold"], r["fraction"], r["arch"], "model",
                                         r["seed"]))
        out.runs.append({**r, "predictor": r["arch"]})
        say(f"[{i}/{len(jobs)}] {r['arch']} fold {r['fold']} seed {r['seed']} fraction {r['fraction']}: "
            f"best epoch {r['best_epoch']}, {r['train_seconds']:.0f}s")


def best_by_inner_val(runs: Sequence[dict[str, Any]], archs: Sequence[str]) -> str:
    """The architecture with the best mean inner-validation cosine over folds and seeds (never test)."""
    def mean_val(a: str) -> float:
        vals = [r["inner_val_cosine"] for r in runs if r["predictor"] == a and r["fraction"] == 1.0
                and r["inner_val_cosine"] is not None]
        return float(np.mean(vals)) if vals else -math.inf

    return max(archs, key=mean_val)


def score_table(scores: Sequence[dict[str, Any]], predictor: str, fraction: float, metric: str,
                seeds: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(article ids (G,), values (G, S)) of one predictor's per-article metric, seeds as columns (all, or `seeds`)."""
    recs = [r for r in scores if r["predictor"] == predictor and r["fraction"] == fraction
            and (seeds is None or r["seed"] in seeds or r["kind"] == "baseline")]
    aids = np.unique([r["article_id"] for r in recs]).astype(np.int64)
    seeds = sorted({r["seed"] for r in recs})
    table = np.full((aids.size, len(seeds)), np.nan)
    for r in recs:
        table[np.searchsorted(aids, r["article_id"]), seeds.index(r["seed"])] = r[metric]
    return aids, table


def paired_delta(scores: Sequence[dict[str, Any]], predictor: str, reference: str, fraction: float, metric: str,
                 level: float, seeds: Sequence[int] | None = None) -> TInterval:
    """`predictor − reference` per article (reference broadcast over seeds), with its seeded cluster-t interval."""
    aids, table = score_table(scores, predictor, fraction, metric, seeds)
    raids, ref = score_table(scores, reference, fraction, metric)
    if not np.array_equal(aids, raids):
        raise CrossValError(f"{predictor} and {reference} were scored on different articles")
    return seeded_cluster_t(table - ref.mean(axis=1, keepdims=True), level=level)


def summarize(scores: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], archs: Sequence[str],
              level: float) -> list[dict[str, Any]]:
    """One row per predictor (baselines, the per-fold best baseline, models): pooled per-article means with
    intervals, and for models the paired delta to the best baseline with seed SD and Holm-adjusted p."""
    baselines = sorted({r["predictor"] for r in scores if r["kind"] == "baseline" and r["predictor"] != BEST_BASELINE})
    chosen = [r["best_baseline"] for r in runs if r["predictor"] == "baselines" and r["fraction"] == 1.0]
    rows: list[dict[str, Any]] = []
    for p in [*baselines, BEST_BASELINE, *archs]:
        kind = "model" if p in archs else "baseline"
        row: dict[str, Any] = {"predictor": p, "kind": kind}
        for m in METRICS:
            _, table = score_table(scores, p, 1.0, m)
            iv = cluster_t(table.mean(axis=1), level=level)
            row[m] = {"mean": iv.mean, "low": iv.low, "high": iv.high}
        if kind == "baseline":
            row["chosen_in_folds"] = len(chosen) if p == BEST_BASELINE else chosen.count(p)
        else:
            for m in METRICS:
                d = paired_delta(scores, p, BEST_BASELINE, 1.0, m, level)
                row[f"delta_{m}"] = {"delta": d.mean, "low": d.low, "high": d.high, "p": d.p_value,
                                     "seed_sd": d.seed_sd, "df": d.df}
            mine = [r for r in runs if r["predictor"] == p and r["fraction"] == 1.0]
            epochs = [r["best_epoch"] for r in mine]
            row["epoch0_share"] = float(np.mean([e == 0 for e in epochs]))
            row["median_best_epoch"] = float(np.median(epochs))
            row["train_seconds"] = float(np.mean([r["train_seconds"] for r in mine]))
            row["inner_val_cosine"] = float(np.mean([r["inner_val_cosine"] for r in mine]))
        rows.append(row)
    models = [r for r in rows if r["kind"] == "model"]
    adjusted = holm({r["predictor"]: r["delta_cosine"]["p"] for r in models})
    for r in models:
        r["delta_cosine"]["p_holm"] = adjusted[r["predictor"]]
    return rows
