"""The baselines' interface and their file format: a small `.npz` of a name, JSON meta and plain arrays (no pickle).

Every baseline shares the interface, the context check and the persistence held here; the loader
(`collection.load_baseline`) reads what `SavedBaseline.save` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lvm_core.contracts.errors import UserError
from lvm_core.data.windows import SequenceLike
from lvm_core.io.storage import atomic_path

DEFAULT_BATCH_SIZE = 4096
BASELINE_FILE_SUFFIX = ".npz"


class BaselineFileError(UserError, ValueError):
    """A saved baseline file is missing, unreadable or names an unknown baseline."""


def check_ctx(ctx: np.ndarray, name: str, context_len: int | None = None, dim: int | None = None) -> np.ndarray:
    """`ctx` as float32 (B, context_len, dim), checked against what the baseline was fitted on."""
    ctx = np.asarray(ctx)
    if ctx.ndim != 3:
        raise ValueError(f"{name}.predict expects ctx of shape (B, context_len, dim), got {ctx.shape}")
    if context_len is not None and ctx.shape[1] != context_len:
        raise ValueError(f"{name} was fitted with context_len={context_len}, got ctx shape {ctx.shape}")
    if dim is not None and ctx.shape[2] != dim:
        raise ValueError(f"{name} was fitted with dim={dim}, got ctx shape {ctx.shape}")
    return ctx.astype(np.float32, copy=False)


# --- interface ---------------------------------------------------------------------------------------



@runtime_checkable
class Baseline(Protocol):
    """A fitted trivial predictor with the models' interface."""

    name: str

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> Baseline: ...

    def predict(self, ctx: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> Path: ...


class SavedBaseline:
    """`.npz` persistence: a `name`, a JSON `meta` string and plain numeric arrays (no pickle)."""

    name: ClassVar[str]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _meta(self) -> dict[str, Any]:
        return {}

    def save(self, path: Path) -> Path:
        """Write `path` (a `.npz`) atomically; returns the path."""
        path = Path(path)
        payload = {
            "name": np.array(self.name),
            "meta": np.array(json.dumps(self._meta())),
            **self._arrays(),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **payload)  # type: ignore[arg-type]  # the stub reads **payload as if it held allow_pickle
        return path

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SavedBaseline:
        return cls()
