"""The trivial baselines of a training run: fitted on its train windows, scored on the same val/test/ood windows
as the model, saved beside its checkpoints (registered with the model, scored on its run)."""

from __future__ import annotations

from pathlib import Path

from lvm_core.contracts.layout import EVAL_SPLITS
from lvm_core.models.baselines.base import Baseline
from lvm_core.models.baselines.collection import fit_baselines, save_baselines
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
