"""Encoder identity: the fingerprint every embeddings artifact carries, the Encoder protocol, the errors.

Vectors from two encoders live in different spaces, so an artifact built with another fingerprint is
refused (`ensure_same_fingerprint`) instead of being mixed in. This module depends on nothing else of
the embedding package, so the cache, the vector files and the model folders can all use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lvm_core.contracts.errors import DataContractError, UserError
from lvm_core.io import storage

__all__ = [
    "REFERENCE_BACKEND",
    "REFERENCE_PRECISION",
    "UNIT_NORM_TOLERANCE",
    "Encoder",
    "EncoderAgreementError",
    "EncoderFingerprint",
    "EncoderLoadError",
    "FingerprintMismatchError",
    "ensure_same_fingerprint",
]

# Same tolerance as the data gate (GateThresholds.unit_norm_tolerance).
UNIT_NORM_TOLERANCE = 1e-3
REFERENCE_BACKEND = "torch"
REFERENCE_PRECISION = "fp32"


class FingerprintMismatchError(UserError, ValueError):
    """An artifact was produced by another encoder than the one expected."""


class EncoderLoadError(UserError, RuntimeError):
    """An encoder cannot be resolved or loaded (missing folder, not in the offline hub cache, bad files)."""


class EncoderAgreementError(EncoderLoadError):
    """A faster backend's vectors differ too much from the fp32 reference to be used."""


@dataclass(frozen=True)
class EncoderFingerprint:
    """Identity of an encoder: what must match for two sets of vectors to be comparable.

    `casefold` is the text normalisation of the chunk hashes that key this encoder's vectors
    (`chunking.text_hash`): True for an uncased encoder (case-folded, the behaviour before the field
    existed, so a fingerprint without it reads as True and keeps its id), False for a cased one.

    `backend` and `precision` say how the weights were run ("torch"/"fp32", "torch"/"fp16",
    "onnx"/"int8"): the same weights give slightly different vectors per backend, so each has its own
    id. Fingerprints written before these fields existed read as torch fp32 and keep their ids.
    """

    model_name: str
    weights_digest: str
    dim: int
    normalized: bool = True
    casefold: bool = True
    backend: str = REFERENCE_BACKEND
    precision: str = REFERENCE_PRECISION

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"EncoderFingerprint.model_name must be a non-empty string, got {self.model_name!r}")
        if not isinstance(self.weights_digest, str) or not self.weights_digest:
            raise ValueError(
                f"EncoderFingerprint.weights_digest must be a non-empty string, got {self.weights_digest!r}"
            )
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim <= 0:
            raise ValueError(f"EncoderFingerprint.dim must be a positive int, got {self.dim!r}")
        if not isinstance(self.normalized, bool):
            raise ValueError(f"EncoderFingerprint.normalized must be a bool, got {self.normalized!r}")
        if not isinstance(self.casefold, bool):
            raise ValueError(f"EncoderFingerprint.casefold must be a bool, got {self.casefold!r}")
        for name in ("backend", "precision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"EncoderFingerprint.{name} must be a non-empty string, got {value!r}")

    @property
    def is_reference(self) -> bool:
        """Torch fp32: the backend every other one is checked against."""
        return (self.backend, self.precision) == (REFERENCE_BACKEND, REFERENCE_PRECISION)

    @property
    def spec(self) -> str:
        """An encoder spec that `load_encoder` resolves to this backend, e.g. "…/all-MiniLM-L6-v2@onnx-int8"."""
        backend = self.backend if self.precision == REFERENCE_PRECISION else f"{self.backend}-{self.precision}"
        return f"{self.model_name}@{backend}"

    @property
    def id(self) -> str:
        """Short stable hash of all fields; names cache folders and tags runs."""
        return storage.json_digest(self._fields())[:16]

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model_name": self.model_name,
            "weights_digest": self.weights_digest,
            "dim": self.dim,
            "normalized": self.normalized,
        }
        if not self.casefold:  # only a cased encoder adds it: uncased ids stay those of older fingerprints
            fields["casefold"] = False
        if not self.is_reference:  # likewise: torch fp32 ids stay those of fingerprints without a backend
            fields["backend"] = self.backend
            fields["precision"] = self.precision
        return fields

    def to_dict(self) -> dict[str, Any]:
        """All fields plus the derived `id` (for people and tags; checked by `from_dict`)."""
        return {
            **self._fields(),
            "casefold": self.casefold,
            "backend": self.backend,
            "precision": self.precision,
            "id": self.id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderFingerprint:
        """Inverse of `to_dict`; a missing key or an `id` that does not match the fields is an error."""
        if not isinstance(d, dict):
            raise DataContractError(f"encoder fingerprint must be a JSON object, got {type(d).__name__}")
        required = ("model_name", "weights_digest", "dim", "normalized")
        missing = [k for k in required if k not in d]
        if missing:
            raise DataContractError(
                f"encoder fingerprint lacks key(s) {missing}; present: {sorted(d)}"
            )
        try:
            fp = cls(
                model_name=d["model_name"],
                weights_digest=d["weights_digest"],
                dim=d["dim"],
                normalized=d["normalized"],
                casefold=d.get("casefold", True),  # older files: the case-folding hashes of before
                backend=d.get("backend", REFERENCE_BACKEND),  # older files: torch fp32
                precision=d.get("precision", REFERENCE_PRECISION),
            )
        except ValueError as exc:
            raise DataContractError(f"invalid encoder fingerprint: {exc}") from exc
        if "id" in d and d["id"] != fp.id:
            raise DataContractError(
                f"encoder fingerprint id {d['id']!r} does not match its fields (expected {fp.id!r}); "
                "the file was edited by hand or is corrupt"
            )
        return fp

    def describe(self) -> str:
        """One line naming the model, dimension and digest prefix (for error messages and logs)."""
        norm = "normalized" if self.normalized else "not normalized"
        case = "case-folded hashes" if self.casefold else "cased hashes"
        return (
            f"{self.model_name} ({self.backend} {self.precision}, dim={self.dim}, "
            f"weights={self.weights_digest[:12]}, {norm}, {case}, id={self.id})"
        )


def ensure_same_fingerprint(expected: EncoderFingerprint, actual: EncoderFingerprint, what: str) -> None:
    """Raise `FingerprintMismatchError` unless `actual` (the artifact's) equals `expected`."""
    if expected != actual:
        raise FingerprintMismatchError(
            f"{what} was built with another encoder: expected {expected.describe()}, "
            f"found {actual.describe()}. Rebuild it with the expected encoder; vectors from different "
            "encoders must not be mixed."
        )


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into float32 unit vectors and can say which model it is."""

    @property
    def fingerprint(self) -> EncoderFingerprint: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised."""
        ...
