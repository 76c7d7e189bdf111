"""Training batches gathered from one shared vector tensor by row index.

Windows are row indices into one `(n_chunks, D)` vector array: `torch.from_numpy` is made once and every
batch is gathered with `index_select`, so no `(n, ctx, D)` copy ever exists. The shuffled order depends only
on the seed and the epoch, so a resumed run reproduces the epochs an uninterrupted run would have produced.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from lvm_core.data.windows import check_windows


class WindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Windows as row indices into a shared vector tensor; items and batches are gathered on access.

    `dataset[i]` gives one `(ctx (N, D), target (D,))`; `dataset[index_tensor]` and `__getitems__` (used by
    DataLoader for a whole batch) give `(ctx (B, N, D), target (B, D))` with two `index_select` calls.
    """

    def __init__(self, vectors: torch.Tensor, context_rows: torch.Tensor, target_rows: torch.Tensor):
        self.vectors = vectors
        self.context_rows = context_rows
        self.target_rows = target_rows

    @classmethod
    def from_arrays(cls, vectors: np.ndarray | torch.Tensor, seqs: Any, what: str = "seqs") -> WindowDataset:
        """Validate and wrap; `vectors` is shared (no copy when it is already float32)."""
        vec_t = vectors if isinstance(vectors, torch.Tensor) else as_vector_tensor(vectors)
        w = check_windows(seqs, vec_t.numpy(), what=what, allow_empty=False)
        return cls(vec_t, torch.from_numpy(np.ascontiguousarray(w.context_rows)), torch.from_numpy(np.ascontiguousarray(w.target_rows)))

    def __len__(self) -> int:
        return int(self.target_rows.shape[0])

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.context_rows.index_select(0, index)
        b, n = rows.shape
        ctx = self.vectors.index_select(0, rows.reshape(-1)).view(b, n, -1)
        tgt = self.vectors.index_select(0, self.target_rows.index_select(0, index))
        return ctx, tgt

    def __getitem__(self, index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.dim() == 0:
            ctx, tgt = self.gather(idx.view(1))
            return ctx[0], tgt[0]
        return self.gather(idx)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather(torch.as_tensor(indices, dtype=torch.long))


def _batch_collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`__getitems__` already returns stacked tensors; nothing left to collate."""
    return batch


def make_loader(
    dataset: WindowDataset, batch_size: int, shuffle: bool, seed: int | None = None
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Single-process DataLoader over batch gathers; with `shuffle`, the order depends only on `seed`."""
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed or 0))
        sampler: Any = RandomSampler(dataset, generator=gen)
    else:
        sampler = SequentialSampler(dataset)
    # collate_fn is typed for a list of items; here it receives __getitems__'s stacked tuple
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=_batch_collate, num_workers=0  # type: ignore[arg-type]
    )


def as_vector_tensor(vectors: np.ndarray) -> torch.Tensor:
    """float32 CPU tensor sharing memory with `vectors` (one conversion copy only if it is not float32)."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array (n_chunks, dim), got {type(vectors).__name__} "
                         f"with shape {getattr(vectors, 'shape', None)}")
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    with _quiet_readonly():
        return torch.from_numpy(arr)


@contextlib.contextmanager
def _quiet_readonly() -> Iterator[None]:
    """`torch.from_numpy` warns on read-only (memory-mapped) arrays; they are only ever read here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a function of the run's seed and the epoch only."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)

