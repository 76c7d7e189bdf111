"""The embedding cache: round trip, first write wins, concurrent and killed writers, migration of the old
shard layout, fingerprint checks, and lookups that read only the rows asked for."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lvm_core.data.embedding import cache as ec
from lvm_core.contracts.errors import DataContractError
from lvm_core.data.embedding.fingerprint import EncoderFingerprint, FingerprintMismatchError
from lvm_core.data.embedding.cache import DB_FILE, EmbeddingCache
from lvm_core.runtime.faults import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]

DIM = 8


def _fp(**kw) -> EncoderFingerprint:
    base = {"model_name": "m/x", "weights_digest": "ab" * 32, "dim": DIM, "normalized": True}
    base.update(kw)
    return EncoderFingerprint(**base)


def _h(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()


def _rows(db: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT hash, vec FROM vectors ORDER BY id").fetchall()


def _write_legacy_shard(folder: Path, ns: int, hashes: list[str], vectors: np.ndarray) -> Path:
    """A shard exactly as the previous cache layout wrote it."""
    path = folder / f"shard-{ns}-{ns:032x}.npz"
    with open(path, "wb") as fh:
        np.savez(fh, hashes=np.asarray(hashes, dtype=str), vectors=vectors)
    return path


# --- round trip ------------------------------------------------------------------------------------


def test_round_trip_first_write_wins_and_validation(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, _fp())
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
    a, b = EmbeddingCache(tmp_path, _fp()), EmbeddingCache(tmp_path, _fp())
    assert len(a) == 0
    b.put_many(["x"], np.eye(DIM, dtype=np.float32)[:1])
    assert "x" in a and len(a) == 1
    c = pickle.loads(pickle.dumps(a))  # what a Dask worker receives
    assert c.dir == a.dir and "x" in c
    c.put_many(["y"], np.eye(DIM, dtype=np.float32)[1:2])
    assert len(b) == 2


def _forked_child(cache: EmbeddingCache) -> None:
    assert "x" in cache  # the inherited instance opens a connection of its own
    cache.put_many(["from-child"], np.ones((1, DIM), np.float32))
    cache.close()


def _fork_scenario(root: str) -> None:
    """In a fresh single-threaded interpreter (forking the many-threaded test process can deadlock the child):
    a parent writes, a forked child writes through the inherited instance, the parent writes again."""
    cache = EmbeddingCache(Path(root), _fp())
    cache.put_many(["x"], np.zeros((1, DIM), np.float32))
    proc = multiprocessing.get_context("fork").Process(target=_forked_child, args=(cache,))
    proc.start()
    proc.join(60)
    if proc.exitcode != 0:
        raise SystemExit(f"forked child exit code {proc.exitcode}")
    assert "from-child" in cache and len(cache) == 2
    assert cache.put_many(["parent-again"], np.ones((1, DIM), np.float32)) == 1


def test_a_forked_child_uses_a_connection_of_its_own(tmp_path: Path):
    assert _run_children(("_fork_scenario", tmp_path)) == [0]
    cache = EmbeddingCache(tmp_path, _fp())
    assert {"x", "from-child", "parent-again"} <= {h for h, _ in _rows(cache.db_path)} and len(cache) == 3


# --- concurrent and killed writers -----------------------------------------------------------------


def _run_children(*calls: tuple[str, ...]) -> list[int]:
    """Run this module's functions, each in a fresh interpreter at once (as two builds or workers would);
    their exit codes."""
    procs = []
    try:
        for func, *args in calls:
            code = f"import sys; from tests.test_embedding_cache import {func}; {func}(*sys.argv[1:])"
            procs.append(subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO))
        return [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _writer(root: str, writer_id: str, out: str) -> None:
    writer = int(writer_id)
    cache = EmbeddingCache(Path(root), _fp())
    added = 0
    for k in range(20):
        own = [f"w{writer}-{k}-{j}" for j in range(25)]
        shared = [f"shared-{k}-{j}" for j in range(25)]  # both writers race for these
        vecs = np.full((50, DIM), float(writer), dtype=np.float32)
        vecs[:, 1] = np.arange(50)  # row-specific, to check a stored row is one writer's whole row
        added += cache.put_many(own + shared, vecs)
    Path(out).write_text(str(added))


def test_concurrent_writers_in_two_processes_lose_and_duplicate_nothing(tmp_path: Path):
    assert _run_children(*[("_writer", tmp_path, w, tmp_path / f"added-{w}") for w in (1, 2)]) == [0, 0]
    cache = EmbeddingCache(tmp_path, _fp())
    expected = 2 * 20 * 25 + 20 * 25
    rows = _rows(cache.db_path)
    assert len(rows) == expected and len({h for h, _ in rows}) == expected and len(cache) == expected
    assert sum(int((tmp_path / f"added-{w}").read_text()) for w in (1, 2)) == expected  # each row counted once
    vecs, found = cache.get_many([h for h, _ in rows])
    assert found.all()
    assert set(np.unique(vecs[:, 0]).tolist()) == {1.0, 2.0}
    assert (vecs[:, 2:] == vecs[:, :1]).all()  # every row is whole, written by one writer


def _opener(root: str) -> None:
    EmbeddingCache(Path(root), _fp()).put_many([f"o{os.getpid()}"], np.ones((1, DIM), np.float32))


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path):
    """Switching a fresh database to WAL ignores SQLite's busy handler; without the init lock some of these
    processes failed with "database is locked"."""
    assert _run_children(*[("_opener", tmp_path) for _ in range(6)]) == [0] * 6
    assert len(EmbeddingCache(tmp_path, _fp())) == 6


def _killed_writer(root: str) -> None:
    cache = EmbeddingCache(Path(root), _fp())
    cache._connection().execute("PRAGMA cache_size = 2")  # spill uncommitted pages into the WAL file

    def rows_then_die(vectors: np.ndarray):
        for i, row in enumerate(vectors):
            if i == len(vectors) - 1:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction, after most rows went in
            yield row.tobytes()

    ec._row_bytes = rows_then_die
    cache.put_many([f"k{i}" for i in range(5000)], np.ones((5000, DIM), np.float32))


def test_killed_writer_leaves_nothing_that_is_read(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, _fp())
    cache.put_many(["before"], np.ones((1, DIM), np.float32))
    wal = cache.db_path.with_name(DB_FILE + "-wal")
    wal_before = wal.stat().st_size
    assert _run_children(("_killed_writer", tmp_path)) == [-signal.SIGKILL]
    assert wal.stat().st_size > wal_before  # the dead writer's uncommitted pages are on disk...
    reopened = EmbeddingCache(tmp_path, _fp())
    assert len(reopened) == 1 and "k0" not in reopened  # ...and never read
    assert reopened.put_many(["k0", "after"], np.ones((2, DIM), np.float32)) == 2  # the write lock is free
    assert [h for h, _ in _rows(reopened.db_path)] == ["before", "k0", "after"]


# --- migration of the old layout -------------------------------------------------------------------


def test_legacy_shards_are_migrated_on_open_first_write_wins(tmp_path: Path):
    folder = tmp_path / _fp().id
    folder.mkdir()
    (folder / "fingerprint.json").write_text(json.dumps(_fp().to_dict()))
    v = np.random.default_rng(0).standard_normal((6, DIM)).astype(np.float32)
    _write_legacy_shard(folder, 1_700_000_000_000_000_002, ["b", "c", "d"], v[3:])  # later: "b" loses
    _write_legacy_shard(folder, 1_700_000_000_000_000_001, ["a", "b", "x"], v[:3])
    (folder / ".shard-1-00.npz.abc.tmp").write_bytes(b"half a shard from a killed writer")
    cache = EmbeddingCache(tmp_path, _fp())
    assert not list(folder.glob("shard-*.npz"))
    assert len(cache) == 5
    got, found = cache.get_many(["a", "b", "x", "c", "d"])
    assert found.all()
    np.testing.assert_array_equal(got, v[[0, 1, 2, 4, 5]])
    assert len(EmbeddingCache(tmp_path, _fp())) == 5  # reopening does nothing more


def test_migration_killed_midway_resumes_without_duplicates(tmp_path: Path, monkeypatch):
    folder = tmp_path / _fp().id
    folder.mkdir()
    v = np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM)
    _write_legacy_shard(folder, 1, ["a", "b"], v[:2])
    _write_legacy_shard(folder, 2, ["b", "c", "d"], v[1:])

    def die(self, missing_ok=False):  # the first shard's rows are committed, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", die)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, _fp())
    monkeypatch.undo()
    assert len(list(folder.glob("shard-*.npz"))) == 2 and len(_rows(folder / DB_FILE)) == 2
    cache = EmbeddingCache(tmp_path, _fp())
    assert [h for h, _ in _rows(cache.db_path)] == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(cache.get_many(["a", "b", "c", "d"])[0], v)


def test_unreadable_legacy_shard_is_refused_with_what_to_do(tmp_path: Path):
    folder = tmp_path / _fp().id
    folder.mkdir()
    _write_legacy_shard(folder, 1, ["a"], np.ones((1, DIM + 1), np.float32))
    with pytest.raises(DataContractError, match=r"shard-1-.*float32 \(n, 8\); move it out of the folder"):
        EmbeddingCache(tmp_path, _fp())
    (folder / "shard-2-" f"{2:032x}.npz").write_bytes(b"not a zip")
    with pytest.raises(DataContractError, match="unreadable"):
        EmbeddingCache(tmp_path, _fp())


# --- fingerprint and contract checks -----------------------------------------------------------------


def test_refuses_tampered_fingerprint_file(tmp_path: Path):
    fp = _fp()
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
    other = EmbeddingCache(tmp_path, _fp(model_name="m/other"))
    other.put_many(["a"], np.ones((1, DIM), np.float32))
    other.close()
    folder = tmp_path / _fp().id
    folder.mkdir()
    (folder / DB_FILE).write_bytes(other.db_path.read_bytes())  # a database copied into the wrong folder
    with pytest.raises(FingerprintMismatchError, match=f"encoder id {other.fingerprint.id}"):
        EmbeddingCache(tmp_path, _fp())


def test_refuses_a_file_that_is_not_a_cache_database(tmp_path: Path):
    folder = tmp_path / _fp().id
    folder.mkdir()
    (folder / DB_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(DataContractError, match=f"{DB_FILE} is unreadable"):
        EmbeddingCache(tmp_path, _fp())


def test_refuses_stored_vector_of_wrong_length(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, _fp())
    with sqlite3.connect(cache.db_path) as conn:
        conn.execute("INSERT INTO vectors (hash, vec) VALUES ('a', ?)", (np.ones(DIM + 1, np.float32).tobytes(),))
    with pytest.raises(DataContractError, match="'a' is not 8 float32"):
        cache.get_many(["b", "a"])


# --- memory bounded by the lookup, not the cache -----------------------------------------------------


def test_lookup_reads_only_the_keys_asked_for(tmp_path: Path):
    n = 200_000
    hashes = [_h(i) for i in range(n)]
    vectors = np.random.default_rng(1).standard_normal((n, DIM)).astype(np.float32)
    EmbeddingCache(tmp_path, _fp()).put_many(hashes, vectors)
    stored_bytes = vectors.nbytes + sum(map(len, hashes))
    del vectors

    tracemalloc.start()
    try:
        cache = EmbeddingCache(tmp_path, _fp())  # a fresh open, then a lookup of 100 keys
        _, found = cache.get_many(hashes[:50] + [f"absent-{i}" for i in range(50)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.tolist() == [True] * 50 + [False] * 50 and len(cache) == n
    assert peak < stored_bytes / 50  # the old layout loaded every vector and hash here
    conn = cache._connection()
    plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + ec._LOOKUP_SQL.format("?,?"), ["a", "b"]))
    assert "SEARCH vectors USING INDEX" in plan and "SCAN" not in plan  # B-tree probes, no table walk
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -ec._PAGE_CACHE_KIB  # SQLite's own memory is capped


# --- a killed build keeps what it flushed ------------------------------------------------------------

_BUILD = """
import sys, numpy as np
from pathlib import Path
from lvm_core.data.embedding import EncoderFingerprint, embed_texts
from lvm_core.data.embedding.cache import EmbeddingCache

