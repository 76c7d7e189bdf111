"""One module per model architecture; `lvm_core.models.builder` registers them by name."""

from lvm_core.models.archs.amn import AMN, MixAnchoredAMN
from lvm_core.models.archs.base import VectorPredictor
from lvm_core.models.archs.recurrent import GRUStack, LSTMModel
from lvm_core.models.archs.transformer import CausalTransformer

__all__ = ["AMN", "CausalTransformer", "GRUStack", "LSTMModel", "MixAnchoredAMN", "VectorPredictor"]
