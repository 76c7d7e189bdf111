"""The cross-validation table from per-article scores (no training): pooled deltas to the per-fold best
baseline, the seed spread, Holm's p and the verdict sentence, on synthetic scores with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lvm_core.evaluation.compare import crossval_markdown, crossval_verdict
from lvm_core.evaluation.crossval import BEST_BASELINE, CrossValConfig, CrossValResult, summarize


def _scores(gain: float, n_articles: int = 12, n_seeds: int = 2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = np.random.default_rng(0)
    base = rng.normal(0.55, 0.02, n_articles)
    scores: list[dict[str, Any]] = []

    def add(pred: str, kind: str, seed: int, cos: np.ndarray) -> None:
        scores.extend({"article_id": a, "fold": a % 3, "fraction": 1.0, "predictor": pred, "kind": kind, "seed": seed,
                       "n_windows": 10, "cosine": float(c), "r@1": 0.2, "mrr": 0.4} for a, c in enumerate(cos))

    add("recency_weighted_mean", "baseline", 0, base)
    add(BEST_BASELINE, "baseline", 0, base)
    add("copy_last", "baseline", 0, base - 0.08)
    for s in range(n_seeds):
        add("good", "model", s, base + gain + rng.normal(0, 0.001, n_articles))
        add("null", "model", s, base + rng.normal(0, 0.003, n_articles))
    runs = [{"predictor": "baselines", "fraction": 1.0, "best_baseline": "recency_weighted_mean"} for _ in range(3)]
    runs += [{"predictor": p, "fraction": 1.0, "best_epoch": e, "train_seconds": 1.0, "inner_val_cosine": 0.5}
             for p in ("good", "null") for e in (0, 2, 3)]
    return scores, runs


def test_table_pools_deltas_and_applies_holm():
    scores, runs = _scores(gain=0.01)
    rows = {r["predictor"]: r for r in summarize(scores, runs, ["good", "null"], 0.95)}
    good, null = rows["good"]["delta_cosine"], rows["null"]["delta_cosine"]
    assert good["delta"] == pytest.approx(0.01, abs=0.001) and good["low"] > 0
    assert good["p"] < null["p"]  # the smaller of two p-values is doubled, the larger kept (and never below it)
    assert good["p_holm"] == pytest.approx(min(1.0, 2 * good["p"]))
    assert null["p_holm"] == pytest.approx(max(null["p"], good["p_holm"])) and null["seed_sd"] > 0
    assert rows["recency_weighted_mean"]["chosen_in_folds"] == 3 and rows["copy_last"]["chosen_in_folds"] == 0
    assert rows["good"]["epoch0_share"] == pytest.approx(1 / 3)
    verdict = crossval_verdict(list(rows.values()), 0.95)
    assert verdict.startswith("Beat the best trivial baseline") and "good" in verdict and "null" not in verdict


def test_verdict_says_plainly_when_no_model_beats_the_baseline():
    scores, runs = _scores(gain=0.0)
    rows = summarize(scores, runs, ["good", "null"], 0.95)
    assert crossval_verdict(rows, 0.95).startswith("No model beats the best trivial baseline")
    res = CrossValResult(config={**CrossValConfig().__dict__}, n_articles=12, n_windows=120, rows=rows,
                         configurations_tried=2)
    md = crossval_markdown(res, "t")
    assert "No model beats" in md and "| good |" in md and "Holm p" in md


def test_the_newest_crossval_of_a_dataset_reaches_the_report_and_the_card(tmp_path):
    """`lvm compare --folds` writes to the dataset's comparisons folder; an evaluation of any model on that
    dataset then shows the table, the verdict and the learning curve in its report and model card."""
    from lvm_core.evaluation.compare import crossval_facts
    from lvm_core.evaluation.crossval import CROSSVAL_JSON, crossval_dir, latest_crossval
    from lvm_core.evaluation.model_card.card import render_model_card
    from lvm_core.io.storage import write_json

    assert latest_crossval(tmp_path, "ds-1") is None
    scores, runs = _scores(gain=0.01)
    rows = summarize(scores, runs, ["good", "null"], 0.95)
    curve = [{"train_articles": 4.0, "fraction": 0.5, "best_baselines": ["recency_weighted_mean"],
              "delta_cosine": {"delta": 0.002, "low": -0.001, "high": 0.005},
              "delta_r@1": {"delta": 0.0, "low": -0.01, "high": 0.01}}]
    res = CrossValResult(config={**CrossValConfig().__dict__}, n_articles=12, n_windows=120, rows=rows, curve=curve,
                         curve_arch="good", configurations_tried=2)
    folder = crossval_dir(tmp_path, "ds-1", 10, 3)
    folder.mkdir(parents=True)
    write_json(folder / CROSSVAL_JSON, res.to_dict())
    (crossval_dir(tmp_path, "ds-1", 5, 1)).mkdir(parents=True)
    (crossval_dir(tmp_path, "ds-1", 5, 1) / CROSSVAL_JSON).write_text("{not json")  # half-written: skipped
    found = latest_crossval(tmp_path, "ds-1")
    assert found is not None and found[0] == folder and found[1].rows == rows
    facts = crossval_facts(*found)
    assert "Beat the best trivial baseline" in facts["text"] and "good" in facts["text"]
    card = render_model_card({"name": "lvm-amn", "version": 3, "crossval": facts})
    assert "## Cross-validated comparison of the architectures" in card
    assert "| good |" in card and "+0.0020 [\u22120.0010, +0.0050]" in card and str(folder) in card
    assert "## Other" not in card  # a known key, not dumped as an unknown fact
