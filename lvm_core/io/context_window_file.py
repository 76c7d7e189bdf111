"""The context-window file: what the service writes and the drift monitor reads (one data contract).

The drift monitor's sampling unit is the *client*, not the context: the windows one client sends while
reading an article overlap and are nearly copies of each other, so each received context is stored beside
the group it came from. The file is one ``.npy`` of a structured dtype (:func:`window_dtype`): field
``group`` (uint64: a digest of the client key, :func:`client_group`, never the key itself; 0 = the
request had no key) and field ``context`` (float32, ``(ctx, D)``). :func:`read_window` also reads the old
plain ``(n, ctx, D)`` file, as ungrouped.

With several replicas the service is given a folder instead of a file: each replica writes
``contexts-<replica>.npy`` there (:func:`window_file`; ``$LVM_REPLICA``, else the host name), and the drift
monitor reads every window file in it. The writer is ``lvm_core.serving.window.ContextWindow``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import numpy as np

REPLICA_ENV = "LVM_REPLICA"
ANONYMOUS = 0  # the group of a context whose request carried no client key


def client_group(key: str | None) -> int:
    """The stored group of a client key: an 8-byte BLAKE2b digest (never 0), or 0 without a key.

    A digest, not the key: the window file on a shared volume should not hold client identifiers, and
    grouping only needs equality.
    """
    if not key:
        return ANONYMOUS
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return digest or 1


def window_dtype(ctx: int, dim: int) -> np.dtype:
    """The record of one received context: its group and its ``(ctx, dim)`` float32 vectors."""
    return np.dtype([("group", "<u8"), ("context", "<f4", (ctx, dim))])


def replica_name() -> str:
    """This replica's name in its window file: ``$LVM_REPLICA``, else the host name (file-name safe)."""
    name = os.environ.get(REPLICA_ENV) or socket.gethostname() or "replica"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def window_file(path: Path | str, replica: str | None = None) -> Path:
    """The file a replica writes: ``path`` itself when it names an ``.npy`` file, else
    ``path/contexts-<replica>.npy`` (a folder shared by every replica)."""
    p = Path(path)
    if p.suffix == ".npy":
        return p
    return p / f"contexts-{replica or replica_name()}.npy"


def read_window(path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """(contexts ``(n, ctx, D)``, groups ``(n,)`` uint64 or None) of a window file, memory-mapped.

    Groups are None for a file written before groups were recorded (a plain ``(n, ctx, D)`` array): the
    caller decides how to group those. Never unpickles. Raises ValueError for any other layout.
    """
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype.names is not None:
        if set(arr.dtype.names) != {"group", "context"} or arr.ndim != 1 or arr.dtype["context"].ndim != 2:
            raise ValueError(f"{path}: not a context window (fields {arr.dtype.names}, shape {arr.shape})")
        return arr["context"], arr["group"]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected contexts of shape (n, ctx, D), got {arr.shape}")
    return arr, None
