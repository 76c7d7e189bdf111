"""Recurrent predictors: stacked GRU and LSTM over the context (`gru`, `lstm`)."""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import nn

from lvm_core.models.archs.base import VectorPredictor, zero_linear
from lvm_core.models.config import ModelConfig


class RecurrentPredictor(VectorPredictor):
    """GRU/LSTM stack over the context; the last hidden state (after LayerNorm) gives the residual.

    Like every architecture, it adds that residual to the recency-weighted mean (`VectorPredictor`).
    """

    _rnn_cls: ClassVar[type[nn.GRU] | type[nn.LSTM]]

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.rnn = self._rnn_cls(
            input_size=config.dim,
            hidden_size=config.hidden,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.head = zero_linear(config.hidden, config.dim)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(ctx)
        return cast(torch.Tensor, self.head(self.dropout(self.norm(out[:, -1]))))


class GRUStack(RecurrentPredictor):
    """Stacked GRU (`num_layers`, width `hidden`); residual on the recency-weighted mean."""

    arch = "gru"
    _rnn_cls = nn.GRU


class LSTMModel(RecurrentPredictor):
    """Stacked LSTM (`num_layers`, width `hidden`); residual on the recency-weighted mean."""

    arch = "lstm"
    _rnn_cls = nn.LSTM
