"""The persistent embedding cache: vectors keyed by (encoder fingerprint, text hash), kept across builds.

Layout: `root/<fingerprint.id>/fingerprint.json` plus one SQLite database `vectors.sqlite` (WAL mode):
table `vectors(id INTEGER PRIMARY KEY, hash TEXT UNIQUE, vec BLOB)` with each vector stored as `dim`
little-endian float32 bytes. SQLite was chosen over hand-written partitioned segment files by measurement
(bench/README.md): a B-tree lookup reads only the pages of the keys asked for, so memory per lookup is
bounded by the lookup size (plus a fixed page cache), not by the cache size, and SQLite's transactions give
atomic writes and safe concurrent writers in several processes with no compaction to run.

The folder must live on a local filesystem (WAL needs shared memory between the processes that open it).
Caches written in the previous layout (append-only `shard-<ns>-<uuid>.npz` files) are migrated on first
open, shard by shard.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from lvm_core.contracts.errors import DataContractError, UserError
from lvm_core.contracts.layout import CACHE_DIR_ENV
from lvm_core.data.embedding.fingerprint import (
    EncoderFingerprint,
    FingerprintMismatchError,
    ensure_same_fingerprint,
)
from lvm_core.io import storage

__all__ = ["DB_FILE", "CacheLocationError", "EmbeddingCache"]

DB_FILE = "vectors.sqlite"
SCHEMA_VERSION = 1
_FINGERPRINT_FILE = "fingerprint.json"
_LEGACY_SHARD_RE = re.compile(r"^shard-[0-9]+-[0-9a-f]{32}\.npz$")
_MIGRATE_LOCK = ".migrate.lock"
_LOOKUP_BATCH = 512  # keys per SELECT ... IN (...): well under SQLite's bound on bound parameters
_PAGE_CACHE_KIB = 16 * 1024  # SQLite page cache per connection: the fixed part of the cache's memory
_INIT_LOCK = "init.lock"
_BUSY_TIMEOUT_S = 120.0  # a writer waits this long for another process's write transaction

_LOOKUP_SQL = "SELECT hash, vec FROM vectors WHERE hash IN ({})"
_INSERT_SQL = "INSERT OR IGNORE INTO vectors (hash, vec) VALUES (?, ?)"
_INHERITED: list[sqlite3.Connection] = []  # connections a forked child got from its parent (SQLite: do not touch)


class CacheLocationError(UserError, OSError):
    """The cache folder is on a network filesystem, where SQLite's WAL is not safe."""


