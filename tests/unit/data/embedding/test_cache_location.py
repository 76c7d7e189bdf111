"""Where a machine keeps its caches: LVM_CACHE_DIR (its own disk) when the data folder is shared; never a network mount."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvm_core.contracts.layout import cache_root, embedding_cache_dir
from lvm_core.data.embedding.cache import CacheLocationError, EmbeddingCache
from lvm_core.data.embedding.onnx import encoder_cache_dir
from lvm_core.io import storage
from tests.fixtures.embedding import cache_fingerprint


def test_caches_follow_lvm_cache_dir_else_the_data_folder(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LVM_CACHE_DIR", raising=False)
    assert embedding_cache_dir(tmp_path / "shared") == tmp_path / "shared" / "cache" / "embeddings"
    monkeypatch.setenv("LVM_CACHE_DIR", str(tmp_path / "local"))
    assert cache_root(tmp_path / "shared") == tmp_path / "local"
    assert embedding_cache_dir(tmp_path / "shared") == tmp_path / "local" / "embeddings"
    assert encoder_cache_dir(tmp_path / "shared") == tmp_path / "local" / "encoders"


def test_filesystem_type_is_read_from_the_mount_table(tmp_path: Path):
    kind = storage.filesystem_type(tmp_path / "not" / "yet")
    assert kind and kind not in storage.NETWORK_FILESYSTEMS  # the test's temp folder is on a local disk


def test_an_embedding_cache_on_a_network_mount_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(storage, "filesystem_type", lambda path: "nfs4")
    with pytest.raises(CacheLocationError, match=r"network filesystem \(nfs4\).*LVM_CACHE_DIR") as err:
        EmbeddingCache(tmp_path / "cache", cache_fingerprint())
    assert err.value.permanent and not (tmp_path / "cache").exists()
