"""Attention Memory Network (AMN) and its variant that also adds its attention mix (`amn`, `amn_mix`)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from lvm_core.models.archs.base import VectorPredictor, zero_linear
from lvm_core.models.config import ModelConfig


class AMN(VectorPredictor):
    """Attention Memory Network (DESIGN.md "Models").

    Attention over positions picks a mix of context chunks; an MLP over [anchor, mix] gives the residual
    added to the anchor (the recency-weighted mean, `VectorPredictor`). The learned position embedding on
    the keys lets it tell context order apart (the reference AMN had none and was order-blind). The query
    starts at zero, so untrained attention is exactly uniform.
    """

    arch = "amn"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d, h, m = config.dim, config.hidden, config.mlp_hidden
        self.query = zero_linear(d, h)
        self.key = nn.Linear(d, h)
        self.position = nn.Parameter(torch.randn(config.context_len, d) * 0.02)
        self.mlp = nn.Sequential(
            nn.Linear(2 * d, m),
            nn.GELU(),
            nn.LayerNorm(m),
            nn.Dropout(config.dropout),
            nn.Linear(m, h),
            nn.GELU(),
            nn.LayerNorm(h),
            nn.Dropout(config.dropout),
            zero_linear(h, d),
        )
        self._scale = 1.0 / math.sqrt(h)

    def attention(self, ctx: torch.Tensor) -> torch.Tensor:
        """Attention weights over context positions, (B, context_len); exposed for analysis."""
        q = self.query(self.anchor(ctx))  # (B, h)
        k = self.key(ctx + self.position)  # (B, N, h)
        scores = torch.einsum("bh,bnh->bn", q, k) * self._scale
        return torch.softmax(scores, dim=-1)

    def mix(self, ctx: torch.Tensor) -> torch.Tensor:
        """The attention-weighted context, (B, dim)."""
        return torch.einsum("bn,bnd->bd", self.attention(ctx), ctx)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.mlp(torch.cat([base, self.mix(ctx)], dim=-1)))


class MixAnchoredAMN(AMN):
    """AMN whose residual also holds its attention mix linearly: anchor + (mix − mean) + MLP([anchor, mix]).

    The mix lets the weighting of the context depend on the context itself, without squeezing that linear
    map through the MLP's LayerNorm'd bottleneck. Untrained, attention is uniform, mix = mean and the
    model is its anchor. (Before the anchor existed this model was L2norm(mix + MLP([mean, mix])), which
    is what it computes with uniform anchor weights: models saved then load unchanged.)
    """

    arch = "amn_mix"

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        mix = self.mix(ctx)
        return mix - ctx.mean(dim=1) + cast(torch.Tensor, self.mlp(torch.cat([base, mix], dim=-1)))
