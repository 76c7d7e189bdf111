"""What a training run is given and what it gives back: `TrainConfig`, `EpochMetrics`, `TrainResult` (and
`TrainingDivergedError`, raised where a diverged result stops a flow).

The flows, the CLI, checkpoints (`meta.json`) and the tracking run all read these types; they carry no torch
code, so reading a configuration never pulls in the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import CHECKPOINT_BEST_DIR, CHECKPOINT_LAST_DIR, CHECKPOINT_META_FILE


class TrainConfig(BaseModel):
    """Optimisation settings (the Prefect/CLI form of a training run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay on matrices (not biases/norms)")
    loss: Literal["mse", "cosine", "infonce", "mse+infonce"] = Field(
        "mse", description="mse/cosine on the normalised output, in-batch InfoNCE, or mse_weight*mse + infonce_weight*infonce"
    )
    mse_weight: float = Field(1.0, ge=0, description="weight of MSE in loss='mse+infonce'")
    infonce_weight: float = Field(0.1, ge=0, description="weight of InfoNCE in loss='mse+infonce'")
    infonce_temperature: float = Field(0.05, gt=0)
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of all steps with linear warm-up (onecycle: pct_start)")
    seed: int = 0
    patience: int = Field(3, ge=1, description="epochs without val-cosine improvement before stopping")
    min_delta: float = Field(1e-4, ge=0, description="smallest val-cosine gain that counts as improvement")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm (None: no clipping)")
    max_grad_norm_explode: float = Field(1e3, gt=0, description="pre-clip gradient norm above which training diverged")
    loss_blowup_factor: float = Field(10.0, gt=1, description="smoothed loss above factor x its best value: diverged")
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms during training")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: leave as is)")
    eval_batch_size: int = Field(1024, ge=1)


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; passed to `on_epoch_end` after the epoch's checkpoint is on disk."""

    epoch: int
    train_loss: float
    val_cosine: float
    lr: float  # learning rate of the epoch's last optimizer step
    grad_norm: float  # mean pre-clip gradient norm over the epoch's steps
    grad_norm_max: float
    epoch_seconds: float
    steps: int
    is_best: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrainStatus = Literal["completed", "early_stopped", "diverged"]


class TrainingDivergedError(UserError, RuntimeError):
    """Training stopped on divergence; the last good checkpoint is kept and nothing is registered."""


@dataclass
class TrainResult:
    """Outcome of `train`. `model` holds the best weights, the untrained ones when `best_epoch == 0` (no
    training epoch beat the untrained model on val); None only when not even epoch 0 could be scored."""

    status: TrainStatus
    reason: str
    history: list[EpochMetrics]
    best_epoch: int | None
    best_val_cosine: float | None
    initial_val_cosine: float | None
    checkpoint_dir: Path
    model: nn.Module | None = None
    resumed_from_epoch: int | None = None
    n_parameters: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "diverged"

    @property
    def epochs_completed(self) -> int:
        return self.history[-1].epoch if self.history else 0

    @property
    def best_checkpoint(self) -> Path | None:
        p = self.checkpoint_dir / CHECKPOINT_BEST_DIR
        return p if (p / CHECKPOINT_META_FILE).is_file() else None

    @property
    def last_checkpoint(self) -> Path | None:
        p = self.checkpoint_dir / CHECKPOINT_LAST_DIR
        return p if (p / CHECKPOINT_META_FILE).is_file() else None
