"""Post-training gate beats_best_baseline: decided on the lower bound of the bootstrap delta, not the point."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from lvm_core.contracts.gates import GateThresholds
from lvm_core.data.windows import build_windows
from lvm_core.evaluation.evaluate import evaluate_predictors
from lvm_core.evaluation.gates import post_training_gates
from lvm_core.io.vectors import l2_normalize

DIM, CTX = 24, 3
N_ARTICLES, LENGTH = 16, 14
MANIFEST = {"leakage": {"article_overlap": 0, "text_hash_overlap": {"rate": 0.0}}, "oracle_recall_at_5": 1.0}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vecs, aids, cidx, texts = [], [], [], []
    for a in range(N_ARTICLES):
        walk = rng.normal(size=DIM)
        for i in range(LENGTH):
            walk = walk + 0.7 * rng.normal(size=DIM)
            vecs.append(walk.copy())
            aids.append(500 + a)
            cidx.append(i)
            texts.append(f"article {a} chunk {i}")
    v = l2_normalize(np.asarray(vecs, np.float32), dtype=None)
    aids = np.asarray(aids, np.int64)
    cidx = np.asarray(cidx, np.int32)
    hashes = np.array([hashlib.sha1(t.encode()).hexdigest() for t in texts])
    seqs = build_windows(aids, cidx, context_len=CTX)
    ids = np.unique(aids)
    splits = {
        "val": seqs.subset(np.isin(seqs.article_ids, ids[:8])),
        "test": seqs.subset(np.isin(seqs.article_ids, ids[8:])),
    }
    return v, aids, cidx, hashes, np.array(texts, dtype=object), splits


def copy_last(ctx):
    return ctx[:, -1]


def context_mean(ctx):
    return l2_normalize(ctx.mean(axis=1), dtype=None)


def _next_rows(vectors, ctx):
    rows = np.argmax(ctx[:, -1] @ vectors.T, axis=1)
    return np.minimum(rows + 1, vectors.shape[0] - 1)


def better(vectors):
    """Much closer to the true next chunk than any baseline."""
    return lambda ctx: l2_normalize(context_mean(ctx) + 2.0 * vectors[_next_rows(vectors, ctx)], dtype=None)


def tiny_mixed(vectors, aids):
    """Copy-last nudged towards the target on even articles and away on odd ones: a tiny net gain
    whose sign depends on the article, so the article bootstrap cannot tell it from 0."""

    def predict(ctx):
        nxt = _next_rows(vectors, ctx)
        sign = np.where(aids[nxt] % 2 == 0, 1.0, -0.6)[:, None]
        return l2_normalize(copy_last(ctx) + 0.15 * sign * vectors[nxt], dtype=None)

    return predict


def _gates(data, model, split_names=("val", "test"), **thresholds):
    v, aids, cidx, hashes, texts, splits = data
    preds = {"model": model, "copy_last": copy_last, "context_mean": context_mean}
    res = evaluate_predictors(preds, v, splits, aids, cidx, hashes, texts, splits=split_names)
    report = post_training_gates(res, res.model_name, MANIFEST, GateThresholds(**thresholds))
    return res, {r.name: r for r in report.results}


def test_clearly_better_model_passes(data):
    v = data[0]
    res, gates = _gates(data, better(v))
    g = gates["beats_best_baseline"]
    assert g.passed
    best, _ = res.best_baseline("val")
    assert g.value["baseline"] == best and g.value["split"] == "test"
    assert g.value["low"] > 0 and g.value["low"] <= g.value["delta"] <= g.value["high"]
    assert g.value["delta"] == pytest.approx(res.delta(best, "test")["delta"])
    assert g.threshold == 0.0
    assert best in g.detail and "test" in g.detail and "[" in g.detail
    json.dumps(g.to_dict())
    # a margin above the lower bound fails the same model
    _, strict = _gates(data, better(v), beats_baseline_margin=g.value["low"] + 1e-6)
    assert not strict["beats_best_baseline"].passed


def test_model_equal_to_a_baseline_fails(data):
    _, gates = _gates(data, copy_last)
    g = gates["beats_best_baseline"]
    assert g.value["baseline"] == "copy_last"  # the best baseline on val is the model itself
    assert (g.value["delta"], g.value["low"], g.value["high"]) == (0.0, 0.0, 0.0)
    assert not g.passed


def test_tiny_gain_whose_interval_straddles_zero_fails(data):
    v, aids = data[0], data[1]
    res, gates = _gates(data, tiny_mixed(v, aids))
    g = gates["beats_best_baseline"]
    assert g.value["baseline"] == "copy_last"
    gain = res.metrics["model"]["test"]["cosine"] - res.metrics["copy_last"]["test"]["cosine"]
    assert 0 < gain < 0.002 and g.value["delta"] == pytest.approx(gain)  # the point estimate is better
    assert g.value["low"] < 0 < g.value["high"]
    assert not g.passed


def test_without_test_split_val_is_reported(data):
    v = data[0]
    _, gates = _gates(data, better(v), split_names=("val",))
    g = gates["beats_best_baseline"]
    assert g.passed and g.value["split"] == "val"


def test_without_intervals_the_gate_fails(data):
    v, aids, cidx, hashes, texts, splits = data
    res = evaluate_predictors({"model": better(v), "copy_last": copy_last}, v, splits, aids, cidx, hashes, texts,
                              splits=("val", "test"), n_resamples=0)
    report = post_training_gates(res.metrics, "model", MANIFEST)  # a plain metrics dict, no deltas
    g = next(r for r in report.results if r.name == "beats_best_baseline")
    assert not g.passed and "no interval" in g.detail
    # the same numbers with deltas given explicitly, or the to_dict() form, are gated
    deltas = {"test": {"copy_last": {"cosine": {"delta": 0.01, "low": 0.004, "high": 0.016}}}}
    report = post_training_gates(res.metrics, "model", MANIFEST, deltas=deltas)
    assert next(r for r in report.results if r.name == "beats_best_baseline").passed
    full = evaluate_predictors({"model": better(v), "copy_last": copy_last}, v, splits, aids, cidx, hashes, texts,
                               splits=("val", "test"))
    report = post_training_gates(json.loads(json.dumps(full.to_dict())), "model", MANIFEST)
    assert next(r for r in report.results if r.name == "beats_best_baseline").passed


# --- the primary comparison, ood_kind, test evaluations: each gate failing on what it exists to catch ------

PLAIN = {  # metrics[predictor][split]: copy_last is the best baseline on val, context_mean the best on test
    "model": {"val": {"cosine": 0.60}, "test": {"cosine": 0.60}, "ood": {"cosine": 0.40}},
    "copy_last": {"val": {"cosine": 0.58}, "test": {"cosine": 0.50}, "ood": {"cosine": 0.38}},
    "context_mean": {"val": {"cosine": 0.55}, "test": {"cosine": 0.62}, "ood": {"cosine": 0.39}},
}
PLAIN_DELTAS = {"test": {"copy_last": {"cosine": {"delta": 0.10, "low": 0.08, "high": 0.12}},
                         "context_mean": {"cosine": {"delta": -0.02, "low": -0.03, "high": -0.01}}}}
SHIFT = {**MANIFEST, "splits": {"mode": "titles", "ood_kind": "shift"}}
STRATIFIED = {**MANIFEST, "splits": {"mode": "stratified", "ood_kind": "in_distribution"}}


def _plain(manifest=STRATIFIED, **kw):
    thresholds = kw.pop("thresholds", GateThresholds())
    report = post_training_gates(PLAIN, "model", manifest, thresholds, deltas=PLAIN_DELTAS, **kw)
    return {r.name: r for r in report.results}


def test_primary_comparison_uses_the_baseline_chosen_on_val_not_on_test():
    g = _plain()["beats_best_baseline"]
    assert g.value["baseline"] == "copy_last" and g.passed  # context_mean is better on test, but was not chosen
    assert "primary comparison" in g.detail and "best trivial baseline on val" in g.detail


def test_in_distribution_ood_is_not_gated_as_a_shift():
    gates = _plain(STRATIFIED)
    assert "ood_cosine" not in gates and "ood_test_gap" not in gates  # ood 0.40 would fail both
    assert gates["test_cosine"].passed


def test_shifted_ood_is_gated():
    gates = _plain(SHIFT)
    assert not gates["ood_cosine"].passed and gates["ood_cosine"].value == pytest.approx(0.40)
    assert not gates["ood_test_gap"].passed and gates["ood_test_gap"].value == pytest.approx(0.20)
    ok = _plain(SHIFT, thresholds=GateThresholds(min_ood_cosine=0.35, max_ood_test_gap=0.25))
    assert ok["ood_cosine"].passed and ok["ood_test_gap"].passed
    # a manifest written before ood_kind: its mode says it
    assert "ood_cosine" in _plain({**MANIFEST, "splits": {"mode": "ranges"}})
    assert "ood_cosine" not in _plain({**MANIFEST, "splits": {"mode": "stratified"}})


def test_test_evaluations_warn_then_fail():
    limits = GateThresholds(warn_test_evaluations=2, max_test_evaluations=4)
    assert "test_evaluations" not in _plain()  # not counted: no gate
    first = _plain(thresholds=limits, test_evaluations=1)["test_evaluations"]
    assert first.passed and "WARNING" not in first.detail
    warned = _plain(thresholds=limits, test_evaluations=3)["test_evaluations"]
    assert warned.passed and "WARNING" in warned.detail
    assert _plain(thresholds=limits, test_evaluations=4)["test_evaluations"].passed
    failed = _plain(thresholds=limits, test_evaluations=5)["test_evaluations"]
    assert not failed.passed and failed.value == 5 and failed.threshold == 4 and "fishing" in failed.detail


def test_old_threshold_names_are_aliases():
    t = GateThresholds.from_dict({"min_val_cosine": 0.7, "max_ood_val_gap": 0.2})
    assert (t.min_test_cosine, t.max_ood_test_gap) == (0.7, 0.2)
    assert not _plain(thresholds=t)["test_cosine"].passed  # 0.60 < 0.7: the alias gates the test split
    with pytest.raises(ValueError, match="old name"):
        GateThresholds.from_dict({"min_val_cosine": 0.7, "min_test_cosine": 0.6})
    with pytest.raises(ValueError, match="unknown"):
        GateThresholds.from_dict({"min_tset_cosine": 0.7})


def test_leakage_gate_reads_the_val_test_overlap():
    assert _plain()["leakage"].passed
    leaky = {**STRATIFIED, "leakage_raw": {"article_overlap": 0, "text_hash_overlap": {"rate": 0.0},
                                           "val_test": {"test_rows": 20, "text_hash_overlap": 2, "rate": 0.1}}}
    g = _plain(leaky)["leakage"]
    assert not g.passed and g.value == pytest.approx(0.1)
