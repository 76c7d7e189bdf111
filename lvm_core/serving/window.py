"""The window of contexts the service received, kept on disk for the drift monitor.

The drift flow (flows/drift.py) compares what the service is asked with the champion's held-out
contexts, client by client: each context is stored beside its client's group. The file format (a
structured ``.npy`` of groups and contexts, one file per replica in a shared folder) is the data contract
of ``lvm_core/io/context_window_file.py``; this module is its writer.

The service keeps the last ``capacity`` contexts and rewrites the file atomically every ``flush_s``
seconds (and when it stops); a reader never sees a half-written window. The request path only appends a
reference under the lock; the flush copies and writes outside it (the arrays it reads are never changed
after they are added), so a 38 MB window no longer stalls requests. On start the window reloads the file,
so a restart does not begin with an empty window.

With several replicas, give a folder instead of a file: each replica writes ``contexts-<replica>.npy``
there (``$LVM_REPLICA``, else the host name), and the drift monitor reads every window file in it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

import numpy as np

from lvm_core.io import storage
from lvm_core.io.context_window_file import ANONYMOUS, client_group, read_window, window_dtype, window_file

_log = logging.getLogger(__name__)

CONTEXTS_ENV = "LVM_SERVED_CONTEXTS"
DEFAULT_CAPACITY = 5000
DEFAULT_FLUSH_S = 30.0


class ContextWindow:
    """The most recent `capacity` received contexts of one shape and their groups, oldest first when written."""

    def __init__(self, path: Path | str, capacity: int = DEFAULT_CAPACITY, flush_s: float = DEFAULT_FLUSH_S):
        if capacity < 1:
            raise ValueError(f"context window capacity {capacity}: must be >= 1")
        self.path = window_file(path)
        self.capacity = int(capacity)
        self.flush_s = float(flush_s)
        self._lock = threading.Lock()  # the request path's lock: held only to append or list references
        self._write_lock = threading.Lock()  # one writer at a time (the timer thread and stop)
        # (contexts (k, ctx, D) float32, groups (k,) uint64) in arrival order; never modified once added
        self._chunks: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._shape: tuple[int, ...] | None = None
        self._size = 0  # contexts held in _chunks (may exceed capacity by less than the oldest chunk)
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reload()

    def add(self, contexts: np.ndarray, client: str | None | np.ndarray = None) -> None:
        """Remember (n, ctx, D) contexts; a new shape (another model answering) starts a new window.

        ``client``: the request's client key (``X-Client-Key`` / body ``client_key``; None: no key), or, for
        contexts of several requests predicted together, one group per context (:func:`client_group` of
        each key). Without it the drift monitor groups the contexts by their shared chunks instead.
        """
        x = np.array(contexts, dtype=np.float32)  # our own copy: it is read later without the lock
        if x.ndim != 3 or not len(x):
            return
        if isinstance(client, np.ndarray):
            if client.shape != (len(x),):
                raise ValueError(f"{len(x)} contexts but {client.shape} client groups")
            g = client.astype(np.uint64)
        else:
            g = np.full(len(x), client_group(client), dtype=np.uint64)
        x, g = x[-self.capacity :], g[-self.capacity :]
        with self._lock:
            self._append(x, g)
            self._dirty = True

    def _append(self, x: np.ndarray, g: np.ndarray) -> None:
        if self._shape != x.shape[1:]:
            self._chunks.clear()
            self._size = 0
            self._shape = x.shape[1:]
        self._chunks.append((x, g))
        self._size += len(x)
        while self._size - len(self._chunks[0][0]) >= self.capacity:
            self._size -= len(self._chunks.popleft()[0])

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (n, ctx, D), groups (n,) uint64) of the window, oldest first (copies)."""
        with self._lock:
            chunks = list(self._chunks)  # references only: the copy happens below, without the lock
        if not chunks:
            return np.zeros((0, 0, 0), dtype=np.float32), np.zeros(0, dtype=np.uint64)
        ctx = np.concatenate([c for c, _ in chunks])[-self.capacity :]
        groups = np.concatenate([g for _, g in chunks])[-self.capacity :]
        return ctx, groups

    def flush(self) -> bool:
        """Write the window if it changed since the last write; True when written. The request-path lock is
        held only to read the dirty flag and list the chunks, never during the copy or the write."""
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return False
                self._dirty = False
            ctx, groups = self.snapshot()
            if not len(ctx):
                return False
            try:
                records = np.empty(len(ctx), dtype=window_dtype(*ctx.shape[1:]))
                records["context"] = ctx
                records["group"] = groups
                self.path.parent.mkdir(parents=True, exist_ok=True)
                storage.write_npy(self.path, records)
            except BaseException:
                with self._lock:
                    self._dirty = True  # retried at the next flush
                raise
            return True

    def _reload(self) -> None:
        """Start from the file a previous run of this replica left (a restart keeps its window)."""
        if not self.path.is_file():
            return
        try:
            ctx, groups = read_window(self.path)
            ctx = np.array(ctx[-self.capacity :], dtype=np.float32)
            g = (np.full(len(ctx), ANONYMOUS, np.uint64) if groups is None
                 else np.array(groups[-self.capacity :], dtype=np.uint64))
        except (OSError, ValueError) as exc:
            _log.warning("served-context window %s not reloaded (starting empty): %s", self.path, exc)
            return
        if groups is None:
            _log.warning("served-context window %s has no groups (written by an older version): its %d contexts "
                         "are kept as requests without a client key", self.path, len(ctx))
        if ctx.ndim == 3 and len(ctx):
            self._append(ctx, g)
            _log.info("served-context window reloaded from %s: %d contexts", self.path, len(ctx))

    def start(self) -> None:
        """Flush every `flush_s` seconds in a daemon thread until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lvm-context-window", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._safe_flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._safe_flush()

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except OSError as exc:  # a full or read-only disk must not take the service down
            _log.error("could not write the served-context window to %s: %s", self.path, exc)
