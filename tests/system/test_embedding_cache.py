"""The embedding cache across processes: a forked child, concurrent writers, a writer or a build killed mid-write."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from lvm_core.data.embedding import cache as embedding_cache
from lvm_core.data.embedding.cache import DB_FILE, EmbeddingCache
from lvm_core.runtime.faults import FAULT_ENV
from tests.fixtures.embedding import CACHE_DIM, cache_fingerprint, cache_rows
from tests.fixtures.paths import REPO

DIM = CACHE_DIM


def _forked_child(cache: EmbeddingCache) -> None:
    assert "x" in cache  # the inherited instance opens a connection of its own
    cache.put_many(["from-child"], np.ones((1, DIM), np.float32))
    cache.close()


def _fork_scenario(root: str) -> None:
    """In a fresh single-threaded interpreter (forking the many-threaded test process can deadlock the child):
    a parent writes, a forked child writes through the inherited instance, the parent writes again."""
    cache = EmbeddingCache(Path(root), cache_fingerprint())
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
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    assert {"x", "from-child", "parent-again"} <= {h for h, _ in cache_rows(cache.db_path)} and len(cache) == 3


def _run_children(*calls: tuple[str, ...]) -> list[int]:
    """Run this module's functions, each in a fresh interpreter at once (as two builds or workers would);
    their exit codes."""
    procs = []
    try:
        for func, *args in calls:
            code = f"import sys; from {__name__} import {func}; {func}(*sys.argv[1:])"
            procs.append(subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO))
        return [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _writer(root: str, writer_id: str, out: str) -> None:
    writer = int(writer_id)
    cache = EmbeddingCache(Path(root), cache_fingerprint())
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
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    expected = 2 * 20 * 25 + 20 * 25
    rows = cache_rows(cache.db_path)
    assert len(rows) == expected and len({h for h, _ in rows}) == expected and len(cache) == expected
    assert sum(int((tmp_path / f"added-{w}").read_text()) for w in (1, 2)) == expected  # each row counted once
    vecs, found = cache.get_many([h for h, _ in rows])
    assert found.all()
    assert set(np.unique(vecs[:, 0]).tolist()) == {1.0, 2.0}
    assert (vecs[:, 2:] == vecs[:, :1]).all()  # every row is whole, written by one writer


def _opener(root: str) -> None:
    EmbeddingCache(Path(root), cache_fingerprint()).put_many([f"o{os.getpid()}"], np.ones((1, DIM), np.float32))


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path):
    """Switching a fresh database to WAL ignores SQLite's busy handler; without the init lock some of these
    processes failed with "database is locked"."""
    assert _run_children(*[("_opener", tmp_path) for _ in range(6)]) == [0] * 6
    assert len(EmbeddingCache(tmp_path, cache_fingerprint())) == 6


def _killed_writer(root: str) -> None:
    cache = EmbeddingCache(Path(root), cache_fingerprint())
    cache._connection().execute("PRAGMA cache_size = 2")  # spill uncommitted pages into the WAL file

    def rows_then_die(vectors: np.ndarray):
        for i, row in enumerate(vectors):
            if i == len(vectors) - 1:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction, after most rows went in
            yield row.tobytes()

    embedding_cache._row_bytes = rows_then_die
    cache.put_many([f"k{i}" for i in range(5000)], np.ones((5000, DIM), np.float32))


def test_killed_writer_leaves_nothing_that_is_read(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, cache_fingerprint())
    cache.put_many(["before"], np.ones((1, DIM), np.float32))
    wal = cache.db_path.with_name(DB_FILE + "-wal")
    wal_before = wal.stat().st_size
    assert _run_children(("_killed_writer", tmp_path)) == [-signal.SIGKILL]
    assert wal.stat().st_size > wal_before  # the dead writer's uncommitted pages are on disk...
    reopened = EmbeddingCache(tmp_path, cache_fingerprint())
    assert len(reopened) == 1 and "k0" not in reopened  # ...and never read
    assert reopened.put_many(["k0", "after"], np.ones((2, DIM), np.float32)) == 2  # the write lock is free
    assert [h for h, _ in cache_rows(reopened.db_path)] == ["before", "k0", "after"]


_BUILD = """
import sys, numpy as np
from pathlib import Path
from lvm_core.data.embedding.embed import embed_texts
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
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
    assert len(EmbeddingCache(tmp_path, cache_fingerprint())) == 20
    (tmp_path / "encoded.txt").unlink()
    assert build(None).returncode == 0
    assert (tmp_path / "encoded.txt").read_text().split() == [f"t{i}" for i in range(20, 40)]  # only the rest
    assert len(EmbeddingCache(tmp_path, cache_fingerprint())) == 40
