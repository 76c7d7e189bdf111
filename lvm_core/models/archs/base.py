"""What every architecture shares: the input check, the config check and the residual on the context mean.

Every model maps a context of unit vectors `(B, context_len, dim)` to one L2-normalised vector `(B, dim)`.
All models predict a *residual* on top of the context mean whose last layer starts at zero, so an
untrained model outputs exactly the "mean of context" baseline and training only has to learn the
correction. (The mean beats copy-last on real data, see DESIGN.md "Measured on the embedded sample".)
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lvm_core.models.config import ModelConfig


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """Unit rows along the last axis (torch; `io.vectors.l2_normalize` is the numpy one)."""
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer whose weights and bias start at zero, so the residual it produces starts at zero."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class VectorPredictor(nn.Module):
    """Shared input check and config handling; subclasses implement `_residual` from the context."""

    arch: ClassVar[str]

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != self.arch:
            raise ValueError(
                f"{type(self).__name__} implements arch {self.arch!r} but the config names {config.arch!r}; "
                "build models with lvm_core.models.build_model(config)"
            )
        self.config = config

    def _check_input(self, ctx: torch.Tensor) -> None:
        c = self.config
        if ctx.dim() != 3 or ctx.shape[1] != c.context_len or ctx.shape[2] != c.dim:
            raise ValueError(
                f"{type(self).__name__} expects a context of shape (B, {c.context_len}, {c.dim}), "
                f"got {tuple(ctx.shape)}"
            )

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, context_len, dim) -> (B, dim), unit length."""
        self._check_input(ctx)
        base = ctx.mean(dim=1)
        return l2norm(base + self._residual(ctx, base))

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
