"""Training checkpoints: a model folder plus the training state beside it.

A checkpoint folder (`<checkpoint_dir>/best`, `<checkpoint_dir>/last`) is the one model folder format of
`lvm_core.models.loader` (weights.safetensors, config.json, encoder.json, written by `save_model_dir`)
with two more files:

- `meta.json`: format, which checkpoint, train config, epoch, val cosine, best epoch, status and the
  epoch history (the model config lives only in config.json; `read_checkpoint_meta` adds it back);
- `state.pt` (`last/` only): optimizer, scheduler, loop counters and RNG states, plain tensors and
  numbers loadable with `torch.load(..., weights_only=True)`.

So the model of any checkpoint is rebuilt by `load_model_dir`, like a registered model. Folders of the
first format (`lvm-checkpoint/1`: model.safetensors and a meta.json holding the model config, no
encoder.json) still load and resume; `load_model_dir` reads their layout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from lvm_core.contracts.errors import DataContractError, ModelNotFoundError, UserError
from lvm_core.contracts.layout import (
    CHECKPOINT_BEST_DIR,
    CHECKPOINT_LAST_DIR,
    CHECKPOINT_META_FILE,
    CHECKPOINT_STATE_FILE,
    models_dir,
)
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.io.storage import atomic_dir, json_digest, read_json, write_json
from lvm_core.models.config import ModelConfig
from lvm_core.models.loader import (
    CONFIG_FILE,
    ENCODER_FILE,
    LEGACY_CHECKPOINT_FORMAT,
    UNRECORDED_ENCODER,
    load_model_dir,
    save_model_dir,
)

CHECKPOINT_FORMAT = "lvm-checkpoint/2"
READABLE_FORMATS = frozenset({CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT})
#: TrainConfig fields that may differ on resume: runtime settings, and the divergence guards (they do not
#: change the trajectory unless they fire, so a run stopped by a too-strict guard can resume with a looser one).
RESUME_MUTABLE_FIELDS = frozenset({"num_threads", "eval_batch_size", "max_grad_norm_explode", "loss_blowup_factor"})


class CheckpointError(UserError, ValueError):
    """A checkpoint folder is missing, incomplete or unreadable (the message names the path)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for another architecture, model config, dim, encoder or training config."""


class CheckpointExistsError(CheckpointError):
    """`train(resume=False)` into a folder that already holds a checkpoint."""


def write_checkpoint(
    folder: Path,
    model: nn.Module,
    model_config: ModelConfig,
    fingerprint: EncoderFingerprint,
    meta: dict[str, Any],
    state: dict[str, Any] | None,
) -> None:
    """Stage the model folder, meta.json (and state.pt) of one checkpoint and rename it into place."""
    with atomic_dir(folder) as staging:
        save_model_dir(model, model_config, fingerprint, staging)
        if state is not None:
            torch.save(state, staging / CHECKPOINT_STATE_FILE)
        write_json(staging / CHECKPOINT_META_FILE, {"format": CHECKPOINT_FORMAT, **meta})


def recover_checkpoint_dir(root: Path) -> None:
    """Clean up after a crash inside `atomic_dir`: drop staging folders, put back a displaced `last`/`best`."""
    for name in (CHECKPOINT_LAST_DIR, CHECKPOINT_BEST_DIR):
        for staging in root.glob(f".{name}.staging.*"):
            shutil.rmtree(staging, ignore_errors=True)
        backups = sorted(root.glob(f".{name}.old.*"), key=lambda p: p.stat().st_mtime)
        target = root / name
        for backup in backups:
            if not target.exists() and (backup / CHECKPOINT_META_FILE).is_file():
                os.replace(backup, target)
            else:
                shutil.rmtree(backup, ignore_errors=True)


def resolve_checkpoint_folder(path: Path) -> Path:
    """`path` itself when it is a checkpoint folder, else its best/, else its last/."""
    path = Path(path)
    if (path / CHECKPOINT_META_FILE).is_file():
        return path
    for name in (CHECKPOINT_BEST_DIR, CHECKPOINT_LAST_DIR):
        if (path / name / CHECKPOINT_META_FILE).is_file():
            return path / name
    raise CheckpointError(f"{path}: no checkpoint here (expected {CHECKPOINT_META_FILE}, or best/ or last/ holding one)")


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """`meta.json` of a checkpoint folder (or of best/, else last/, inside a checkpoint dir).

    The model keys (`arch`, `model_config`, `dim`, `context_len`) come from config.json, so a checkpoint of
    either format reads the same; `path` is the folder read.
    """
    folder = resolve_checkpoint_folder(path)
    try:
        meta = read_json(folder / CHECKPOINT_META_FILE)
        if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT:
            config = read_json(folder / CONFIG_FILE)
            meta = {"format": CHECKPOINT_FORMAT, "arch": config.get("arch"), "model_config": config,
                    "dim": config.get("dim"), "context_len": config.get("context_len"), **meta,
                    "encoder": read_json(folder / ENCODER_FILE)}
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{folder}: unreadable checkpoint metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{folder / CHECKPOINT_META_FILE}: not a {CHECKPOINT_FORMAT} checkpoint")
    meta["path"] = str(folder)
    return meta


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint, rebuilt by `load_model_dir` (eval mode), and its metadata.

    `path` is a checkpoint folder or a checkpoint dir (then `best/`, else `last/`). Nothing is unpickled.
    """
    meta = read_checkpoint_meta(path)
    try:
        loaded = load_model_dir(Path(meta["path"]))
    except (ModelNotFoundError, DataContractError) as exc:
        raise CheckpointError(str(exc)) from exc
    return loaded.module, meta


