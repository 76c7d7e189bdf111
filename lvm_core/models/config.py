"""`ModelConfig`: everything needed to rebuild a model's structure, stored in every model folder's config.json.

Checkpoints, registered models and the builder read the config without any architecture's code; the
architecture names (`Arch`) are the keys of `builder.MODEL_REGISTRY`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Arch = Literal["amn", "amn_mix", "gru", "lstm", "transformer"]


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
