"""Evaluation metrics on hand-made vectors with known answers, and evaluate_predictors end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.windows import SequenceSet, build_windows
from lvm_core.evaluation.evaluate import evaluate_predictors
from lvm_core.evaluation.inputs import EvaluationError, check_windows, predict_rows
from lvm_core.evaluation.metrics.ablations import ablation_contexts, ablations
from lvm_core.evaluation.metrics.breakdown import neighbor_table
from lvm_core.evaluation.metrics.contrastive import contrastive_accuracy
from lvm_core.evaluation.metrics.cosine import cosine_to_target, margin_vs_last
from lvm_core.evaluation.metrics.offsets import offset_sweep
from lvm_core.evaluation.metrics.retrieval import retrieval_metrics, within_article_metrics
from lvm_core.evaluation.metrics.rollout import rollout, rollout_mask
from lvm_core.evaluation.result import INTERVAL_METRICS, EvaluationResult, reporting_split
from lvm_core.io.parquet_rows import ColumnRows
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.predict import predict_windows
from tests.fixtures.vectors import chunk_table

DIM = 24
CTX = 3
LENGTHS = (12, 9, 7, 15, 6, 10, 8, 11)


def copy_last(ctx):
    return ctx[:, -1]


def context_mean(ctx):
    return l2_normalize(ctx.mean(axis=1), dtype=None)


def recency(ctx):
    w = 2.0 ** np.arange(ctx.shape[1])  # order-sensitive: the last slot weighs most
    return l2_normalize(np.einsum("bcd,c->bd", ctx, w), dtype=None)


def make_shift(vectors):
    """Test double: finds ctx[-1]'s row and returns the next row's vector (the true next chunk)."""

    def predict(ctx):
        rows = np.argmax(ctx[:, -1] @ vectors.T, axis=1)
        return vectors[np.minimum(rows + 1, vectors.shape[0] - 1)]

    return predict


def cos_rows(a, b):
    return np.sum(l2_normalize(a, dtype=None) * l2_normalize(b, dtype=None), axis=1)


@pytest.fixture(scope="module")
def data():
    v, aids, cidx, hashes, texts = chunk_table(LENGTHS, DIM, noise=0.6, walk_step=0.7)
    seqs = build_windows(aids, cidx, context_len=CTX)
    return v, aids, cidx, hashes, texts, seqs


# --- per-metric known answers -----------------------------------------------------------------------


def test_perfect_predictor_scores_perfectly(data):
    v, aids, cidx, hashes, _, seqs = data
    pred = predict_windows(make_shift(v), v, seqs, unit=True)
    np.testing.assert_allclose(pred, v[seqs.target_rows], atol=1e-6)
    np.testing.assert_allclose(cosine_to_target(pred, v, seqs), 1.0, atol=1e-6)
    bank = ChunkBank(v, aids, hashes)
    r = retrieval_metrics(pred, bank, seqs)
    assert r["r@1"] == 1.0 and r["mrr"] == 1.0 and r["median_rank"] == 1.0
    w = within_article_metrics(pred, bank, seqs)
    assert w == {"r@1": 1.0, "r@5": 1.0, "mrr": 1.0}
    assert contrastive_accuracy(pred, v[seqs.target_rows]) == 1.0
    sweep = offset_sweep(pred, v, seqs, aids, cidx, CTX)
    assert max(sweep, key=lambda k: sweep[k]["cosine"]) == 0
    assert sweep[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert all(sweep[k]["cosine"] < 0.9 for k in sweep if k != 0)


def test_offset_sweep_indexing_copy_last_peaks_at_minus_one(data):
    v, aids, cidx, _, _, seqs = data
    pred = predict_windows(copy_last, v, seqs, unit=True)
    sweep = offset_sweep(pred, v, seqs, aids, cidx, CTX)
    assert sorted(sweep) == list(range(-CTX, 4))
    assert sweep[-1]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert sweep[0]["cosine"] < 0.9
    # every context offset is computed from exactly the context slot it names (k = -ctx is ctx[0])
    for k in range(-CTX, 0):
        want = cos_rows(pred, v[seqs.context_rows[:, CTX + k]]).mean()
        assert sweep[k]["cosine"] == pytest.approx(want, abs=1e-6)
        assert sweep[k]["n"] == len(seqs)
    assert sweep[0]["cosine"] == pytest.approx(cos_rows(pred, v[seqs.target_rows]).mean(), abs=1e-6)
    # k > 0 counts only windows with that many chunks after the target in the same article
    n_after = np.array([LENGTHS[a - 100] - 1 - c for a, c in zip(seqs.article_ids, seqs.target_chunk_index)])
    for k in (1, 2, 3):
        assert sweep[k]["n"] == int((n_after >= k).sum())
        sel = n_after >= k
        want = cos_rows(pred[sel], v[seqs.target_rows[sel] + k]).mean()
        assert sweep[k]["cosine"] == pytest.approx(want, abs=1e-6)


def test_offset_sweep_never_reads_across_articles(data):
    v, aids, cidx, _, _, seqs = data
    pred = predict_windows(copy_last, v, seqs, unit=True)
    sweep = offset_sweep(pred, v, seqs, aids, cidx, ctx=CTX + 2)  # wider than the context
    first = seqs.target_chunk_index == CTX  # windows starting at the article's first chunk
    assert sweep[-CTX - 1]["n"] == len(seqs) - int(first.sum())
    assert sweep[-CTX - 2]["n"] == len(seqs) - int(first.sum()) - int((seqs.target_chunk_index == CTX + 1).sum())


def test_margin_vs_last(data):
    v, _, _, _, _, seqs = data
    pred = predict_windows(copy_last, v, seqs, unit=True)
    want = cos_rows(v[seqs.context_rows[:, -1]], v[seqs.target_rows]) - 1.0
    np.testing.assert_allclose(margin_vs_last(pred, v, seqs), want, atol=1e-6)
    perfect = predict_windows(make_shift(v), v, seqs, unit=True)
    assert (margin_vs_last(perfect, v, seqs) > 0).all()


def test_retrieval_metrics_exclude_context_rows(data):
    v, aids, _, hashes, _, seqs = data
    bank = ChunkBank(v, aids, hashes)
    pred = predict_windows(copy_last, v, seqs, unit=True)
    r = retrieval_metrics(pred, bank, seqs)
    # brute force: rank of the target among all rows but the context ones
    s = pred @ v.T
    ranks = []
    for i in range(len(seqs)):
        keep = np.ones(v.shape[0], bool)
        keep[seqs.context_rows[i]] = False
        keep[seqs.target_rows[i]] = False
        ranks.append(1 + int((s[i, keep] >= s[i, seqs.target_rows[i]] - 1e-6).sum()))
    ranks = np.array(ranks)
    assert r["r@1"] == pytest.approx(np.mean(ranks == 1))
    assert r["r@5"] == pytest.approx(np.mean(ranks <= 5))
    assert r["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert r["median_rank"] == pytest.approx(np.median(ranks))
    assert r["r@1"] > 0  # the context chunk itself (score 1) is not in the way


def test_within_article_candidates_are_the_article_minus_context(data):
    v, aids, _, hashes, _, seqs = data
    bank = ChunkBank(v, aids, hashes)
    pred = predict_windows(context_mean, v, seqs, unit=True)
    got = within_article_metrics(pred, bank, seqs)
    ranks = []
    for i in range(len(seqs)):
        cand = np.flatnonzero(aids == seqs.article_ids[i])
        cand = np.setdiff1d(cand, seqs.context_rows[i])
        s = pred[i] @ v[cand].T
        t = pred[i] @ v[seqs.target_rows[i]]
        ranks.append(1 + int((s >= t - 1e-6).sum()) - 1)  # minus the target itself
    ranks = np.array(ranks)
    assert got["r@1"] == pytest.approx(np.mean(ranks == 1))
    assert got["mrr"] == pytest.approx(np.mean(1 / ranks))


def test_contrastive_accuracy_known_answers(data):
    v, _, _, hashes, _, seqs = data
    t = v[seqs.target_rows]
    assert contrastive_accuracy(t, t) == 1.0
    assert contrastive_accuracy(t, t, max_negatives=7, seed=3) == 1.0  # sampled negatives
    assert contrastive_accuracy(-t, t) == 0.0  # the true target is the farthest of all
    # hand-made: 3 targets on axes, prediction between target 0 and 1 but nearer 0
    targets = np.eye(3, dtype=np.float32)
    pred = l2_normalize(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.9], [0.0, 1.0, 0.2]], np.float32))
    # window 0: cos 0.89 to its target, 0.45 and 0 to the others -> share 1
    # window 1: cos 0.74 to its target, 0 and 0.67 to the others -> share 1
    # window 2: cos 0.20 to its target, 0 and 0.98 to the others -> share 1/2
    assert contrastive_accuracy(pred, targets) == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    # duplicates of the true text are not negatives
    dup = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    assert contrastive_accuracy(dup, dup) < 1.0
    assert contrastive_accuracy(dup, dup, target_keys=np.array(["a", "a", "b"])) == 1.0
    # sampled mode is deterministic for a seed
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 8))
    tg = rng.normal(size=(50, 8)) + p
    a = contrastive_accuracy(p, tg, max_negatives=10, seed=1)
    assert 0.0 < a < 1.0
    assert a == contrastive_accuracy(p, tg, max_negatives=10, seed=1)
    full = contrastive_accuracy(p, tg)
    assert abs(a - full) < 0.15  # 10 sampled negatives estimate the 49-negative share


def test_ablations(data):
    v, _, _, _, _, seqs = data
    mean_abl = ablations(context_mean, v, seqs, seed=0)
    assert mean_abl["shuffled"] == pytest.approx(0.0, abs=1e-6)
    assert mean_abl["reversed"] == pytest.approx(0.0, abs=1e-6)
    rec = ablations(recency, v, seqs, seed=0)
    assert rec["reversed"] < -0.01  # the order-sensitive predictor notices a reversed context
    assert rec["shuffled"] < 0
    cl = ablations(copy_last, v, seqs, seed=0)
    assert cl["repeat_padded"] == pytest.approx(0.0, abs=1e-6)
    # only dropping the last slot matters to copy-last: it then copies ctx[-2]
    tgt = v[seqs.target_rows]
    drop_last = cos_rows(v[seqs.context_rows[:, -2]], tgt).mean() - cos_rows(v[seqs.context_rows[:, -1]], tgt).mean()
    assert cl[f"leave_one_out_pos{CTX - 1}"] == pytest.approx(drop_last, abs=1e-6)
    assert cl["leave_one_out"] == pytest.approx(drop_last / CTX, abs=1e-6)
    # the shuffle is a real permutation of every window and depends only on the seed
    alt = ablation_contexts(seqs, seed=5)
    assert (alt["shuffled"] != seqs.context_rows).any(axis=1).all()
    np.testing.assert_array_equal(np.sort(alt["shuffled"], axis=1), np.sort(seqs.context_rows, axis=1))
    np.testing.assert_array_equal(alt["shuffled"], ablation_contexts(seqs, seed=5)["shuffled"])


def test_rollout_with_perfect_shift_predictor(data):
    v, aids, cidx, _, _, seqs = data
    assert rollout(make_shift(v), v, seqs, aids, cidx, horizon=3) == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    mask = rollout_mask(seqs, aids, cidx, 3)
    n_after = np.array([LENGTHS[a - 100] - 1 - c for a, c in zip(seqs.article_ids, seqs.target_chunk_index)])
    np.testing.assert_array_equal(mask, n_after >= 2)
    # copy-last fed back keeps predicting ctx[-1]: step h compares it with the chunk at target+h-1
    got = rollout(copy_last, v, seqs, aids, cidx, horizon=3)
    last = v[seqs.context_rows[mask, -1]]
    want = [cos_rows(last, v[seqs.target_rows[mask] + h]).mean() for h in range(3)]
    assert got == pytest.approx(want, abs=1e-6)


def test_neighbor_table_rows(data):
    v, aids, _, hashes, texts, seqs = data
    bank = ChunkBank(v, aids, hashes)
    pred = predict_windows(make_shift(v), v, seqs, unit=True)
    rows = neighbor_table(pred, bank, texts, seqs, n_samples=4, k=3, seed=1)
    assert len(rows) == 4
    for r in rows:
        i = r["window"]
        assert r["target"] == texts[seqs.target_rows[i]]
        assert r["context_last"] == texts[seqs.context_rows[i, -1]]
        assert r["neighbors"][0]["text"] == r["target"] and r["neighbors"][0]["is_target"]
        assert r["neighbors"][0]["score"] == pytest.approx(1.0, abs=1e-6)
        assert len(r["neighbors"]) == 3 and r["target_rank"] == 1
    assert [r["window"] for r in rows] == [
        r["window"] for r in neighbor_table(pred, bank, texts, seqs, 4, 3, seed=1)
    ]


def test_neighbor_table_reads_only_the_texts_it_shows(data, tmp_path):
    # the texts as evaluation gets them from a dataset: a lazy column of chunks.parquet, 4 rows per row group
    v, aids, _, hashes, texts, seqs = data
    path = tmp_path / "chunks.parquet"
    pq.write_table(pa.table({"text": list(texts)}), path, row_group_size=4)
    lazy = ColumnRows(path, "text")
    bank = ChunkBank(v, aids, hashes)
    pred = predict_windows(make_shift(v), v, seqs, unit=True)
    assert neighbor_table(pred, bank, lazy, seqs, 4, 3, seed=1) == neighbor_table(pred, bank, texts, seqs, 4, 3, seed=1)
    n_groups = pq.ParquetFile(path).metadata.num_row_groups
    assert 0 < lazy.reads < n_groups and len(lazy._cache) <= 4 * (2 + 3)  # a few rows, not the column


def test_bad_inputs(data):
    v, aids, cidx, _, _, seqs = data
    # rows 9, 10, 11 are the last chunks of article 100; row 12 is chunk 0 of article 101
    crossing = SequenceSet(np.array([[9, 10, 11]]), np.array([12]), np.array([100]), np.array([12]))
    with pytest.raises(EvaluationError, match="1 of 1 windows are not"):
        check_windows(crossing, aids, cidx)
    with pytest.raises(EvaluationError, match="windows are not"):
        evaluate_predictors(
            {"m": copy_last}, v, {"val": crossing}, aids, cidx, aids.astype(str), aids.astype(str), splits=("val",)
        )
    with pytest.raises(EvaluationError, match="out of range"):
        check_windows(
            SequenceSet(np.array([[0, 1, 2]]), np.array([len(aids)]), np.array([100]), np.array([3])), aids, cidx
        )
    with pytest.raises(EvaluationError, match="predictor output"):
        predict_rows(lambda ctx: ctx[:, -1, :5], v, seqs.context_rows)
    with pytest.raises(EvaluationError, match="NaN"):
        predict_rows(lambda ctx: ctx[:, -1] * np.nan, v, seqs.context_rows)
    with pytest.raises(EvaluationError, match="no sequences for split"):
        evaluate_predictors(
            {"m": copy_last},
            v,
            {"val": seqs},
            aids,
            cidx,
            np.zeros(len(aids)).astype(str),
            np.zeros(len(aids)).astype(str),
        )


# --- evaluate_predictors ----------------------------------------------------------------------------


def _split(seqs, aids_keep):
    return seqs.subset(np.isin(seqs.article_ids, aids_keep))


def test_evaluate_predictors_end_to_end(data):
    v, aids, cidx, hashes, texts, seqs = data
    splits = {"val": _split(seqs, [100, 101, 102, 103]), "ood": _split(seqs, [104, 105, 106, 107])}
    preds = {"model": make_shift(v), "copy_last": copy_last, "context_mean": context_mean, "recency": recency}
    bins = {100: 0, 101: 0, 102: 1, 103: 1, 104: 0, 105: 1, 106: 1}  # 107 has no bin
    res = evaluate_predictors(preds, v, splits, aids, cidx, hashes, texts, article_bins=bins, seed=0)
    assert res.predictors == list(preds) and res.model_name == "model"
    for p in preds:
        for s in ("val", "ood"):
            m = res.metrics[p][s]
            assert m["n_windows"] == len(splits[s])
            for key in (
                "cosine",
                "margin",
                "r@1",
                "r@5",
                "r@10",
                "mrr",
                "median_rank",
                "within_r@1",
                "contrastive_acc",
                "ablation_shuffled",
                "ablation_leave_one_out",
                "rollout_h3",
            ):
                assert np.isfinite(m[key]), (p, s, key)
    m = res.metrics["model"]["val"]
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6) and m["r@1"] == 1.0 and m["contrastive_acc"] == 1.0
    assert res.metrics["model"]["ood"]["offset_peak_k"] == 0
    assert res.metrics["copy_last"]["val"]["offset_peak_k"] == -1
    assert res.offset_sweep["copy_last"]["val"][-1] == pytest.approx(1.0, abs=1e-6)
    assert res.offset_counts["val"][-CTX] == len(splits["val"])
    assert not hasattr(res, "oracle_recall")  # the self-query oracle cannot fail: not recorded
    assert len(res.data_direction["val"]) == CTX
    assert res.neighbors["val"] and res.neighbors["val"][0]["neighbors"][0]["is_target"]
    # per-bin breakdown: windows of unbinned article 107 are left out
    assert set(res.metrics_by_bin["copy_last"]["ood"]) == {0, 1}
    assert sum(res.bin_counts["ood"].values()) == len(splits["ood"]) - int((splits["ood"].article_ids == 107).sum())
    cl = res.metrics_by_bin["copy_last"]["val"]
    sel = np.isin(splits["val"].article_ids, [102, 103])
    want = cos_rows(v[splits["val"].context_rows[sel, -1]], v[splits["val"].target_rows[sel]]).mean()
    assert cl[1] == pytest.approx(want, abs=1e-6)
    # baselines and tables
    name, val = res.best_baseline("val", "cosine")
    assert name != "model"
    assert val == max(res.metrics[p]["val"]["cosine"] for p in preds if p != "model")
    assert res.best_baseline("val", "median_rank")[1] == min(
        res.metrics[p]["val"]["median_rank"] for p in preds if p != "model"
    )
    assert res.best_baseline("val", exclude=["model", name])[0] != name
    table = res.summary_table()
    assert len(table) == len(preds) * 2
    assert set(table[0]) >= {"predictor", "split", "cosine", "margin", "r@5", "mrr", "contrastive_acc"}
    # JSON round trip
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    back = EvaluationResult.from_dict(d)
    assert back.offset_sweep["copy_last"]["val"][-1] == pytest.approx(1.0, abs=1e-6)
    assert back.best_baseline("val") == (name, pytest.approx(val))


def test_evaluate_predictors_same_windows_and_subsampling(data):
    v, aids, cidx, hashes, texts, seqs = data
    seen: dict[str, list] = {"a": [], "b": []}

    def recorder(key):
        def predict(ctx):
            seen[key].append(ctx.copy())
            return ctx[:, -1]

        return predict

    res = evaluate_predictors(
        {"a": recorder("a"), "b": recorder("b")},
        v,
        {"val": seqs},
        aids,
        cidx,
        hashes,
        texts,
        splits=("val",),
        max_windows=10,
        seed=3,
    )
    assert res.metrics["a"]["val"]["n_windows"] == 10
    assert len(seen["a"]) == len(seen["b"])
    for x, y in zip(seen["a"], seen["b"]):
        np.testing.assert_array_equal(x, y)
    assert res.metrics["a"]["val"] == pytest.approx(
        {k: v_ for k, v_ in res.metrics["b"]["val"].items() if k != "seconds"}
        | {"seconds": res.metrics["a"]["val"]["seconds"]}
    )


def test_evaluate_predictors_empty_split_and_predict_objects(data):
    v, aids, cidx, hashes, texts, seqs = data

    class Obj:
        def predict(self, ctx):
            return ctx[:, -1]

    empty = seqs.subset(slice(0, 0))
    res = evaluate_predictors(
        {"m": Obj(), "b": context_mean}, v, {"val": seqs, "ood": empty}, aids, cidx, hashes, texts
    )
    assert res.metrics["m"]["ood"] == {"n_windows": 0}
    assert res.metrics["m"]["val"]["offset_peak_k"] == -1
    assert json.dumps(res.to_dict(), allow_nan=False)


def test_evaluate_predictors_intervals_and_deltas(data):
    v, aids, cidx, hashes, texts, seqs = data
    splits = {"val": _split(seqs, [100, 101, 102, 103]), "test": _split(seqs, [104, 105, 106, 107])}
    preds = {"model": make_shift(v), "copy_last": copy_last, "same_as_copy_last": copy_last}
    res = evaluate_predictors(preds, v, splits, aids, cidx, hashes, texts, splits=("val", "test"), n_resamples=500)
    assert res.config["bootstrap"] == {
        "unit": "article", "n_resamples": 500, "level": 0.95, "seed": 0, "n_articles": {"val": 4, "test": 4},
        "method": "cluster_t",
    }
    for p in preds:
        for s in ("val", "test"):
            for name in INTERVAL_METRICS:
                iv = res.intervals[p][s][name]
                assert iv["mean"] == pytest.approx(res.metrics[p][s][name]), (p, s, name)
                assert iv["low"] <= iv["mean"] + 1e-12 and iv["mean"] <= iv["high"] + 1e-12, (p, s, name)
    # deltas are model − baseline on the same windows; a predictor equal to the model's baseline is [0, 0]
    assert set(res.deltas["test"]) == {"copy_last", "same_as_copy_last"}
    d = res.delta("copy_last", "test")
    want = res.metrics["model"]["test"]["cosine"] - res.metrics["copy_last"]["test"]["cosine"]
    assert d["delta"] == pytest.approx(want) and d["low"] > 0  # the perfect predictor is clearly better
    assert res.deltas["test"]["copy_last"]["r@1"]["delta"] > 0
    lo, hi = res.interval("copy_last", "test")
    assert lo < res.metrics["copy_last"]["test"]["cosine"] < hi
    same = evaluate_predictors({"a": copy_last, "b": copy_last}, v, splits, aids, cidx, hashes, texts, splits=("val",))
    for name in INTERVAL_METRICS:
        assert same.deltas["val"]["b"][name] == {"delta": 0.0, "low": 0.0, "high": 0.0}
    # reporting split: test where present, else val; JSON round trip keeps intervals
    assert res.reporting_split == reporting_split(res) == "test"
    assert same.reporting_split == "val" and reporting_split(("val", "ood")) == "val"
    assert reporting_split({"m": {"val": {"n_windows": 5}, "test": {"n_windows": 0}}}) == "val"
    back = EvaluationResult.from_dict(json.loads(json.dumps(res.to_dict(), allow_nan=False)))
    assert back.delta("copy_last", "test") == pytest.approx(d) and back.reporting_split == "test"
    old_style = res.to_dict()
    del old_style["intervals"], old_style["deltas"]  # results written before intervals still load
    old = EvaluationResult.from_dict(old_style)
    assert old.intervals == {} and np.isnan(old.delta("copy_last", "test")["low"])
    skipped = evaluate_predictors({"a": copy_last}, v, splits, aids, cidx, hashes, texts, splits=("val",), n_resamples=0)
    assert skipped.intervals == {} and skipped.deltas == {}


@pytest.mark.slow
def test_evaluation_at_sample_scale():
    """~11k chunks x 384-d, ~1k windows per split, 5 predictors: seconds, not minutes."""
    lengths = tuple(int(x) for x in np.random.default_rng(0).integers(60, 160, size=106))
    v, aids, cidx, hashes, texts = chunk_table(lengths, 384, noise=0.6, walk_step=0.7, seed=1)
    seqs = build_windows(aids, cidx, context_len=5)
    ids = np.unique(aids)
    splits = {
        "val": seqs.subset(np.isin(seqs.article_ids, ids[:10])),
        "ood": seqs.subset(np.isin(seqs.article_ids, ids[10:20])),
    }
    preds = {
        "model": recency,
        "copy_last": copy_last,
        "mean": context_mean,
        "recency": recency,
        "ridge_like": context_mean,
    }
    res = evaluate_predictors(preds, v, splits, aids, cidx, hashes, texts)
    assert res.metrics["copy_last"]["val"]["n_windows"] > 500
