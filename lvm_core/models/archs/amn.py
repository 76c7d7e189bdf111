"""Attention Memory Network (AMN) and its variant anchored on the attention mix (`amn`, `amn_mix`)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from lvm_core.models.archs.base import VectorPredictor, l2norm, zero_linear
from lvm_core.models.config import ModelConfig


class AMN(VectorPredictor):
    """Attention Memory Network (DESIGN.md "Models").

    Attention over positions picks a mix of context chunks; an MLP over [mean, mix] gives a residual
    added to the mean. The learned position embedding on the keys lets it tell context order apart
    (the reference AMN had none and was order-blind).
    """

    arch = "amn"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d, h, m = config.dim, config.hidden, config.mlp_hidden
        self.query = nn.Linear(d, h)
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
        base = ctx.mean(dim=1)
        q = self.query(base)  # (B, h)
        k = self.key(ctx + self.position)  # (B, N, h)
        scores = torch.einsum("bh,bnh->bn", q, k) * self._scale
        return torch.softmax(scores, dim=-1)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        weights = self.attention(ctx)
        mix = torch.einsum("bn,bnd->bd", weights, ctx)
        return cast(torch.Tensor, self.mlp(torch.cat([base, mix], dim=-1)))


class MixAnchoredAMN(AMN):
    """AMN whose output is anchored on its attention mix instead of the plain mean:
    L2norm(mix + MLP([mean, mix])).

    The recency-weighted mean (a strong baseline on real text) is then reachable with a zero residual
    and recency attention; the specified AMN has to squeeze that linear map through its LayerNorm'd
    256-d MLP bottleneck. Untrained, near-uniform attention makes it start at the context mean too.
    """

    arch = "amn_mix"

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        self._check_input(ctx)
        base = ctx.mean(dim=1)
        mix = torch.einsum("bn,bnd->bd", self.attention(ctx), ctx)
        return l2norm(mix + self.mlp(torch.cat([base, mix], dim=-1)))
