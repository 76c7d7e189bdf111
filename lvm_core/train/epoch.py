"""One training epoch and what the loop keeps between epochs: its state, the validation cosine, divergence checks.

Divergence (non-finite loss, smoothed-loss blow-up, gradient-norm explosion) is detected inside the step
loop, before a bad update is applied. The loop's counters are what a checkpoint saves, so a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lvm_core.contracts.errors import LvmError
from lvm_core.data.windows import SequenceLike
from lvm_core.models.predict import iter_predictions
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.progress import progress_enabled
from lvm_core.train.batches import WindowDataset, epoch_seed, make_loader
from lvm_core.train.config import EpochMetrics, TrainConfig
from lvm_core.train.losses import compute_loss

_EMA_BETA = 0.9  # smoothing of the batch loss for blow-up detection
_EMA_WARMUP_STEPS = 10  # steps before the smoothed loss is trusted as a reference

FaultHook = Callable[[int, int, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]


def evaluate_cosine(model: nn.Module, vectors: np.ndarray | torch.Tensor, seqs: SequenceLike, batch_size: int = 1024) -> float:
    """Mean cos(prediction, target) over the windows of `seqs` (the early-stopping metric).

    Predictions come from the one prediction path (`lvm_core.models.predict`); the cosine stays torch's,
    batch by batch, so a NaN prediction gives NaN (the divergence check) rather than an error.
    """
    vec = vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors
    total, n = 0.0, 0
    for pred, tgt in iter_predictions(model, vec, seqs, batch_size, allow_empty=False):
        total += float(F.cosine_similarity(torch.from_numpy(pred), torch.from_numpy(tgt), dim=-1).double().sum())
        n += pred.shape[0]
    return total / max(n, 1)


@dataclass
class LoopState:
    """Counters, early-stopping and divergence state of a run; saved in `state.pt` so a resume continues it."""

    epoch: int = 0
    global_step: int = 0
    best_val: float = -math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    loss_ema: float | None = None
    best_loss_ema: float | None = None
    ema_steps: int = 0
    initial_val: float | None = None
    status: str = "running"
    history: list[EpochMetrics] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_val_cosine": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "loss_ema": self.loss_ema,
            "best_loss_ema": self.best_loss_ema,
            "ema_steps": self.ema_steps,
            "initial_val_cosine": self.initial_val,
            "status": self.status,
        }

    def load(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_val = float(state["best_val_cosine"])
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.loss_ema = state["loss_ema"]
        self.best_loss_ema = state["best_loss_ema"]
        self.ema_steps = int(state["ema_steps"])
        self.initial_val = state["initial_val_cosine"]
        self.status = str(state["status"])
        self.history = [EpochMetrics(**h) for h in history]


class Diverged(LvmError):
    """Training diverged; raised before a bad update is applied and returned by `train` as a status."""



def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dataset: WindowDataset,
    cfg: TrainConfig,
    loop: LoopState,
    epoch: int,
    fault_hook: FaultHook | None,
) -> tuple[float, float, float, float, float]:
    """One pass over the shuffled training windows; raises `Diverged` before a bad update is applied.

    Returns (mean loss, mean grad norm, max grad norm, lr of the epoch's last step, seconds).
    """
    start = time.perf_counter()
    model.train()
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=epoch_seed(cfg.seed, epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    loss_sum, n_seen, grad_sum, grad_max, steps, lr = 0.0, 0, 0.0, 0.0, 0, 0.0
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress_enabled())
    try:
        for step, (ctx, tgt) in enumerate(loader):
            if fault_hook is not None:
                replaced = fault_hook(epoch, step, ctx, tgt)
                if replaced is not None:
                    ctx, tgt = replaced
            pred = model(ctx)
            loss = compute_loss(pred, tgt, cfg)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise Diverged(f"non-finite loss ({value}) at epoch {epoch} step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            if not math.isfinite(norm) or norm > cfg.max_grad_norm_explode:
                raise Diverged(
                    f"gradient norm explosion ({norm:.3g} > {cfg.max_grad_norm_explode:g}) at epoch {epoch} step {step}"
                )
            _check_blowup(loop, value, cfg, epoch, step)
            lr = float(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            loop.global_step += 1
            crash_point("train.batch")
            b = ctx.shape[0]
            loss_sum += value * b
            n_seen += b
            grad_sum += norm
            grad_max = max(grad_max, norm)
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}")
    finally:
        bar.close()
    return loss_sum / max(n_seen, 1), grad_sum / max(steps, 1), grad_max, lr, time.perf_counter() - start


def _check_blowup(loop: LoopState, value: float, cfg: TrainConfig, epoch: int, step: int) -> None:
    """Smoothed batch loss against its best value so far: a jump by `loss_blowup_factor` means divergence."""
    loop.loss_ema = value if loop.loss_ema is None else _EMA_BETA * loop.loss_ema + (1 - _EMA_BETA) * value
    loop.ema_steps += 1
    if loop.ema_steps < _EMA_WARMUP_STEPS:
        return
    if loop.best_loss_ema is None or loop.loss_ema < loop.best_loss_ema:
        loop.best_loss_ema = loop.loss_ema
    if loop.best_loss_ema > 0 and loop.loss_ema > cfg.loss_blowup_factor * loop.best_loss_ema:
        raise Diverged(
            f"loss blow-up (smoothed {loop.loss_ema:.4g} > {cfg.loss_blowup_factor:g} x best {loop.best_loss_ema:.4g}) "
            f"at epoch {epoch} step {step}"
        )
