"""Predictions kept for feedback: `/v1/feedback` scores a past prediction against the true next chunk.

Bounded (oldest dropped first) and thread-safe; the online cosine per version feeds `/v1/models`, the
metrics and the rollout's live stats.
"""

from __future__ import annotations

import collections
import threading
import uuid

import numpy as np

Item = tuple[str, np.ndarray, str | None]  # version, prediction, client key (None: the request had none)


class FeedbackStore:
    """The last `capacity` predictions (id → version, vector, client key) and the online cosine per version.

    The client key goes with the prediction so that its feedback counts for the client that was answered
    (the rollout compares versions client by client), whoever sends the feedback.
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: collections.OrderedDict[str, Item] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._sums: dict[str, list[float]] = {}  # version -> [sum, count]

    def put(self, version: str, predictions: np.ndarray, client: str | None = None) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(len(predictions))]
        with self._lock:
            for pid, vec in zip(ids, predictions):
                self._items[pid] = (version, np.array(vec, dtype=np.float32, copy=True), client)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return ids

    def take(self, pid: str, dim: int) -> tuple[str, Item | None]:
        """('ok', item) and forget the id; ('unknown', None); ('dim', item) when the dims differ (id kept)."""
        with self._lock:
            item = self._items.get(pid)
            if item is None:
                return "unknown", None
            if item[1].shape[0] != dim:
                return "dim", item
            del self._items[pid]
            return "ok", item

    def record(self, version: str, cosine: float) -> float:
        with self._lock:
            acc = self._sums.setdefault(version, [0.0, 0])
            acc[0] += cosine
            acc[1] += 1
            return acc[0] / acc[1]

    def online(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {v: {"mean": s / n if n else float("nan"), "count": n} for v, (s, n) in self._sums.items()}