def load_training_state(path: Path) -> dict[str, Any]:
    """`state.pt` of a checkpoint folder (or of last/ inside a checkpoint dir), loaded with `weights_only=True`."""
    folder = Path(path)
    if not (folder / CHECKPOINT_STATE_FILE).is_file() and (folder / CHECKPOINT_LAST_DIR).is_dir():
        folder = folder / CHECKPOINT_LAST_DIR
    state_path = folder / CHECKPOINT_STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing training state")
    try:
        state: dict[str, Any] = torch.load(state_path, map_location="cpu", weights_only=True)
        return state
    except Exception as exc:
        raise CheckpointError(f"{state_path}: unreadable training state ({exc})") from exc


def check_compatible(
    meta: dict[str, Any],
    mc: ModelConfig,
    tc: BaseModel,
    dim: int,
    fingerprint: EncoderFingerprint | None = None,
) -> None:
    """Refuse to resume a checkpoint of another arch, model config, dim, encoder or (trajectory-changing) train config.

    The encoder is compared only when both sides name one: checkpoints of the first format record none,
    and a run given no fingerprint records the unrecorded encoder.
    """
    where = meta.get("path", "checkpoint")
    problems = []
    if meta.get("arch") != mc.arch:
        problems.append(f"arch {meta.get('arch')!r} != requested {mc.arch!r}")
    if meta.get("dim") != dim:
        problems.append(f"dim {meta.get('dim')} != vectors' dim {dim}")
    stored_mc = meta.get("model_config") or {}
    for key, value in mc.model_dump().items():
        if key != "arch" and stored_mc.get(key) != value:
            problems.append(f"model_config.{key} {stored_mc.get(key)!r} != requested {value!r}")
    stored_tc = meta.get("train_config") or {}
    for key, value in tc.model_dump().items():
        if key not in RESUME_MUTABLE_FIELDS and stored_tc.get(key) != value:
            problems.append(f"train_config.{key} {stored_tc.get(key)!r} != requested {value!r}")
    stored_fp = meta.get("encoder")
    if fingerprint is not None and isinstance(stored_fp, dict) and stored_fp.get("model_name") != UNRECORDED_ENCODER:
        stored = EncoderFingerprint.from_dict(stored_fp)
        if stored != fingerprint:
            problems.append(f"encoder {stored.describe()} != requested {fingerprint.describe()}")
    if problems:
        raise CheckpointMismatchError(f"{where}: cannot resume: " + "; ".join(problems))


def checkpoint_dir_for(
    data_dir: Path, dataset_id: str, fingerprint: EncoderFingerprint, model_config: ModelConfig, train_config: BaseModel
) -> Path:
    """A training run's checkpoint dir, deterministic per (data, model, optimisation) so `--resume` finds the
    interrupted run's checkpoints: `<models>/checkpoints/<dataset>-<arch>-<key>`."""
    key = json_digest([dataset_id, fingerprint.id, model_config.model_dump(), train_config.model_dump()])
    return models_dir(data_dir) / "checkpoints" / f"{dataset_id}-{model_config.arch}-{key[:12]}"


def baselines_dir(checkpoint_dir: Path) -> Path:
    """Where the run's fitted baselines are saved (and registered with the model), beside its checkpoints."""
    return checkpoint_dir.parent / f"{checkpoint_dir.name}-baselines"


def prepare_checkpoint_dir(checkpoint_dir: Path, resume: bool) -> list[dict[str, Any]] | None:
    """Ready a checkpoint dir for a run: a fresh run drops an earlier run's checkpoints of the same config;
    a resumed one gets the epoch history of its `last/` checkpoint (None when there is none to resume from)."""
    if not resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    if resume and (checkpoint_dir / CHECKPOINT_LAST_DIR).exists():
        return list(read_checkpoint_meta(checkpoint_dir / CHECKPOINT_LAST_DIR).get("history", []))
    return None