class EmbeddingCache:
    """Vectors keyed by (encoder fingerprint, text hash), kept across builds so a rebuild encodes only new text.

    `get_many` reads only the rows asked for; `put_many` adds the hashes not stored yet in one transaction
    (the first vector stored for a hash wins, also between concurrent writers). A killed writer's
    transaction is rolled back by SQLite, so nothing half-written is ever read. One instance may be shared
    by threads; a forked or unpickled copy opens its own connection.
    """

    def __init__(self, root: Path, fingerprint: EncoderFingerprint):
        self.fingerprint = fingerprint
        self.root = Path(root)
        if (fs := storage.filesystem_type(self.root)) in storage.NETWORK_FILESYSTEMS:
            raise CacheLocationError(
                f"embedding cache {self.root} is on a network filesystem ({fs}), where SQLite is not safe: "
                f"set {CACHE_DIR_ENV} to a folder on this machine's own disk"
            )
        self.dir = self.root / fingerprint.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_fingerprint_file()
        self.db_path = self.dir / DB_FILE
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._init_schema()
        if any(_LEGACY_SHARD_RE.match(n) for n in os.listdir(self.dir)):
            self._migrate_legacy_shards()

    # set-up --------------------------------------------------------------------------------------

    def _check_fingerprint_file(self) -> None:
        fp_path = self.dir / _FINGERPRINT_FILE
        if fp_path.exists():
            try:
                stored = EncoderFingerprint.from_dict(storage.read_json(fp_path))
            except (ValueError, OSError) as exc:
                raise FingerprintMismatchError(
                    f"embedding cache {self.dir}: unreadable {_FINGERPRINT_FILE} ({exc}); "
                    f"expected {self.fingerprint.describe()}"
                ) from exc
            ensure_same_fingerprint(self.fingerprint, stored, f"embedding cache {self.dir}")
        else:
            storage.write_json(fp_path, self.fingerprint.to_dict())

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a connection must not cross a fork)."""
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:
                _INHERITED.append(self._conn)  # a parent's connection: never used, never closed, in a fork
            conn = sqlite3.connect(
                self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a killed process loses no committed write
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _init_schema(self) -> None:
        """Create the tables on first open (one transaction), then check the stored schema and encoder."""
        meta_sql = "SELECT key, value FROM meta"
        # Switching a new database to WAL does not wait on SQLite's busy handler: two processes opening a fresh
        # cache at once (Dask workers starting together) would see "database is locked". One at a time here.
        with FileLock(self.dir / _INIT_LOCK, timeout=_BUSY_TIMEOUT_S):
            stored = self._open_schema(meta_sql)
        self._check_stored(stored)

    def _open_schema(self, meta_sql: str) -> dict[str, str]:
        try:
            conn = self._connection()
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise DataContractError(f"embedding cache {self.db_path}: SQLite refused WAL mode")
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
            if has_meta:  # the usual case: a read, no write lock taken
                stored = dict(conn.execute(meta_sql).fetchall())
            else:
                with _write_txn(conn):
                    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS vectors "
                        "(id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, vec BLOB NOT NULL)"
                    )
                    expected = {"schema_version": str(SCHEMA_VERSION), "fingerprint_id": self.fingerprint.id,
                                "dim": str(self.fingerprint.dim)}
                    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", expected.items())
                    stored = dict(conn.execute(meta_sql).fetchall())
        except sqlite3.DatabaseError as exc:
            raise DataContractError(f"embedding cache {self.db_path} is unreadable: {exc}") from exc
        return stored

    def _check_stored(self, stored: dict[str, str]) -> None:
        if stored.get("schema_version") != str(SCHEMA_VERSION):
            raise DataContractError(
                f"embedding cache {self.db_path}: schema version {stored.get('schema_version')!r}, "
                f"this code reads version {SCHEMA_VERSION}"
            )
        if stored.get("fingerprint_id") != self.fingerprint.id or stored.get("dim") != str(self.fingerprint.dim):
            raise FingerprintMismatchError(
                f"embedding cache {self.db_path} holds vectors of encoder id {stored.get('fingerprint_id')} "
                f"(dim {stored.get('dim')}), expected {self.fingerprint.describe()}"
            )

    def _migrate_legacy_shards(self) -> None:
        """Move `shard-*.npz` files of the old layout into the database, one shard per transaction.

        Shards go in name (= write time) order, so the first vector written for a hash still wins. A shard
        is deleted only after its rows are committed; if a run dies in between, the next open inserts the
        same rows again, which INSERT OR IGNORE makes a no-op. A file lock keeps two openers from doing
        the work twice.
        """
        with FileLock(self.dir / _MIGRATE_LOCK):
            for name in sorted(n for n in os.listdir(self.dir) if _LEGACY_SHARD_RE.match(n)):
                path = self.dir / name
                hashes, vectors = self._read_legacy_shard(path)
                self._insert(hashes.tolist(), vectors)
                path.unlink(missing_ok=True)

    def _read_legacy_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        hint = "move it out of the folder (its vectors are then encoded again) and reopen the cache"
        try:
            with np.load(path, allow_pickle=False) as z:
                hashes, vectors = z["hashes"], z["vectors"]
        except Exception as exc:
            raise DataContractError(f"embedding cache shard {path} is unreadable ({exc}); {hint}") from exc
        if (
            vectors.dtype != np.float32
            or vectors.ndim != 2
            or vectors.shape[1] != self.fingerprint.dim
            or hashes.ndim != 1
            or hashes.shape[0] != vectors.shape[0]
        ):
            raise DataContractError(
                f"embedding cache shard {path}: hashes {hashes.shape} / vectors {vectors.dtype}{vectors.shape} "
                f"do not match the contract (n,) / float32 (n, {self.fingerprint.dim}); {hint}"
            )
        return hashes, vectors

    # internal ------------------------------------------------------------------------------------

    def _insert(self, hashes: Sequence[str], vectors: np.ndarray) -> int:
        """INSERT OR IGNORE in one write transaction; returns the rows added."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        with self._lock:
            conn = self._connection()
            with _write_txn(conn):
                before = conn.total_changes
                conn.executemany(_INSERT_SQL, zip(hashes, _row_bytes(vectors)))
                return conn.total_changes - before

    # public --------------------------------------------------------------------------------------

    def get_many(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors float32 (n, dim), found bool (n,)); rows not found are zero."""
        n, dim = len(hashes), self.fingerprint.dim
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        out = np.zeros((n, dim), dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        keys = list(first)
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), _LOOKUP_BATCH):
                part = keys[start : start + _LOOKUP_BATCH]
                rows = conn.execute(_LOOKUP_SQL.format(",".join("?" * len(part))), part).fetchall()
                if not rows:
                    continue
                blob = b"".join(r[1] for r in rows)
                if len(blob) != len(rows) * dim * 4:
                    bad = next(r[0] for r in rows if len(r[1]) != dim * 4)
                    raise DataContractError(
                        f"embedding cache {self.db_path}: the vector of {bad!r} is not {dim} float32 values"
                    )
                idx = np.fromiter((first[r[0]] for r in rows), dtype=np.int64, count=len(rows))
                out[idx] = np.frombuffer(blob, dtype="<f4").reshape(len(rows), dim)
                found[idx] = True
        if len(first) < n:  # repeated hashes: copy the first occurrence's row
            inverse = np.fromiter((first[h] for h in hashes), dtype=np.int64, count=n)
            out, found = out[inverse], found[inverse]
        return out, found

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors for hashes not cached yet, atomically; returns how many were added."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(hashes), self.fingerprint.dim):
            raise ValueError(
                f"put_many: vectors shape {vectors.shape} does not match {len(hashes)} hashes x dim "
                f"{self.fingerprint.dim}"
            )
        if vectors.dtype != np.float32:
            raise ValueError(f"put_many: vectors must be float32, got {vectors.dtype}")
        if not np.isfinite(vectors).all():
            raise ValueError("put_many: vectors contain non-finite values")
        if not len(hashes):
            return 0
        return self._insert(list(hashes), vectors)

    def __len__(self) -> int:
        # Rows are never deleted and INSERT OR IGNORE / rollbacks leave no rowid gaps, so the largest rowid
        # is the row count: O(log n) where count(*) would walk the whole index.
        with self._lock:
            return int(self._connection().execute("SELECT coalesce(max(id), 0) FROM vectors").fetchone()[0])

    def __contains__(self, text_hash: object) -> bool:
        if not isinstance(text_hash, str):
            return False
        with self._lock:
            row = self._connection().execute("SELECT 1 FROM vectors WHERE hash = ?", (text_hash,)).fetchone()
        return row is not None

    def close(self) -> None:
        """Close this process's connection (reopened on the next call)."""
        with self._lock:
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                else:
                    _INHERITED.append(self._conn)
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["fingerprint"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.dir)!r}, {self.fingerprint.model_name!r})"


@contextlib.contextmanager
def _write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: one writer at a time, the others wait."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _row_bytes(vectors: np.ndarray) -> Iterable[bytes]:
    for row in vectors:
        yield row.tobytes()
