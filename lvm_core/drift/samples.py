"""Grouped samples to compare: a dataset folder's windows by article, or the service's window files by
client session (:func:`load_reference_sample`, :func:`load_current_sample`, :func:`window_files`).
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvm_core.drift.features import DEFAULT_MAX_GROUPS, DEFAULT_MAX_PER_GROUP, group_served, sample_groups
from lvm_core.io.context_window_file import read_window

STALE_WINDOW_S = 24 * 3600  # a window file in a folder not rewritten for this long is a retired replica's

__all__ = [
    "GroupedSample",
    "load_current_sample",
    "load_reference_sample",
]


@dataclass
class GroupedSample:
    """Contexts ``(n, ctx, D)`` float32 and the group of each (article id, or session code); where they
    came from, and what the reader noticed on the way (old files, skipped ones)."""

    contexts: np.ndarray
    groups: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_groups(self) -> int:
        return int(len(np.unique(self.groups)))


def load_reference_sample(
    root: str | Path, splits: tuple[str, ...] = ("val",), max_groups: int | None = DEFAULT_MAX_GROUPS,
    max_per_group: int | None = DEFAULT_MAX_PER_GROUP, seed: int = 0, require_ready: bool = True,
) -> GroupedSample:
    """Windows of ``splits`` of a dataset folder, grouped by article; at most ``max_groups`` articles and
    ``max_per_group`` windows of each (seeded), gathered from the memory-mapped vectors.

    The default reference is the **val** split: articles the model never trained on, so that a new
    article of the same snapshot is compared with other new articles. Raises ValueError when the splits
    hold no windows.
    """
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import SequenceSet, gather

    ds = load_dataset(Path(root), require_ready=require_ready)
    sets = [ds.sequences[s] for s in splits if s in ds.sequences and len(ds.sequences[s])]
    if not sets:
        raise ValueError(f"{root}: no windows in split(s) {', '.join(splits)}")
    seqs = SequenceSet.concat(sets)
    idx = sample_groups(seqs.article_ids, max_groups, max_per_group, np.random.default_rng(seed))
    ctx, _ = gather(ds.vectors, seqs, idx)
    return GroupedSample(ctx, np.asarray(seqs.article_ids[idx], dtype=np.int64),
                         f"{Path(root).name} ({'+'.join(splits)})")


def window_files(spec: str | Path, now: float | None = None) -> tuple[list[Path], list[str]]:
    """The window files ``current`` names, and notes: a file; a folder (every ``*.npy`` in it: one per
    replica); or a glob pattern. In a folder or pattern, files not rewritten for ``STALE_WINDOW_S`` are
    left out (a retired replica's window)."""
    text = str(spec)
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).glob("*.npy") if p.is_file())
    elif Path(text).is_file():
        return [Path(text)], []
    else:
        raise FileNotFoundError(f"{text}: no such .npy file, window folder or dataset folder")
    if not files:
        raise FileNotFoundError(f"{text}: no window files (*.npy) there")
    now = time.time() if now is None else now
    fresh = [p for p in files if now - p.stat().st_mtime <= STALE_WINDOW_S]
    notes = [f"{p.name} left out: not rewritten for {(now - p.stat().st_mtime) / 3600:.0f} h (a retired replica?)"
             for p in files if p not in fresh]
    if not fresh:
        raise FileNotFoundError(f"{text}: every window file is older than {STALE_WINDOW_S // 3600} h")
    return fresh, notes


def load_current_sample(
    spec: str | Path, max_groups: int | None = DEFAULT_MAX_GROUPS, max_per_group: int | None = DEFAULT_MAX_PER_GROUP,
    seed: int = 0,
) -> GroupedSample:
    """The served contexts to check, grouped by session, or a dataset folder's held-out windows.

    - a dataset folder (it has a manifest.json): its ``test`` and ``ood`` windows, grouped by article;
    - a window file, a folder of them (``contexts-<replica>.npy``, one per replica) or a glob pattern:
      every replica's contexts together, grouped by :func:`group_served` (the client key's digest; by
      shared chunks without one). A file written before groups were recorded (plain ``(n, ctx, D)``) is
      read as all-anonymous, with a note. Files of another context shape than most contexts are left out.

    At most ``max_groups`` groups and ``max_per_group`` contexts of each are kept (seeded).
    """
    path = Path(spec)
    if path.is_dir() and (path / "manifest.json").is_file():
        return load_reference_sample(path, splits=("test", "ood"), max_groups=max_groups,
                                     max_per_group=max_per_group, seed=seed, require_ready=False)
    files, notes = window_files(spec)
    parts: list[tuple[Path, np.ndarray, np.ndarray | None]] = []
    for f in files:
        ctx, clients = read_window(f)
        if not len(ctx):
            continue
        if clients is None:
            notes.append(f"{f.name}: written before groups were recorded; its contexts are grouped by shared "
                         "chunk vectors")
        parts.append((f, ctx, clients))
    if not parts:
        raise ValueError(f"{spec}: no contexts")
    shapes: dict[tuple[int, ...], int] = {}
    for _, ctx, _ in parts:
        shapes[ctx.shape[1:]] = shapes.get(ctx.shape[1:], 0) + len(ctx)
    shape = max(shapes, key=lambda s: shapes[s])
    notes += [f"{f.name} left out: contexts of shape {ctx.shape[1:]}, most are {shape}" for f, ctx, _ in parts
              if ctx.shape[1:] != shape]
    parts = [p for p in parts if p[1].shape[1:] == shape]
    contexts = np.concatenate([np.asarray(ctx) for _, ctx, _ in parts])
    clients = np.concatenate([np.zeros(len(c), np.uint64) if g is None else np.asarray(g, np.uint64)
                              for _, c, g in parts])
    groups = group_served(contexts, clients)
    idx = sample_groups(groups, max_groups, max_per_group, np.random.default_rng(seed))
    return GroupedSample(np.asarray(contexts[idx], dtype=np.float32), groups[idx], str(spec), notes)
