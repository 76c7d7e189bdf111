"""The evaluation on a dataset built by the real build flow: an aligned bank, the indexing of the data, baselines side by side."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.evaluation.evaluate import evaluate_predictors


@pytest.mark.slow
def test_evaluate_baselines_on_a_real_built_dataset(small_dataset, tmp_path):
    """Real sample data: the bank is aligned (oracle), the indexing matches the data, baselines compare."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.evaluation.report import write_report
    from lvm_core.models.baselines.recency import RecencyWeightedMean
    from lvm_core.models.baselines.simple import ContextMean, CopyLast
    from lvm_core.models.predict import mean_cosine

    ds = load_dataset(small_dataset)
    train = ds.sequences["train"]
    predictors = {
        "recency_weighted_mean": RecencyWeightedMean().fit(ds.vectors, train),
        "copy_last": CopyLast(),
        "context_mean": ContextMean(),
    }
    # every split that has windows (train too: real windows, cheap to check the metrics' wiring on)
    seqs = {s: ds.sequences[s] for s in ("val", "ood") if len(ds.sequences[s])}
    seqs["train"] = train.subset(np.arange(0, len(train), 3))
    res = evaluate_predictors(
        predictors,
        ds.vectors,
        seqs,
        ds.article_ids,
        ds.chunk_index,
        ds.text_hash,
        ds.texts,
        splits=tuple(seqs),
        article_bins=ds.article_bins(),
    )
    # the aligned bank: the build's oracle re-encoded eval and train target texts (the self-query one cannot fail)
    oracle = ds.manifest.oracle
    assert oracle is not None and oracle.recall >= 0.97 and oracle.misaligned == 0 and oracle.train_sample_size
    assert ds.manifest.leakage_raw is not None and ds.manifest.leakage_raw.val_test is not None
    print(f"oracle: recall@5 {oracle.recall:.4f}, misaligned {oracle.misaligned}, min cos {oracle.min_cos:.5f}; "
          f"val-test overlap {ds.manifest.leakage_raw.val_test}")
    for s, w in seqs.items():
        cl = res.metrics["copy_last"][s]
        assert res.offset_sweep["copy_last"][s][-1] == pytest.approx(1.0, abs=1e-5)
        assert cl["offset_peak_k"] == -1
        # cos(copy-last, target) is the data direction's last slot, and matches the baseline module
        assert cl["cosine"] == pytest.approx(res.data_direction[s][-1], abs=1e-5)
        assert cl["cosine"] == pytest.approx(mean_cosine(predictors["copy_last"], ds.vectors, w), abs=1e-5)
        assert cl["margin"] == pytest.approx(cl["cosine"] - 1.0, abs=1e-5)
        assert cl["ablation_repeat_padded"] == pytest.approx(0.0, abs=1e-6)
        assert res.metrics["context_mean"][s]["ablation_reversed"] == pytest.approx(0.0, abs=1e-5)
        for p in predictors:
            m = res.metrics[p][s]
            assert 0.0 <= m["r@1"] <= m["r@5"] <= m["r@10"] <= 1.0
            # above chance on train's many windows; a one-article split (ood here) can fall below it
            assert (0.5 if s == "train" else 0.0) < m["contrastive_acc"] <= 1.0, (p, s, m["contrastive_acc"])
    paths = write_report(res, tmp_path, "baselines on the sample", {"snapshot_id": ds.manifest.snapshot_id})
    assert "copy_last" in paths["html"].read_text()