class Enc:
    fingerprint = EncoderFingerprint("m/x", "ab" * 32, 8)
    def encode(self, texts, batch_size=64, show_progress=False):
        Path(sys.argv[2]).open("a").write("".join(t + "\\n" for t in texts))
        return np.ones((len(texts), 8), np.float32)

texts = [f"t{i}" for i in range(40)]
embed_texts(texts, texts, Enc(), EmbeddingCache(Path(sys.argv[1]), Enc.fingerprint), flush_every=10, batch_size=10)
"""


def test_build_killed_mid_encode_keeps_flushed_blocks(tmp_path: Path):
    def build(fault: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | ({FAULT_ENV: fault} if fault else {})
        cmd = [sys.executable, "-c", _BUILD, str(tmp_path), str(tmp_path / "encoded.txt")]
        # a session of its own: the fault SIGKILLs the process group
        return subprocess.run(cmd, env=env, start_new_session=True, timeout=120, check=False, cwd=REPO)

    assert build("kill@embed.batch#3").returncode == -signal.SIGKILL  # killed before the 3rd block's flush
    assert len(EmbeddingCache(tmp_path, _fp())) == 20
    (tmp_path / "encoded.txt").unlink()
    assert build(None).returncode == 0
    assert (tmp_path / "encoded.txt").read_text().split() == [f"t{i}" for i in range(20, 40)]  # only the rest
    assert len(EmbeddingCache(tmp_path, _fp())) == 40
