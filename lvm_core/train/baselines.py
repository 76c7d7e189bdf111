"""The trivial baselines of a training run: fitted on its train windows, scored on the same val/test/ood windows
as the model, saved beside its checkpoints (registered with the model, scored on its run); and the one the
model itself starts from (`fit_anchor`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from lvm_core.contracts.layout import EVAL_SPLITS
from lvm_core.data.windows import SequenceLike
from lvm_core.models.archs.base import VectorPredictor
from lvm_core.models.baselines.base import Baseline
from lvm_core.models.baselines.collection import fit_baselines, save_baselines
from lvm_core.models.baselines.recency import RecencyWeightedMean
from lvm_core.models.predict import mean_cosine
from lvm_core.train.data import TrainingData


def fit_scored_baselines(data: TrainingData, out_dir: Path) -> tuple[dict[str, Baseline], dict[str, dict[str, float]]]:
    """Every baseline fitted on `data`'s train windows and written to `out_dir`; with its mean cosine per
    evaluation split `data` has windows for (name -> split -> cosine)."""
    fitted = fit_baselines(data.vectors, data.sequences["train"])
    scores: dict[str, dict[str, float]] = {}
    for name, baseline in fitted.items():
        scores[name] = {
            split: mean_cosine(baseline, data.vectors, seqs)
            for split in EVAL_SPLITS
            if (seqs := data.split(split)) is not None
        }
    save_baselines(fitted, out_dir)
    return fitted, scores


def fit_anchor(model: nn.Module, vectors: np.ndarray, train_seqs: SequenceLike, seed: int = 0) -> np.ndarray | None:
    """Set the model's anchor to the recency-weighted mean fitted on the training windows (the same fit as
    the `recency_weighted_mean` baseline), so the untrained model predicts exactly that baseline; returns
    the weights (None for a module without an anchor)."""
    if not isinstance(model, VectorPredictor):
        return None
    weights = RecencyWeightedMean(seed=seed).fit(vectors, train_seqs).weights
    assert weights is not None  # set by fit
    model.set_anchor(weights)
    return weights
