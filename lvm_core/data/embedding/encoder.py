"""Load encoders: the sentence-transformers (torch) encoder, backend choice, one instance per process.

A spec "<model>[@<backend>]" picks the weights (`model_folder`) and how they run (torch fp32/fp16 or
ONNX int8, `onnx`); a backend other than torch fp32 must agree with fp32 (`agreement`) to be used.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import default_data_dir
from lvm_core.data.embedding import onnx
from lvm_core.data.embedding.agreement import AGREEMENT_MIN_MEAN_COSINE, check_agreement, require_agreement
from lvm_core.data.embedding.fingerprint import (
    REFERENCE_BACKEND,
    REFERENCE_PRECISION,
    Encoder,
    EncoderFingerprint,
    EncoderLoadError,
)
from lvm_core.data.embedding.hash_encoder import HashTestEncoder, is_hash_test_spec
from lvm_core.data.embedding.model_folder import (
    DEFAULT_MODEL,
    encoder_casefolds,
    resolve_model_folder,
    weights_digest,
)
from lvm_core.io import storage
from lvm_core.io.vectors import l2_normalize, row_norms

if TYPE_CHECKING:  # sentence-transformers pulls torch; import it only when an encoder is loaded
    from sentence_transformers import SentenceTransformer

__all__ = ["BACKENDS", "SentenceTransformerEncoder", "load_encoder", "parse_encoder_spec"]

# Encoder spec suffixes ("<model>@<backend>") -> (backend, precision); "auto" is resolved at load.
BACKENDS: dict[str, tuple[str, str] | None] = {
    "auto": None,
    "torch": ("torch", "fp32"),
    "torch-fp32": ("torch", "fp32"),
    "torch-fp16": ("torch", "fp16"),
    "onnx-int8": ("onnx", "int8"),
}


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local folder, with its fingerprint.

    `precision="fp16"` runs the model in half precision (for CUDA); vectors still come back float32.
    """

    backend = REFERENCE_BACKEND

    def __init__(
        self,
        model_name_or_path: str | Path,
        device: str = "cpu",
        model_name: str | None = None,
        precision: str = REFERENCE_PRECISION,
    ):
        """Load the model in `model_name_or_path` (a local folder, or a hub id present in the offline cache).

        `model_name` overrides the name recorded in the fingerprint (used for the packaged default model).
        """
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch encoder precision must be fp32 or fp16, got {precision!r}")
        folder, resolved_name = resolve_model_folder(str(model_name_or_path))
        self.model_path = folder
        self.device = device
        self.precision = precision
        self.agreement: dict[str, Any] | None = None
        try:
            from sentence_transformers import SentenceTransformer

            self.model: SentenceTransformer = SentenceTransformer(
                str(folder), device=device, local_files_only=True
            )
            if precision == "fp16":
                self.model.half()
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear error
            raise EncoderLoadError(
                f"cannot load encoder {str(model_name_or_path)!r} from {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise EncoderLoadError(f"encoder {str(model_name_or_path)!r} does not report its output dimension")
        self._model_name = model_name or resolved_name
        self._dim = int(dim)
        self.casefold = encoder_casefolds(folder)
        self._fingerprint: EncoderFingerprint | None = None

    @property
    def fingerprint(self) -> EncoderFingerprint:
        """Computed on first use (hashing ~90 MB of weights takes a fraction of a second)."""
        if self._fingerprint is None:
            self._fingerprint = EncoderFingerprint(
                model_name=self._model_name,
                weights_digest=weights_digest(self.model_path),
                dim=self._dim,
                normalized=True,
                casefold=self.casefold,
                backend=REFERENCE_BACKEND,
                precision=self.precision,
            )
        return self._fingerprint

    @property
    def cache_key(self) -> str:
        """Names this backend's agreement record (the device is part of it: kernels differ per device)."""
        return f"torch-{self.precision}-{self.device.replace(':', '')}-{self.fingerprint.id}"

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode with sentence-transformers (it already sorts by length); float32 unit rows."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self.model.encode(
            texts if isinstance(texts, list) else list(texts),
            batch_size=batch_size,
            show_progress_bar=bool(show_progress and sys.stderr.isatty()),
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self._dim):
            raise EncoderLoadError(
                f"encoder {self._model_name!r} returned shape {vectors.shape}, expected {(len(texts), self._dim)}"
            )
        return _renormalize(vectors, what=f"encoder {self._model_name!r} output")

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self._model_name!r}, device={self.device!r}, precision={self.precision!r})"


