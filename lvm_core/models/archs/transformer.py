"""Small causal Transformer encoder predicting from the last position (`transformer`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from lvm_core.models.archs.base import VectorPredictor, zero_linear
from lvm_core.models.config import ModelConfig


class CausalTransformer(VectorPredictor):
    """Small pre-norm Transformer encoder with a causal mask; predicts from the last position.

    Width `hidden`, feed-forward `mlp_hidden`, `num_layers` layers (2 by default), `num_heads` heads,
    learned position embedding; residual on the recency-weighted mean.
    """

    arch = "transformer"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        h = config.hidden
        self.input = nn.Linear(config.dim, h)
        self.position = nn.Parameter(torch.randn(config.context_len, h) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=h,
            nhead=config.num_heads,
            dim_feedforward=config.mlp_hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        self.head = zero_linear(h, config.dim)
        mask = nn.Transformer.generate_square_subsequent_mask(config.context_len)
        self.register_buffer("causal_mask", mask, persistent=False)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        x = self.input(ctx) + self.position
        x = self.encoder(x, mask=self.causal_mask, is_causal=True)
        return cast(torch.Tensor, self.head(self.norm(x[:, -1])))
