"""Training losses between unit predictions and targets (`TrainConfig.loss`).

The loss is the one place where the objective is chosen (MSE, cosine, in-batch InfoNCE or a weighted mix);
benchmarks and tests call it apart from the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvm_core.train.config import TrainConfig


def compute_loss(pred: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Loss between unit predictions and (normalised) targets, as selected by `cfg.loss`."""
    target = F.normalize(target, dim=-1)

    def infonce() -> torch.Tensor:
        logits = pred @ target.T / cfg.infonce_temperature
        return F.cross_entropy(logits, torch.arange(pred.shape[0], device=pred.device))

    if cfg.loss == "mse":
        return F.mse_loss(pred, target)
    if cfg.loss == "cosine":
        return (1.0 - (pred * target).sum(dim=-1)).mean()
    if cfg.loss == "infonce":
        return infonce()
    return cfg.mse_weight * F.mse_loss(pred, target) + cfg.infonce_weight * infonce()
