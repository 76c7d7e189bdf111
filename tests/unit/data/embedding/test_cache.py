"""The embedding cache in one process: round trip, first write wins, migration of the old shard layout,
fingerprint checks, and lookups that read only the rows asked for."""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.embedding import cache as embedding_cache
from lvm_core.data.embedding.cache import DB_FILE, EmbeddingCache
from lvm_core.data.embedding.fingerprint import FingerprintMismatchError
from tests.fixtures.embedding import CACHE_DIM, cache_fingerprint, cache_rows

DIM = CACHE_DIM


def _h(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()


def _write_legacy_shard(folder: Path, ns: int, hashes: list[str], vectors: np.ndarray) -> Path:
    """A shard exactly as the previous cache layout wrote it."""
    path = folder / f"shard-{ns}-{ns:032x}.npz"
    with open(path, "wb") as fh:
        np.savez(fh, hashes=np.asarray(hashes, dtype=str), vectors=vectors)
    return path


# --- round trip ------------------------------------------------------------------------------------


def test_round_trip_first_write_wins_and_validation(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    v = np.eye(DIM, dtype=np.float32)[:3]
    assert cache.put_many(["a", "b", "a"], v) == 2  # a repeated hash within one put: the first row wins
    assert cache.put_many(["a", "c"], v[:2]) == 1
    assert cache.put_many(["a"], v[:1]) == 0
    assert cache.put_many([], np.zeros((0, DIM), np.float32)) == 0
    assert len(cache) == 3 and "a" in cache and "zz" not in cache and 3 not in cache
    got, found = cache.get_many(["c", "a", "missing", "c"])
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(got, np.stack([v[1], v[0], np.zeros(DIM), v[1]]))  # "c" came second in its put
    empty, none = cache.get_many([])
    assert empty.shape == (0, DIM) and none.shape == (0,)
    assert sorted(p.name for p in cache.dir.iterdir() if not p.name.startswith(DB_FILE)) == ["fingerprint.json", "init.lock"]
    with pytest.raises(ValueError, match="float32"):
        cache.put_many(["z"], v[:1].astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        cache.put_many(["z", "y"], v[:1])
    with pytest.raises(ValueError, match="non-finite"):
        cache.put_many(["z"], np.full((1, DIM), np.nan, np.float32))
    assert len(cache) == 3  # nothing of a refused put was stored


def test_other_instances_and_unpickled_copies_see_writes(tmp_path: Path):
    a, b = EmbeddingCache(tmp_path, cache_fingerprint()), EmbeddingCache(tmp_path, cache_fingerprint())
    assert len(a) == 0
    b.put_many(["x"], np.eye(DIM, dtype=np.float32)[:1])
    assert "x" in a and len(a) == 1
    c = pickle.loads(pickle.dumps(a))  # what a Dask worker receives
    assert c.dir == a.dir and "x" in c
    c.put_many(["y"], np.eye(DIM, dtype=np.float32)[1:2])
    assert len(b) == 2


# --- migration of the old layout -------------------------------------------------------------------


def test_legacy_shards_are_migrated_on_open_first_write_wins(tmp_path: Path):
    folder = tmp_path / cache_fingerprint().id
    folder.mkdir()
    (folder / "fingerprint.json").write_text(json.dumps(cache_fingerprint().to_dict()))
    v = np.random.default_rng(0).standard_normal((6, DIM)).astype(np.float32)
    _write_legacy_shard(folder, 1_700_000_000_000_000_002, ["b", "c", "d"], v[3:])  # later: "b" loses
    _write_legacy_shard(folder, 1_700_000_000_000_000_001, ["a", "b", "x"], v[:3])
    (folder / ".shard-1-00.npz.abc.tmp").write_bytes(b"half a shard from a killed writer")
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    assert not list(folder.glob("shard-*.npz"))
    assert len(cache) == 5
    got, found = cache.get_many(["a", "b", "x", "c", "d"])
    assert found.all()
    np.testing.assert_array_equal(got, v[[0, 1, 2, 4, 5]])
    assert len(EmbeddingCache(tmp_path, cache_fingerprint())) == 5  # reopening does nothing more


def test_migration_killed_midway_resumes_without_duplicates(tmp_path: Path, monkeypatch):
    folder = tmp_path / cache_fingerprint().id
    folder.mkdir()
    v = np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM)
    _write_legacy_shard(folder, 1, ["a", "b"], v[:2])
    _write_legacy_shard(folder, 2, ["b", "c", "d"], v[1:])

    def die(self, missing_ok=False):  # the first shard's rows are committed, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", die)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, cache_fingerprint())
    monkeypatch.undo()
    assert len(list(folder.glob("shard-*.npz"))) == 2 and len(cache_rows(folder / DB_FILE)) == 2
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    assert [h for h, _ in cache_rows(cache.db_path)] == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(cache.get_many(["a", "b", "c", "d"])[0], v)


def test_unreadable_legacy_shard_is_refused_with_what_to_do(tmp_path: Path):
    folder = tmp_path / cache_fingerprint().id
    folder.mkdir()
    _write_legacy_shard(folder, 1, ["a"], np.ones((1, DIM + 1), np.float32))
    with pytest.raises(DataContractError, match=r"shard-1-.*float32 \(n, 8\); move it out of the folder"):
        EmbeddingCache(tmp_path, cache_fingerprint())
    (folder / "shard-2-" f"{2:032x}.npz").write_bytes(b"not a zip")
    with pytest.raises(DataContractError, match="unreadable"):
        EmbeddingCache(tmp_path, cache_fingerprint())


# --- fingerprint and contract checks -----------------------------------------------------------------


def test_refuses_tampered_fingerprint_file(tmp_path: Path):
    fp = cache_fingerprint()
    cache = EmbeddingCache(tmp_path, fp)
    fp_file = cache.dir / "fingerprint.json"
    stored = json.loads(fp_file.read_text())
    stored["model_name"] = "someone/else"
    stored.pop("id")  # a consistent-looking file for another encoder in this id folder
    fp_file.write_text(json.dumps(stored))
    with pytest.raises(FingerprintMismatchError, match="someone/else"):
        EmbeddingCache(tmp_path, fp)
    stored["model_name"] = fp.model_name
    stored["id"] = "0" * 16  # fields fine, id edited
    fp_file.write_text(json.dumps(stored))
    with pytest.raises(FingerprintMismatchError, match="fingerprint.json"):
        EmbeddingCache(tmp_path, fp)


def test_refuses_database_of_another_encoder(tmp_path: Path):
    other = EmbeddingCache(tmp_path, cache_fingerprint(model_name="m/other"))
    other.put_many(["a"], np.ones((1, DIM), np.float32))
    other.close()
    folder = tmp_path / cache_fingerprint().id
    folder.mkdir()
    (folder / DB_FILE).write_bytes(other.db_path.read_bytes())  # a database copied into the wrong folder
    with pytest.raises(FingerprintMismatchError, match=f"encoder id {other.fingerprint.id}"):
        EmbeddingCache(tmp_path, cache_fingerprint())


def test_refuses_a_file_that_is_not_a_cache_database(tmp_path: Path):
    folder = tmp_path / cache_fingerprint().id
    folder.mkdir()
    (folder / DB_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(DataContractError, match=f"{DB_FILE} is unreadable"):
        EmbeddingCache(tmp_path, cache_fingerprint())


def test_refuses_stored_vector_of_wrong_length(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    with sqlite3.connect(cache.db_path) as conn:
        conn.execute("INSERT INTO vectors (hash, vec) VALUES ('a', ?)", (np.ones(DIM + 1, np.float32).tobytes(),))
    with pytest.raises(DataContractError, match="'a' is not 8 float32"):
        cache.get_many(["b", "a"])


# --- memory bounded by the lookup, not the cache -----------------------------------------------------


def test_lookup_reads_only_the_keys_asked_for(tmp_path: Path):
    n = 200_000
    hashes = [_h(i) for i in range(n)]
    vectors = np.random.default_rng(1).standard_normal((n, DIM)).astype(np.float32)
    EmbeddingCache(tmp_path, cache_fingerprint()).put_many(hashes, vectors)
    stored_bytes = vectors.nbytes + sum(map(len, hashes))
    del vectors

    tracemalloc.start()
    try:
        cache = EmbeddingCache(tmp_path, cache_fingerprint())  # a fresh open, then a lookup of 100 keys
        _, found = cache.get_many(hashes[:50] + [f"absent-{i}" for i in range(50)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.tolist() == [True] * 50 + [False] * 50 and len(cache) == n
    assert peak < stored_bytes / 50  # the old layout loaded every vector and hash here
    conn = cache._connection()
    plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + embedding_cache._LOOKUP_SQL.format("?,?"), ["a", "b"]))
    assert "SEARCH vectors USING INDEX" in plan and "SCAN" not in plan  # B-tree probes, no table walk
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -embedding_cache._PAGE_CACHE_KIB  # SQLite's own memory is capped
