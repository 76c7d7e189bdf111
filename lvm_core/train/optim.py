"""Optimizer and learning-rate schedule of a training run (AdamW, linear warm-up then cosine/constant, or one-cycle).

Both are rebuilt identically on resume and their state is saved in `state.pt`; the shape of that state is
fixed here, apart from the loop.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lvm_core.models.archs.base import ANCHOR_PREFIX
from lvm_core.train.config import TrainConfig

ANCHOR_LR_FACTOR = 10.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: decay on matrices, none on biases/norms; the anchor (slot weights and gate, ~250 parameters
    that see no topic, `models.archs.base`) at `ANCHOR_LR_FACTOR` x lr without decay. Empty groups are
    left out (a model loaded from before the anchor has it frozen: its saved optimiser state still fits)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    anchor = [p for n, p in named if n.startswith(ANCHOR_PREFIX)]
    decay = [p for n, p in named if not n.startswith(ANCHOR_PREFIX) and p.dim() >= 2]
    no_decay = [p for n, p in named if not n.startswith(ANCHOR_PREFIX) and p.dim() < 2]
    groups = [g for g in (
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": anchor, "weight_decay": 0.0, "lr": cfg.lr * ANCHOR_LR_FACTOR},
    ) if g["params"]]
    # The fused kernel makes the optimizer step ~5x cheaper on CPU than the per-tensor loop.
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


class _WarmupLambda:
    """LR factor: linear warm-up, then cosine decay to 0 or constant (a plain object: not stored in state)."""

    def __init__(self, warmup: int, total: int, cosine: bool):
        self.warmup, self.total, self.cosine = warmup, total, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR needs at least two steps in each phase; shorter runs fall back to warm-up + cosine.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g.get("lr", cfg.lr) for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=min(max(cfg.warmup_fraction, 2.0 / total_steps), 0.5),
            anneal_strategy="cos",
        )
    warmup = int(round(cfg.warmup_fraction * total_steps))
    lam = _WarmupLambda(warmup, total_steps, cosine=cfg.schedule != "constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lam)
