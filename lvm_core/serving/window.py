"""The window of contexts the service received, kept on disk for the drift monitor.

The drift flow (flows/drift.py) compares what the service is asked with the champion's training
contexts; it reads an .npy of shape (n, ctx, D). The service keeps the last `capacity` contexts in a ring
buffer and rewrites that file atomically every `flush_s` seconds (and when it stops), so a reader never
sees a half-written window and the file never grows past `capacity` contexts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from lvm_core.io import storage

_log = logging.getLogger(__name__)

CONTEXTS_ENV = "LVM_SERVED_CONTEXTS"
DEFAULT_CAPACITY = 5000
DEFAULT_FLUSH_S = 30.0


class ContextWindow:
    """The most recent `capacity` received contexts of one shape, oldest first when written."""

    def __init__(self, path: Path | str, capacity: int = DEFAULT_CAPACITY, flush_s: float = DEFAULT_FLUSH_S):
        if capacity < 1:
            raise ValueError(f"context window capacity {capacity}: must be >= 1")
        self.path = Path(path)
        self.capacity = int(capacity)
        self.flush_s = float(flush_s)
        self._lock = threading.Lock()
        self._buf: np.ndarray | None = None  # (capacity, ctx, D) float32
        self._next = 0  # where the next context goes
        self._size = 0
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, contexts: np.ndarray) -> None:
        """Remember (n, ctx, D) contexts; a new shape (another model answering) starts a new window."""
        x = np.asarray(contexts, dtype=np.float32)
        if x.ndim != 3 or not len(x):
            return
        x = x[-self.capacity :]
        with self._lock:
            if self._buf is None or self._buf.shape[1:] != x.shape[1:]:
                self._buf = np.zeros((self.capacity, *x.shape[1:]), dtype=np.float32)
                self._next = self._size = 0
            end = self._next + len(x)
            if end <= self.capacity:
                self._buf[self._next : end] = x
            else:
                head = self.capacity - self._next
                self._buf[self._next :] = x[:head]
                self._buf[: end - self.capacity] = x[head:]
            self._next = end % self.capacity
            self._size = min(self._size + len(x), self.capacity)
            self._dirty = True

    def snapshot(self) -> np.ndarray:
        """The window's contexts, oldest first (a copy)."""
        with self._lock:
            if self._buf is None or not self._size:
                return np.zeros((0, 0, 0), dtype=np.float32)
            if self._size < self.capacity:
                return self._buf[: self._size].copy()
            return np.concatenate([self._buf[self._next :], self._buf[: self._next]])

    def flush(self) -> bool:
        """Write the window if it changed since the last write; True when written."""
        with self._lock:
            if not self._dirty:
                return False
            self._dirty = False
        data = self.snapshot()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        storage.write_npy(self.path, data)
        return True

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
