"""All baselines together: fit the four on training windows, save them to a folder, load one back by its name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.data.windows import SequenceLike, check_windows
from lvm_core.models.baselines.base import (
    BASELINE_FILE_SUFFIX,
    DEFAULT_BATCH_SIZE,
    Baseline,
    BaselineFileError,
    SavedBaseline,
)
from lvm_core.models.baselines.recency import RecencyWeightedMean
from lvm_core.models.baselines.ridge import RidgeBaseline
from lvm_core.models.baselines.simple import ContextMean, CopyLast

BASELINE_CLASSES: dict[str, type[SavedBaseline]] = {
    cls.name: cls for cls in (CopyLast, ContextMean, RecencyWeightedMean, RidgeBaseline)
}


# --- collection helpers ------------------------------------------------------------------------------


def fit_baselines(
    vectors: np.ndarray,
    train_seqs: SequenceLike,
    *,
    ridge_alpha: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> dict[str, Baseline]:
    """Fit all four trivial baselines on the training windows; keys are the baselines' names."""
    check_windows(train_seqs, vectors, what="train_seqs", allow_empty=False)
    recency = RecencyWeightedMean(batch_size=batch_size, seed=seed).fit(vectors, train_seqs)
    ridge = RidgeBaseline(alpha=ridge_alpha, batch_size=batch_size, seed=seed, anchor_weights=recency.weights)
    baselines: list[Any] = [
        CopyLast().fit(vectors, train_seqs),
        ContextMean().fit(vectors, train_seqs),
        recency,  # fitted once: the ridge is fitted on its residual
        ridge.fit(vectors, train_seqs),
    ]
    return {b.name: b for b in baselines}


def load_baseline(path: Path) -> Baseline:
    """Load a baseline written by `save` (`allow_pickle=False`)."""
    path = Path(path)
    if not path.is_file():
        raise BaselineFileError(f"{path}: no such baseline file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BaselineFileError(f"{path}: not a readable baseline .npz ({exc})") from exc
    if "name" not in arrays or "meta" not in arrays:
        raise BaselineFileError(f"{path}: missing 'name'/'meta' entries; not a saved baseline")
    name = str(arrays.pop("name"))
    meta = json.loads(str(arrays.pop("meta")))
    cls = BASELINE_CLASSES.get(name)
    if cls is None:
        raise BaselineFileError(f"{path}: unknown baseline {name!r}; known: {', '.join(BASELINE_CLASSES)}")
    return cls._from_saved(meta, arrays)  # type: ignore[return-value]


def save_baselines(baselines: dict[str, Baseline], directory: Path) -> dict[str, Path]:
    """Write each baseline to `<directory>/<name>.npz`; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {name: b.save(directory / f"{name}{BASELINE_FILE_SUFFIX}") for name, b in baselines.items()}
