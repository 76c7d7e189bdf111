"""What every architecture shares: the input check, the config check, and the one residual wrapper.

Every model maps a context of unit vectors `(B, context_len, dim)` to one L2-normalised vector `(B, dim)`:

    prediction = L2norm(anchor(ctx) + RESIDUAL_SCALE · residual(ctx, anchor(ctx)))
    anchor(ctx) = Σ_j (w_j + gate_j(G)) · ctx_j

The anchor is the recency-weighted mean of the context, the best trivial baseline on real text
(DESIGN.md "Measured on the embedded sample"): its slot weights `w` (`anchor_weights`) start uniform (the
context mean) and training sets them to the `RecencyWeightedMean` fitted on the training windows
(`set_anchor`) before epoch 0 is scored. `gate` is a small MLP over the context's own Gram matrix G
(the cosines between its chunks, which say nothing about the topic, so they carry over to unseen
articles) that shifts the slot weights per window, e.g. toward the last chunk after a change of subject.
Each architecture implements only `_residual`. The gate's and every residual's last layer start at zero,
so the untrained model *is* the recency-weighted mean and training only has to learn corrections.
`RESIDUAL_SCALE` slows the residual relative to the anchor: on ~7k training windows a full-speed residual
learns the training articles' topics before anything that carries over (docs/residual-models.md).

Models saved before the anchor existed (mean + residual) lack its parameters; loading fills uniform
weights, a zero gate and a residual scale of 1, which reproduces them exactly, and freezes the anchor,
so a resumed old training run keeps its optimiser's parameter groups and goes on as it would have.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lvm_core.models.config import ModelConfig

log = logging.getLogger(__name__)

ANCHOR_KEY = "anchor_weights"
ANCHOR_PREFIX = "anchor_"  # parameters of the anchor (weights and gate); the optimiser gives them their own group
RESIDUAL_SCALE = 0.1
GATE_HIDDEN = 32


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
        n = config.context_len
        self.anchor_weights = nn.Parameter(torch.full((n,), 1.0 / n))
        pairs = torch.triu_indices(n, n, 1)  # the chunk pairs (j < k) whose cosines the gate reads
        self.register_buffer("gram_pairs", pairs, persistent=False)  # moves with the module's device
        self.anchor_gate = nn.Sequential(nn.Linear(max(pairs.shape[1], 1), GATE_HIDDEN), nn.GELU(),
                                         zero_linear(GATE_HIDDEN, n))
        # saved with the weights: 1 marks a model from before the anchor (its residual was not scaled)
        self.register_buffer("residual_scale", torch.tensor(RESIDUAL_SCALE))
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

    def slot_weights(self, ctx: torch.Tensor) -> torch.Tensor:
        """Per-window slot weights of the anchor, (B, context_len): the fitted weights plus the gate's shift."""
        pairs = cast(torch.Tensor, self.gram_pairs)
        if pairs.shape[1] == 0:  # a single context chunk: no pair to compare
            return self.anchor_weights.expand(ctx.shape[0], -1)
        gram = torch.einsum("bnd,bmd->bnm", ctx, ctx)
        shift = cast(torch.Tensor, self.anchor_gate(gram[:, pairs[0], pairs[1]]))
        return self.anchor_weights + shift

    def anchor(self, ctx: torch.Tensor) -> torch.Tensor:
        """The baseline the residual corrects: Σ_j (w_j + gate_j) · ctx_j, (B, dim)."""
        return torch.einsum("bnd,bn->bd", ctx, self.slot_weights(ctx))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, context_len, dim) -> (B, dim), unit length."""
        self._check_input(ctx)
        base = self.anchor(ctx)
        scale = cast(torch.Tensor, self.residual_scale)
        return l2norm(base + scale * self._residual(ctx, base))

    def _residual(self, ctx: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _fill_legacy_anchor(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict from before the anchor (mean + residual) gets uniform weights, a zero gate and residual
    scale 1: the same model. Its anchor stays frozen (also once saved again), so a resumed old training
    run keeps its optimiser's parameter groups."""
    if not isinstance(module, VectorPredictor):
        return
    if prefix + "residual_scale" not in state_dict:
        n = module.config.context_len
        log.info("%s: weights saved without an anchor; using the context mean (uniform weights)", module.arch)
        state_dict[prefix + "residual_scale"] = torch.tensor(1.0)
        state_dict[prefix + ANCHOR_KEY] = torch.full((n,), 1.0 / n)
        for name, value in module.anchor_gate.state_dict().items():
            zero = name.startswith("2.")  # the gate's last layer: no shift of the weights
            state_dict[f"{prefix}anchor_gate.{name}"] = torch.zeros_like(value) if zero else value.detach().clone()
    legacy = float(state_dict[prefix + "residual_scale"]) == 1.0
    for name, param in module.named_parameters():
        if name.startswith(ANCHOR_PREFIX):
            param.requires_grad_(not legacy)
