"""The build flow pins its encoder once: a worker that cannot produce that fingerprint fails the build at once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lvm_core.data.embedding import pinned as embedding_pinned

pytestmark = pytest.mark.slow


def test_a_worker_with_other_weights_fails_the_build_before_any_embedding(tmp_path: Path, prefect_harness, monkeypatch):
    from flows.build_dataset import build_dataset

    real_pin, real_load = embedding_pinned.pin_encoder, embedding_pinned.load_pinned
    loads: list[str] = []

    def pin_elsewhere(spec, device=None):  # the coordinator's model files differ from this worker's
        pinned = real_pin(spec, device)
        return replace(pinned, fingerprint=replace(pinned.fingerprint, weights_digest="cd" * 32))

    def counted_load(pinned, cache_dir=None):
        loads.append(pinned.spec)
        return real_load(pinned, cache_dir)

    monkeypatch.setattr(embedding_pinned, "pin_encoder", pin_elsewhere)
    monkeypatch.setattr("lvm_core.data.build.embed.load_pinned", counted_load)
    with pytest.raises(embedding_pinned.PinnedEncoderError, match=r"worker .+ \(pid \d+\) has encoder .+ pinned .+weights=cdcdcdcdcdcd"):
        build_dataset(source="sample", data_dir=str(tmp_path / "data"), limit_articles=2)
    assert len(loads) == 1  # permanent: the shard was not retried
    assert not list((tmp_path / "data" / "cache").glob("embeddings/*/*")), "nothing was encoded"