def _renormalize(vectors: np.ndarray, what: str) -> np.ndarray:
    """Divide rows by their norm in place; a zero or non-finite row is an error, not a silent NaN."""
    norms = row_norms(vectors)
    bad = ~np.isfinite(norms) | (norms <= 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise DataContractError(f"{what}: {int(bad.sum())} zero or non-finite row(s), e.g. rows {rows}")
    return l2_normalize(vectors, out=vectors)


def parse_encoder_spec(spec: str | None) -> tuple[str, str]:
    """Split "<model>[@<backend>]" into (model, backend); no suffix means "auto".

    Backends: auto (CUDA fp16 when a GPU is present, else torch fp32), torch (fp32), torch-fp16,
    onnx-int8. A bare "@onnx-int8" names the packaged default model. A local folder whose name holds
    an "@" is taken as a whole.
    """
    if spec is None:
        return DEFAULT_MODEL, "auto"
    name, sep, backend = str(spec).rpartition("@")
    if not sep:
        return str(spec), "auto"
    if backend in BACKENDS:
        return name or DEFAULT_MODEL, backend
    if Path(str(spec)).expanduser().exists():
        return str(spec), "auto"
    raise EncoderLoadError(
        f"unknown encoder backend {backend!r} in {str(spec)!r}; use one of {', '.join(BACKENDS)} "
        "(e.g. all-MiniLM-L6-v2@onnx-int8)"
    )


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _resolve_backend(backend: str, device: str | None) -> tuple[str, str, str]:
    """(backend, precision, device) for a spec backend; "auto" and a missing device are decided here."""
    if backend == "onnx-int8":
        if device not in (None, "cpu"):
            raise EncoderLoadError(f"the onnx-int8 encoder backend runs on the CPU only, not on device {device!r}")
        return "onnx", "int8", "cpu"
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    if backend == "auto":
        return (REFERENCE_BACKEND, "fp16", device) if device.startswith("cuda") else (
            REFERENCE_BACKEND, REFERENCE_PRECISION, device)
    kind, precision = BACKENDS[backend]  # type: ignore[misc]
    if precision == "fp16" and not device.startswith("cuda"):
        raise EncoderLoadError(
            f"the torch-fp16 encoder backend needs a CUDA device, not {device!r}"
            f"{'' if _cuda_available() else ' (none is present)'}; use @torch (fp32) or @onnx-int8 on the CPU"
        )
    return kind, precision, device


_encoders: dict[tuple[Any, ...], Encoder] = {}
_encoders_lock = threading.RLock()


def load_encoder(
    name_or_path: str | Path | EncoderFingerprint | None = None,
    device: str | None = None,
    *,
    cache_dir: Path | None = None,
    threads: int | None = None,
    min_agreement: float = AGREEMENT_MIN_MEAN_COSINE,
    export_settings: dict[str, Any] | None = None,
) -> Encoder:
    """The encoder for a spec "<model>[@<backend>]" (default: packaged all-MiniLM-L6-v2), loaded once per process.

    `device=None` picks CUDA when present, else the CPU. A fingerprint loads the backend it names.
    A backend other than torch fp32 is checked against fp32 on a fixed sample of real chunks (once per
    export, the result kept under `cache_dir`, default `<LVM_DATA_DIR>/cache/encoders`) and refused
    with `EncoderAgreementError` below `min_agreement` mean cosine. `threads` (onnx-int8) defaults to
    `OMP_NUM_THREADS`, else the usable CPUs. Loading takes seconds, so callers in a process share one
    instance per (model, backend, device). The spec `hash-test` (benchmarks only) gives `HashTestEncoder`.
    """
    if isinstance(name_or_path, EncoderFingerprint):
        name_or_path = name_or_path.spec
    if is_hash_test_spec(name_or_path):
        return HashTestEncoder()
    name, backend_spec = parse_encoder_spec(None if name_or_path is None else str(name_or_path))
    folder, model_name = resolve_model_folder(name)
    backend, precision, device = _resolve_backend(backend_spec, device)
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    settings_key = storage.json_digest(export_settings) if export_settings is not None else None
    key = (str(folder), model_name, backend, precision, device, threads if backend == "onnx" else None, settings_key)
    with _encoders_lock:
        enc = _encoders.get(key)
        if enc is None:
            if backend == "onnx":
                enc = _load_onnx(folder, model_name, cache_dir, threads, export_settings)
            else:
                enc = SentenceTransformerEncoder(folder, device=device, model_name=model_name, precision=precision)
            if not enc.fingerprint.is_reference:
                reference = load_encoder(
                    f"{folder}@torch", device=device if backend != "onnx" else None, cache_dir=cache_dir
                )
                enc.agreement = check_agreement(enc, reference, cache_dir)  # type: ignore[attr-defined]
            _encoders[key] = enc
    agreement = getattr(enc, "agreement", None)
    if agreement is not None:
        require_agreement(enc.fingerprint, agreement, min_agreement)
    return enc


def _default_cache_dir() -> Path:
    return onnx.encoder_cache_dir(default_data_dir())


def _load_onnx(
    folder: Path, model_name: str, cache_dir: Path, threads: int | None, settings: dict[str, Any] | None
) -> Encoder:
    settings = onnx.DEFAULT_EXPORT_SETTINGS if settings is None else settings
    digest = weights_digest(folder)
    try:
        export_dir = onnx.ensure_onnx_export(folder, digest, cache_dir, settings)
    except Exception as exc:  # noqa: BLE001 - any export failure becomes one clear error
        raise EncoderLoadError(
            f"cannot export encoder {model_name!r} from {folder} to ONNX int8 under {cache_dir}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    dim = storage.read_json(folder / "config.json").get("hidden_size")
    fingerprint = EncoderFingerprint(
        model_name=model_name,
        weights_digest=digest,
        dim=int(dim),
        normalized=True,
        casefold=encoder_casefolds(folder),
        backend="onnx",
        precision=onnx.settings_tag(settings),
    )
    return onnx.OnnxEncoder(folder, export_dir, fingerprint, threads=threads)

