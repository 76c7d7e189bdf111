"""What every architecture shares: the input check, the config check, and the one residual wrapper.

Every model maps a context of unit vectors `(B, context_len, dim)` to one L2-normalised vector `(B, dim)`:

    prediction = L2norm(anchor(ctx) + residual(ctx, anchor(ctx)))

`anchor(ctx) = Σ_j w_j · ctx_j` is the recency-weighted mean of the context, the best trivial baseline on
real text (DESIGN.md "Measured on the embedded sample"); its `context_len` slot weights `anchor_weights`
start uniform (the context mean) and training sets them to the `RecencyWeightedMean` fitted on the
training windows (`set_anchor`) before epoch 0 is scored. Each architecture implements only `_residual`,
whose last layer starts at zero, so the untrained model *is* that baseline and training only has to learn
the correction. The anchor weights stay trainable (five numbers, no weight decay).

Models saved before the anchor existed (mean + residual) lack `anchor_weights`; loading fills the uniform
weights, which reproduces them exactly, and freezes them, so a resumed old training run keeps its
optimiser's parameter groups and goes on as it would have.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lvm_core.models.config import ModelConfig

log = logging.getLogger(__name__)

ANCHOR_KEY = "anchor_weights"


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
    """The residual wrapper: anchor (recency-weighted context mean) + a zero-initialised learned residual.

    Subclasses implement `_residual(ctx, anchor)`; the input check, the anchor and the output
    normalisation live here only.
    """

    arch: ClassVar[str]

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != self.arch:
            raise ValueError(
                f"{type(self).__name__} implements arch {self.arch!r} but the config names {config.arch!r}; "
                "build models with lvm_core.models.build_model(config)"
            )
        self.config = config
        self.anchor_weights = nn.Parameter(torch.full((config.context_len,), 1.0 / config.context_len))
        self.register_load_state_dict_pre_hook(_fill_legacy_anchor)  # type: ignore[no-untyped-call]

    def set_anchor(self, weights: np.ndarray | torch.Tensor) -> None:
        """Use `weights` (one per context slot, e.g. a fitted `RecencyWeightedMean.weights`) as the anchor."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.shape != self.anchor_weights.shape or not torch.isfinite(w).all():
            raise ValueError(
                f"anchor weights must be {tuple(self.anchor_weights.shape)} finite numbers, got shape {tuple(w.shape)}"
            )
        with torch.no_grad():
            self.anchor_weights.copy_(w)

    def _check_input(self, ctx: torch.Tensor) -> None:
        c = self.config
        if ctx.dim() != 3 or ctx.shape[1] != c.context_len or ctx.shape[2] != c.dim:
            raise ValueError(
                f"{type(self).__name__} expects a context of shape (B, {c.context_len}, {c.dim}), "
                f"got {tuple(ctx.shape)}"
            )

    def anchor(self, ctx: torch.Tensor) -> torch.Tensor:
        """The baseline the residual corrects: Σ_j w_j · ctx_j, (B, dim)."""
        return torch.einsum("bnd,n->bd", ctx, self.anchor_weights)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, context_len, dim) -> (B, dim), unit length."""
        self._check_input(ctx)
        base = self.anchor(ctx)
        return l2norm(base + self._residual(ctx, base))

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _fill_legacy_anchor(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict from before the anchor (mean + residual) gets uniform, frozen anchor weights: the same model."""
    key = prefix + ANCHOR_KEY
    if key not in state_dict and isinstance(module, VectorPredictor):
        n = module.config.context_len
        log.info("%s: weights saved without %s; using the context mean (uniform weights)", module.arch, ANCHOR_KEY)
        state_dict[key] = torch.full((n,), 1.0 / n)
        module.anchor_weights.requires_grad_(False)
