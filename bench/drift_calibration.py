"""Calibrate the drift monitor on a built dataset: how often do new articles of the same snapshot alert, and
how often does a real shift?

Each draw compares two disjoint random sets of articles of the dataset (every split: all are articles of one
snapshot), each read as the monitor reads them (``max_per_group`` windows per article), with the monitor's
defaults (lvm_core.drift.report.drift_report). Shifts: a topic held out by title (the current side's articles all
match ``--topic``, the reference's none), and every vector of the current side rotated by ``--angle`` degrees
towards a fixed random direction (what another encoder or a broken preprocessing does). The row-level
analysis the monitor used before (every window a unit, row-level CV and permutations) is run on the same
draws for comparison.

    .venv/bin/python bench/drift_calibration.py lvm-data/datasets/enwiki-a53f4648dec4 --draws 200

Prints, per condition, the alert rate with its exact (Clopper-Pearson) 95 % interval and the quantiles of
the AUC. Not part of the test suite (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import beta

from lvm_core.data.build.load import load_dataset
from lvm_core.data.windows import SequenceSet, gather
from lvm_core.drift.features import DEFAULT_MAX_PER_GROUP, sample_groups
from lvm_core.drift.mmd import DEFAULT_PERMUTATIONS
from lvm_core.drift.report import DEFAULT_ALPHA, DEFAULT_THRESHOLD_AUC, drift_report
from lvm_core.drift.samples import load_current_sample, load_reference_sample
from lvm_core.io.vectors import l2_normalize

GEOGRAPHY = (r"Angola|Alabama|Alaska|Algeria|Andorra|Albania|Afghanistan|Azerbaijan|Aruba|Alberta|^Asia$|"
             r"Atlantic Ocean")


def interval(k: int, n: int) -> str:
    lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    return f"{k}/{n} = {k / n:.1%} (95% CI {lo:.1%}-{hi:.1%})"


def rotate(ctx: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Every vector turned by `angle` degrees towards one fixed random unit direction orthogonal to it."""
    d = l2_normalize(rng.standard_normal(ctx.shape[-1]), dtype=None)
    v = ctx.astype(np.float64)
    ortho = l2_normalize(d - (v @ d)[..., None] * v, dtype=None)
    t = np.deg2rad(angle)
    return (np.cos(t) * v + np.sin(t) * ortho).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--groups", type=int, nargs="+", default=[10, 20], help="articles per side")
    ap.add_argument("--per-group", type=int, default=DEFAULT_MAX_PER_GROUP)
    ap.add_argument("--angle", type=float, default=30.0)
    ap.add_argument("--topic", default=GEOGRAPHY, help="title regex of the held-out topic")
    ap.add_argument("--old-draws", type=int, default=30, help="draws of the row-level analysis (slower)")
    args = ap.parse_args()

    ds = load_dataset(args.dataset, require_ready=False)
    seqs = SequenceSet.concat([s for s in ds.sequences.values() if len(s)])
    titles = dict(zip(*(pq.read_table(args.dataset / "articles.parquet", columns=["article_id", "title"])
                        .column(c).to_pylist() for c in ("article_id", "title")), strict=True))
    ids = np.unique(seqs.article_ids)
    topic = np.array([a for a in ids if re.search(args.topic, titles.get(int(a), ""))])
    others = np.setdiff1d(ids, topic)
    print(f"{args.dataset.name}: {len(ids)} articles with windows, {len(topic)} match the topic; "
          f"{args.per_group} windows per article, threshold AUC {DEFAULT_THRESHOLD_AUC}, alpha "
          f"{DEFAULT_ALPHA}, {DEFAULT_PERMUTATIONS} permutations")

    def sample(articles: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(np.isin(seqs.article_ids, articles))
        rows = rows[sample_groups(seqs.article_ids[rows], None, args.per_group, rng)]
        ctx, _ = gather(ds.vectors, seqs, rows)
        return ctx, seqs.article_ids[rows]

    def run(name: str, draw, g: int) -> None:
        alerts, aucs, t0 = 0, list[float](), time.perf_counter()
        for i in range(args.draws):
            rng = np.random.default_rng(i)
            (ref, rg), (cur, cg) = draw(rng, g)
            r = drift_report(ref, cur, rg, cg, seed=i)
            alerts += r.drifted
            aucs.append(float(r.auc or 0.0))
        q = np.quantile(aucs, [0.5, 0.95, 0.99])
        print(f"{name:<34} G={g:<3} drift {interval(alerts, args.draws)}; AUC median {q[0]:.3f}, "
              f"q95 {q[1]:.3f}, q99 {q[2]:.3f}, max {max(aucs):.3f}  [{(time.perf_counter() - t0) / args.draws:.2f} s/draw]")

    def same(rng: np.random.Generator, g: int):
        pick = rng.choice(ids, 2 * g, replace=False)
        return sample(pick[:g], rng), sample(pick[g:], rng)

    def held_topic(rng: np.random.Generator, g: int):
        g_cur = min(g, len(topic))
        return sample(rng.choice(others, g, replace=False), rng), sample(rng.choice(topic, g_cur, replace=False), rng)

    def rotated(rng: np.random.Generator, g: int):
        (ref, rg), (cur, cg) = same(rng, g)
        return (ref, rg), (rotate(cur, args.angle, np.random.default_rng(12345)), cg)

    for g in args.groups:
        run("new articles, same snapshot", same, g)
        if len(topic) >= 5:
            run(f"held-out topic ({len(topic)} articles)", held_topic, g)
        run(f"vectors rotated {args.angle:g} degrees", rotated, g)

    # the old analysis on the same kind of draw: every window a unit, all windows of each article
    g = args.groups[0]
    alerts, old_aucs = 0, list[float]()
    for i in range(args.old_draws):
        rng = np.random.default_rng(i)
        pick = rng.choice(ids, 2 * g, replace=False)
        ref, _ = gather(ds.vectors, seqs, np.flatnonzero(np.isin(seqs.article_ids, pick[:g])))
        cur, _ = gather(ds.vectors, seqs, np.flatnonzero(np.isin(seqs.article_ids, pick[g:])))
        r = drift_report(ref, cur, seed=i, n_permutations=200, max_groups=500, max_per_group=None)
        alerts += r.drifted
        old_aucs.append(float(r.auc or 0.0))
    print(f"{'row-level (old), same snapshot':<34} G={g:<3} drift {interval(alerts, args.old_draws)}; AUC median "
          f"{np.median(old_aucs):.3f}, min {min(old_aucs):.3f}")

    # the monitor as `lvm monitor-drift --current <dataset folder> --dataset <dataset folder>` runs it
    val = load_reference_sample(args.dataset, require_ready=False)
    held = load_current_sample(args.dataset)
    print("val vs test+ood of the dataset:", drift_report(val.contexts, held.contexts, val.groups,
                                                                 held.groups).summary())


if __name__ == "__main__":
    main()
