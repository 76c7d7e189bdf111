"""The embed step's statistics summed over shards."""

from __future__ import annotations

import pytest


def test_embed_stats_of_shards_sum_and_keep_the_encoders_agreement():
    from lvm_core.data.build.embed import sum_embed_stats

    agreement = {"mean": 0.9945, "median": 0.9947, "min": 0.9896, "n": 256}
    parts = [
        {"n_total": 10, "n_unique": 9, "n_reused": 4, "n_encoded": 5, "seconds_encoding": 1.0, "agreement": agreement},
        {"n_total": 6, "n_unique": 6, "n_reused": 1, "n_encoded": 5, "seconds_encoding": 1.5, "agreement": agreement},
    ]
    out = sum_embed_stats(parts)
    assert (out["n_total"], out["n_unique"], out["n_reused"], out["n_encoded"]) == (16, 15, 5, 10)
    assert out["chunks_per_second"] == pytest.approx(4.0) and out["agreement"] == agreement
    assert "agreement" not in sum_embed_stats([{k: v for k, v in parts[0].items() if k != "agreement"}])
