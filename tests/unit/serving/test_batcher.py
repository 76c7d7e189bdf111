"""Concurrent predictions of one version share one model call; each request gets its own rows back, and
the context window gets each row's client."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np

from lvm_core.io.context_window_file import client_group
from lvm_core.serving.service import MicroBatcher


def test_requests_arriving_together_share_one_call_and_get_their_own_rows():
    calls: list[tuple[str, int, Any]] = []

    def predict(served: Any, x: np.ndarray, client: Any) -> np.ndarray:
        calls.append((served.name, len(x), client))
        return x[:, -1, :] * (2 if served.name == "b" else 1)

    a, b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
    xs = [np.full((n, 2, 3), i, dtype=np.float32) for i, n in enumerate((1, 2, 1, 3))]
    keys = ["k0", "k1", None, "k3"]

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(predict)
        return list(await asyncio.gather(*(batcher.predict(a if i != 1 else b, x, keys[i])
                                           for i, x in enumerate(xs))))

    out = asyncio.run(main())
    by_version = {name: (n, client) for name, n, client in calls}
    assert len(calls) == 2 and by_version["a"][0] == 5 and by_version["b"] == (2, "k1")  # one call per version
    groups = [client_group("k0"), client_group(None)] + [client_group("k3")] * 3
    assert list(by_version["a"][1]) == groups  # one client group per context of the batch
    for i, (x, got) in enumerate(zip(xs, out)):
        assert np.array_equal(got, x[:, -1, :] * (2 if i == 1 else 1))


def test_a_failed_call_fails_every_request_of_its_batch():
    def predict(served: Any, x: np.ndarray, client: Any) -> np.ndarray:
        raise ValueError("boom")

    async def main() -> list[Any]:
        batcher = MicroBatcher(predict)
        x = np.zeros((1, 2, 3), dtype=np.float32)
        served: Any = SimpleNamespace()
        return list(await asyncio.gather(batcher.predict(served, x), batcher.predict(served, x),
                                         return_exceptions=True))

    assert all(isinstance(r, ValueError) for r in asyncio.run(main()))


def test_a_full_batch_runs_without_waiting_for_the_loop():
    sizes: list[int] = []

    def predict(served: Any, x: np.ndarray, client: Any) -> np.ndarray:
        sizes.append(len(x))
        return x[:, 0, :]

    async def main() -> None:
        batcher = MicroBatcher(predict, max_contexts=4)
        served: Any = SimpleNamespace()
        await asyncio.gather(*(batcher.predict(served, np.zeros((2, 2, 3), dtype=np.float32)) for _ in range(3)))

    asyncio.run(main())
    assert sizes == [4, 2]
