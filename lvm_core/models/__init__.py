"""Next-chunk vector predictors: one `nn.Module` per architecture, built only through `build_model`.

Every model maps a context of unit vectors `(B, context_len, dim)` to one L2-normalised vector `(B, dim)`.
All models predict a *residual* on top of the context mean whose last layer starts at zero, so an
untrained model outputs exactly the "mean of context" baseline and training only has to learn the
correction. (The mean beats copy-last on real data, see DESIGN.md "Measured on the embedded sample".)

The architecture is chosen by `ModelConfig.arch` and resolved through `MODEL_REGISTRY` only: there is one
class per name, every class checks that the config it receives names it, and checkpoints store `arch`
plus the whole config, so a checkpoint can never be loaded into a different model class.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

Arch = Literal["amn", "amn_mix", "gru", "lstm", "transformer"]


class UnknownArchitectureError(KeyError):
    """A model architecture name that `MODEL_REGISTRY` does not know."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0]) if self.args else "unknown architecture"


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model's structure (stored in every checkpoint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: Arch
    dim: int = Field(gt=0, description="vector dimension D (384 for MiniLM, 768 for larger encoders)")
    context_len: int = Field(default=5, gt=0, description="number of context chunks N")
    hidden: int = Field(default=256, gt=0, description="attention/recurrent/transformer width h")
    mlp_hidden: int = Field(default=512, gt=0, description="MLP / feed-forward width m")
    num_layers: int = Field(default=2, gt=0, description="recurrent or transformer layers (unused by AMN)")
    num_heads: int = Field(default=4, gt=0, description="transformer attention heads (transformer only)")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.arch == "transformer" and self.hidden % self.num_heads != 0:
            raise ValueError(
                f"transformer hidden={self.hidden} must be divisible by num_heads={self.num_heads}"
            )
        return self


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer whose weights and bias start at zero, so the residual it produces starts at zero."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _VectorPredictor(nn.Module):
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
        return _l2norm(base + self._residual(ctx, base))

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AMN(_VectorPredictor):
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
            _zero_linear(h, d),
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
        return self.mlp(torch.cat([base, mix], dim=-1))


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
        return _l2norm(mix + self.mlp(torch.cat([base, mix], dim=-1)))


class _RecurrentPredictor(_VectorPredictor):
    """GRU/LSTM stack over the context; the last hidden state (after LayerNorm) gives the residual.

    Residual target: the context *mean* (not ctx[-1]), same as AMN, so every architecture starts from
    the stronger trivial baseline.
    """

    _rnn_cls: ClassVar[type[nn.RNNBase]]

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
        self.head = _zero_linear(config.hidden, config.dim)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(ctx)
        return self.head(self.dropout(self.norm(out[:, -1])))


class GRUStack(_RecurrentPredictor):
    """Stacked GRU (`num_layers`, width `hidden`); residual on the context mean."""

    arch = "gru"
    _rnn_cls = nn.GRU


class LSTMModel(_RecurrentPredictor):
    """Stacked LSTM (`num_layers`, width `hidden`); residual on the context mean."""

    arch = "lstm"
    _rnn_cls = nn.LSTM


class CausalTransformer(_VectorPredictor):
    """Small pre-norm Transformer encoder with a causal mask; predicts from the last position.

    Width `hidden`, feed-forward `mlp_hidden`, `num_layers` layers (2 by default), `num_heads` heads,
    learned position embedding; residual on the context mean.
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
        self.head = _zero_linear(h, config.dim)
        mask = nn.Transformer.generate_square_subsequent_mask(config.context_len)
        self.register_buffer("causal_mask", mask, persistent=False)

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        x = self.input(ctx) + self.position
        x = self.encoder(x, mask=self.causal_mask, is_causal=True)
        return self.head(self.norm(x[:, -1]))


MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    AMN.arch: AMN,
    MixAnchoredAMN.arch: MixAnchoredAMN,
    GRUStack.arch: GRUStack,
    LSTMModel.arch: LSTMModel,
    CausalTransformer.arch: CausalTransformer,
}


def model_class(arch: str) -> type[nn.Module]:
    """The one class registered for `arch`; `UnknownArchitectureError` names the known ones."""
    try:
        return MODEL_REGISTRY[arch]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise UnknownArchitectureError(f"unknown model architecture {arch!r}; known: {known}") from None


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The only constructor path: validate the config and instantiate the class registered for its arch."""
    if not isinstance(config, ModelConfig):
        if isinstance(config, dict) and "arch" in config:
            model_class(str(config["arch"]))  # a clear error for an unknown name before pydantic's
        config = ModelConfig.model_validate(config)
    cls = model_class(config.arch)
    return cls(config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
