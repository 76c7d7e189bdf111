"""One model folder format and its loader: weights.safetensors + config.json + encoder.json, no pickle.

The same folder is what a training checkpoint holds (`lvm_core.train.checkpoint` adds its training
state beside it), what the registry logs as the pyfunc artifact, and what evaluation and the service
load, so a model means the same thing wherever it is read. `load_model_dir` is the one way a model is
rebuilt; it also reads checkpoint folders of the first checkpoint format (`lvm-checkpoint/1`:
model.safetensors + a meta.json holding the model config, no encoder recorded).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvm_core.contracts.errors import DataContractError, ModelNotFoundError
from lvm_core.contracts.layout import CHECKPOINT_META_FILE, CHECKPOINT_WEIGHTS_FILE
from lvm_core.data.embedding.fingerprint import EncoderFingerprint, ensure_same_fingerprint
from lvm_core.io import storage
from lvm_core.io.plain import to_plain
from lvm_core.models.predict import predict_contexts

if TYPE_CHECKING:
    import torch

# Files of a model directory (the `lvm` artifact of a registered model, or a local folder).
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
ENCODER_FILE = "encoder.json"
BASELINES_DIR = "baselines"
PYFUNC_ARTIFACT_KEY = "lvm"  # must equal lvm_core.tracking.pyfunc_model.ARTIFACT_KEY
# Checkpoint folders written before checkpoints were model folders: weights in CHECKPOINT_WEIGHTS_FILE
# (model.safetensors), the model config inside CHECKPOINT_META_FILE (meta.json), no encoder.json.
LEGACY_CHECKPOINT_FORMAT = "lvm-checkpoint/1"
UNRECORDED_ENCODER = "unrecorded-encoder"


def unrecorded_encoder(dim: int) -> EncoderFingerprint:
    """The fingerprint of vectors whose encoder was not given (a bare training call, an old checkpoint).

    It equals no real encoder's fingerprint, so a model carrying it is refused wherever vectors of a
    known encoder are checked against the model; it is never mistaken for a model of that encoder.
    """
    return EncoderFingerprint(model_name=UNRECORDED_ENCODER, weights_digest="unrecorded", dim=int(dim))


# --- model directory: plain files, no pickle -------------------------------------------------------


def config_dict(model_config: Any) -> dict[str, Any]:
    """A ModelConfig (or dict) as the plain dict written to config.json; it must name its arch."""
    data = to_plain(model_config)
    if not isinstance(data, dict) or "arch" not in data:
        raise ValueError(f"model_config must be a ModelConfig or a dict with 'arch', got {type(model_config).__name__}")
    return data


def save_model_dir(
    model: torch.nn.Module,
    model_config: Any,
    fingerprint: EncoderFingerprint,
    path: Path,
    baselines_dir: Path | None = None,
) -> Path:
    """Write weights.safetensors, config.json, encoder.json (and a copy of baselines/) into `path`.

    The config's `dim` must equal the encoder's: a model is only meaningful in its encoder's space.
    """
    from safetensors.torch import save_model

    config = config_dict(model_config)
    if "dim" in config and int(config["dim"]) != fingerprint.dim:
        raise ValueError(
            f"model config dim={config['dim']} does not match the encoder fingerprint dim={fingerprint.dim} "
            f"({fingerprint.describe()})"
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / WEIGHTS_FILE), metadata={"format": "pt", "arch": str(config["arch"])})
    storage.write_json(path / CONFIG_FILE, config)
    storage.write_json(path / ENCODER_FILE, fingerprint.to_dict())
    if baselines_dir is not None:
        baselines_dir = Path(baselines_dir)
        if not baselines_dir.is_dir():
            raise FileNotFoundError(f"baselines folder does not exist: {baselines_dir}")
        shutil.copytree(baselines_dir, path / BASELINES_DIR, dirs_exist_ok=True)
    return path


# --- loading ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadedModel:
    """A model rebuilt from plain files; predicts only for contexts from the encoder it was trained on."""

    module: torch.nn.Module
    config: Any
    fingerprint: EncoderFingerprint
    name: str | None = None
    version: int | None = None
    run_id: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""
    path: Path | None = None  # where the files were read from (None once a temp download is removed)

    @property
    def dim(self) -> int:
        return int(self.config.dim)

    @property
    def context_len(self) -> int:
        return int(self.config.context_len)

    @property
    def arch(self) -> str:
        return str(self.config.arch)

    def describe(self) -> str:
        ref = f"{self.name} v{self.version}" if self.name else self.source
        return f"model {ref} ({self.arch}, ctx={self.context_len}, dim={self.dim})"

    def check_fingerprint(self, fingerprint: EncoderFingerprint) -> None:
        """Raise `FingerprintMismatchError` unless the model was trained on vectors of `fingerprint`."""
        ensure_same_fingerprint(fingerprint, self.fingerprint, self.describe())

    def predict(self, ctx: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(B, ctx, D) or flattened (B, ctx*D) float vectors -> (B, D) float32 unit vectors (checked here,
        predicted by the one batched path, `lvm_core.models.predict`)."""
        x = np.asarray(ctx, dtype=np.float32)
        n, d = self.context_len, self.dim
        if x.ndim == 2 and x.shape[1] == n * d:
            x = x.reshape(x.shape[0], n, d)
        if x.ndim != 3:
            raise ValueError(
                f"{self.describe()} expects contexts of shape (B, {n}, {d}) or (B, {n * d}), got {x.shape}"
            )
        if x.shape[2] != d:
            raise ValueError(
                f"{self.describe()} expects vectors of dim {d} from encoder {self.fingerprint.describe()}, "
                f"got dim {x.shape[2]}; vectors from another encoder cannot be used"
            )
        if x.shape[1] != n:
            raise ValueError(f"{self.describe()} expects {n} context chunks, got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise ValueError(f"{self.describe()}: context contains NaN or infinite values")
        return predict_contexts(self.module, x, batch_size)


def _find_model_files(root: Path) -> Path:
    """The folder holding config.json/weights.safetensors: `root` itself or the pyfunc artifact inside it."""
    if (root / CONFIG_FILE).is_file() or _is_legacy_checkpoint(root):
        return root
    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        import yaml

        meta = yaml.safe_load(mlmodel.read_text()) or {}
        art = (((meta.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}).get(PYFUNC_ARTIFACT_KEY)
        if isinstance(art, dict) and art.get("path"):
            candidate: Path = root / art["path"]
            if (candidate / CONFIG_FILE).is_file():
                return candidate
    candidate = root / "artifacts" / PYFUNC_ARTIFACT_KEY
    if (candidate / CONFIG_FILE).is_file():
        return candidate
    raise ModelNotFoundError(
        f"{root} is not an LVM model folder: no {CONFIG_FILE} (expected {WEIGHTS_FILE}, {CONFIG_FILE}, "
        f"{ENCODER_FILE}, or an MLflow model with an '{PYFUNC_ARTIFACT_KEY}' artifact)"
    )


def _is_legacy_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT_META_FILE).is_file() and (folder / CHECKPOINT_WEIGHTS_FILE).is_file()


def _read_files(files: Path) -> tuple[Any, Path, EncoderFingerprint | None, Path]:
    """(model config, the file it came from, encoder fingerprint (None: not recorded), weights file)."""
    if (files / CONFIG_FILE).is_file():
        for required in (WEIGHTS_FILE, ENCODER_FILE):
            if not (files / required).is_file():
                raise ModelNotFoundError(f"model folder {files} lacks {required}")
        try:
            config = storage.read_json(files / CONFIG_FILE)
        except (json.JSONDecodeError, ValueError) as exc:
            raise DataContractError(f"{files / CONFIG_FILE}: invalid model config ({exc})") from exc
        fingerprint = EncoderFingerprint.from_dict(storage.read_json(files / ENCODER_FILE))
        return config, files / CONFIG_FILE, fingerprint, files / WEIGHTS_FILE
    meta_path = files / CHECKPOINT_META_FILE
    try:
        meta = storage.read_json(meta_path)
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{meta_path}: unreadable checkpoint metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != LEGACY_CHECKPOINT_FORMAT:
        raise ModelNotFoundError(f"{files}: neither a model folder nor a {LEGACY_CHECKPOINT_FORMAT} checkpoint")
    config = meta.get("model_config")
    if not isinstance(config, dict) or meta.get("arch") != config.get("arch") or meta.get("dim") != config.get("dim"):
        raise DataContractError(
            f"{meta_path}: arch/dim ({meta.get('arch')}, {meta.get('dim')}) disagree with its model_config"
        )
    return config, meta_path, None, files / CHECKPOINT_WEIGHTS_FILE


def load_model_dir(path: Path, device: str = "cpu") -> LoadedModel:
    """Rebuild a model from a model folder: build_model(config.json) + safetensors weights (strict).

    A checkpoint folder of the first format loads too; its encoder was not recorded (`unrecorded_encoder`).
    """
    from safetensors.torch import load_model

    from lvm_core.models.builder import build_model
    from lvm_core.models.config import ModelConfig

    root = Path(path)
    if not root.is_dir():
        raise ModelNotFoundError(f"model folder does not exist: {root}")
    files = _find_model_files(root)
    raw_config, config_path, fingerprint, weights = _read_files(files)
    try:
        config = ModelConfig.model_validate(raw_config)
    except ValueError as exc:
        raise DataContractError(f"{config_path}: invalid model config ({exc})") from exc
    if fingerprint is None:
        fingerprint = unrecorded_encoder(config.dim)
    if config.dim != fingerprint.dim:
        raise DataContractError(
            f"{files}: model dim {config.dim} does not match its encoder's dim {fingerprint.dim}"
        )
    module = build_model(config)
    try:
        load_model(module, str(weights), strict=True, device=device)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataContractError(f"{weights}: weights do not fit a {config.arch} model ({exc})") from exc
    module.to(device).eval()
    return LoadedModel(module=module, config=config, fingerprint=fingerprint, source=str(root), path=files)
