"""The architecture registry and the only constructor path, `build_model`.

The architecture is chosen by `ModelConfig.arch` and resolved through `MODEL_REGISTRY` only: there is one
class per name, every class checks that the config it receives names it, and checkpoints store `arch` plus
the whole config, so a checkpoint can never be loaded into a different model class.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lvm_core.contracts.errors import UserError
from lvm_core.models.archs.amn import AMN, MixAnchoredAMN
from lvm_core.models.archs.recurrent import GRUStack, LSTMModel
from lvm_core.models.archs.transformer import CausalTransformer
from lvm_core.models.config import ModelConfig


class UnknownArchitectureError(UserError, KeyError):
    """A model architecture name that `MODEL_REGISTRY` does not know."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0]) if self.args else "unknown architecture"



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
