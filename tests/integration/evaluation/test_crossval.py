"""Grouped cross-validation on the small real dataset: fold layout, one tiny run of the compare flow (3 folds,
1 seed, 1 epoch, amn only, one learning-curve fraction), the CLI's bad-input exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lvm_core.evaluation.crossval import CrossValConfig, CrossValError, article_folds, subsample_articles


def test_every_article_is_test_once_and_inner_val_is_the_next_fold():
    aids = np.repeat(np.arange(100, 123), 7)
    folds = article_folds(aids, 5, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(100, 123))
    for f in folds:
        assert np.array_equal(f.inner_val, folds[(f.index + 1) % 5].test)
        parts = [set(f.test), set(f.inner_val), set(f.inner_train)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(range(100, 123))
    assert [f.test.tolist() for f in article_folds(aids, 5, seed=3)] == [f.test.tolist() for f in folds]
    with pytest.raises(CrossValError, match="cannot fill"):
        article_folds(aids, 24, seed=0)


def test_learning_curve_subsets_are_nested():
    arts = np.arange(40)
    small, half = subsample_articles(arts, 0.25, 1), subsample_articles(arts, 0.5, 1)
    assert small.size == 10 and half.size == 20 and set(small) <= set(half)
    with pytest.raises(CrossValError, match="fractions"):
        CrossValConfig(curve_fractions=(1.0,)).check()
    with pytest.raises(CrossValError, match="folds"):
        CrossValConfig(folds=2).check()


def test_compare_flow_cross_validates_every_article_once(small_dataset: Path, session_data_dir: Path):
    from flows.compare import compare_architectures
    from lvm_core.data.build.load import load_dataset
    from lvm_core.evaluation.crossval import pooled_windows

    out = compare_architectures(data=str(small_dataset), archs=["amn"], folds=3, seeds=1, epochs=1,
                                curve_fractions=[0.5], jobs=1, data_dir=str(session_data_dir))
    res = json.loads((Path(out["markdown"]).parent / "crossval.json").read_text())
    ds = load_dataset(small_dataset)
    articles = np.unique(pooled_windows(ds.sequences, False).article_ids)
    for p in ("copy_last", "best_baseline", "amn"):
        scored = sorted(r["article_id"] for r in res["scores"] if r["predictor"] == p and r["fraction"] == 1.0)
        assert scored == articles.tolist()  # every article tested exactly once
    for run in (r for r in res["runs"] if r["predictor"] == "baselines"):  # best baseline = best on inner val
        assert run["best_baseline"] == max(run["inner_val_cosine"], key=run["inner_val_cosine"].get)
    amn = next(r for r in out["rows"] if r["predictor"] == "amn")
    d = amn["delta_cosine"]
    assert d["low"] <= d["delta"] <= d["high"] and d["p_holm"] == pytest.approx(d["p"])  # one model: Holm = raw
    assert 0.0 <= amn["r@1"]["mean"] <= 1.0 and 0.0 < amn["mrr"]["mean"] <= 1.0
    assert res["configurations_tried"] == 1 and out["curve_arch"] == "amn"
    assert [p["fraction"] for p in out["curve"]] == [0.5, 1.0]
    assert out["curve"][0]["train_articles"] < out["curve"][1]["train_articles"]
    md = Path(out["markdown"]).read_text()
    assert "Holm p" in md and "within-article R@1" in md and "Learning curve" in md
    assert out["learning_curve_png"] and Path(out["learning_curve_png"]).stat().st_size > 0


def test_cli_refuses_too_few_folds(small_dataset: Path):
    from flows.cli import app

    res = CliRunner().invoke(app, ["compare", "--data", str(small_dataset), "--folds", "2"])
    assert res.exit_code == 2 and "--folds must be 0 or >= 3" in res.output
