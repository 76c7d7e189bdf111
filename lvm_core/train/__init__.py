"""Training of next-chunk vector models: row-index data path, checkpoints, early stopping, divergence, resume.

- Data: windows are row indices into one `(n_chunks, D)` vector array. `torch.from_numpy(vectors)` is made
  once and every batch is gathered with `index_select`, so no `(n, ctx, D)` copy ever exists.
- Checkpoints (`<checkpoint_dir>/last` and `/best`, `lvm_core.train.checkpoint`): each is a model folder
  (`models.loader.save_model_dir`: weights.safetensors, config.json, encoder.json) plus `meta.json` (train
  config, epoch, history) and, in `last`, `state.pt` with optimizer, scheduler, loop counters and RNG states
  (plain tensors/numbers only, loadable with `torch.load(..., weights_only=True)`); resuming rebuilds the
  model with `load_model_dir`. Each folder is staged and renamed as a whole (`storage.atomic_dir`); `best` is committed
  before `last`, so a crash between the two leaves at worst a `best` one epoch ahead, which the
  deterministic re-run of that epoch rewrites.
- Early stopping on validation cosine (mean cos(pred, target)); the best weights are restored at the end.
  Epoch 0, the untrained model, is a candidate like every epoch: its val cosine (`initial_val_cosine`) is
  the score to beat, its weights are written to `best/` before the first epoch, and when no epoch beats
  it by `min_delta` the run returns (and the caller ships) the untrained weights with `best_epoch == 0`.
- Divergence (non-finite loss, smoothed-loss blow-up, gradient-norm explosion) stops training without
  touching the last good checkpoint and is *returned*, not raised: `TrainResult(status="diverged",
  reason=...)`, so the caller can mark its tracking run failed and still read the history.
- `resume=True` continues from `last` with the saved RNG states, so a resumed run reproduces the epochs
  an uninterrupted run would have produced. A checkpoint of another arch/config/dim is refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm import tqdm

from lvm_core.data.windows import SequenceLike, check_windows
from lvm_core.models.predict import iter_predictions
from lvm_core.contracts import (
    CHECKPOINT_BEST_DIR,
    CHECKPOINT_LAST_DIR,
    CHECKPOINT_META_FILE,
)
from lvm_core.runtime.faults import crash_point
from lvm_core.models import ModelConfig, build_model, count_parameters
from lvm_core.runtime.progress import progress_enabled
from lvm_core.data.embedding import EncoderFingerprint
from lvm_core.models.loader import unrecorded_encoder
from lvm_core.train.checkpoint import (  # the checkpoint names are re-exported for `from lvm_core.train import ...`
    CHECKPOINT_FORMAT,
    RESUME_MUTABLE_FIELDS as RESUME_MUTABLE_FIELDS,
    CheckpointError as CheckpointError,
    CheckpointExistsError,
    CheckpointMismatchError as CheckpointMismatchError,
    check_compatible,
    load_checkpoint,
    load_training_state,
    read_checkpoint_meta,
    recover_checkpoint_dir,
    write_checkpoint,
)

log = logging.getLogger(__name__)

_EMA_BETA = 0.9  # smoothing of the batch loss for blow-up detection
_EMA_WARMUP_STEPS = 10  # steps before the smoothed loss is trusted as a reference

FaultHook = Callable[[int, int, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]


# --- configuration and results -------------------------------------------------------------------------


class TrainConfig(BaseModel):
    """Optimisation settings (the Prefect/CLI form of a training run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay on matrices (not biases/norms)")
    loss: Literal["mse", "cosine", "infonce", "mse+infonce"] = Field(
        "mse", description="mse/cosine on the normalised output, in-batch InfoNCE, or mse_weight*mse + infonce_weight*infonce"
    )
    mse_weight: float = Field(1.0, ge=0, description="weight of MSE in loss='mse+infonce'")
    infonce_weight: float = Field(0.1, ge=0, description="weight of InfoNCE in loss='mse+infonce'")
    infonce_temperature: float = Field(0.05, gt=0)
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of all steps with linear warm-up (onecycle: pct_start)")
    seed: int = 0
    patience: int = Field(3, ge=1, description="epochs without val-cosine improvement before stopping")
    min_delta: float = Field(1e-4, ge=0, description="smallest val-cosine gain that counts as improvement")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm (None: no clipping)")
    max_grad_norm_explode: float = Field(1e3, gt=0, description="pre-clip gradient norm above which training diverged")
    loss_blowup_factor: float = Field(10.0, gt=1, description="smoothed loss above factor x its best value: diverged")
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms during training")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: leave as is)")
    eval_batch_size: int = Field(1024, ge=1)


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; passed to `on_epoch_end` after the epoch's checkpoint is on disk."""

    epoch: int
    train_loss: float
    val_cosine: float
    lr: float  # learning rate of the epoch's last optimizer step
    grad_norm: float  # mean pre-clip gradient norm over the epoch's steps
    grad_norm_max: float
    epoch_seconds: float
    steps: int
    is_best: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrainStatus = Literal["completed", "early_stopped", "diverged"]


@dataclass
class TrainResult:
    """Outcome of `train`. `model` holds the best weights, the untrained ones when `best_epoch == 0` (no
    training epoch beat the untrained model on val); None only when not even epoch 0 could be scored."""

    status: TrainStatus
    reason: str
    history: list[EpochMetrics]
    best_epoch: int | None
    best_val_cosine: float | None
    initial_val_cosine: float | None
    checkpoint_dir: Path
    model: nn.Module | None = None
    resumed_from_epoch: int | None = None
    n_parameters: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "diverged"

    @property
    def epochs_completed(self) -> int:
        return self.history[-1].epoch if self.history else 0

    @property
    def best_checkpoint(self) -> Path | None:
        p = self.checkpoint_dir / CHECKPOINT_BEST_DIR
        return p if (p / CHECKPOINT_META_FILE).is_file() else None

    @property
    def last_checkpoint(self) -> Path | None:
        p = self.checkpoint_dir / CHECKPOINT_LAST_DIR
        return p if (p / CHECKPOINT_META_FILE).is_file() else None


# --- data path -----------------------------------------------------------------------------------------


class WindowDataset(Dataset):
    """Windows as row indices into a shared vector tensor; items and batches are gathered on access.

    `dataset[i]` gives one `(ctx (N, D), target (D,))`; `dataset[index_tensor]` and `__getitems__` (used by
    DataLoader for a whole batch) give `(ctx (B, N, D), target (B, D))` with two `index_select` calls.
    """

    def __init__(self, vectors: torch.Tensor, context_rows: torch.Tensor, target_rows: torch.Tensor):
        self.vectors = vectors
        self.context_rows = context_rows
        self.target_rows = target_rows

    @classmethod
    def from_arrays(cls, vectors: np.ndarray | torch.Tensor, seqs: Any, what: str = "seqs") -> WindowDataset:
        """Validate and wrap; `vectors` is shared (no copy when it is already float32)."""
        vec_t = vectors if isinstance(vectors, torch.Tensor) else as_vector_tensor(vectors)
        w = check_windows(seqs, vec_t.numpy(), what=what, allow_empty=False)
        return cls(vec_t, torch.from_numpy(np.ascontiguousarray(w.context_rows)), torch.from_numpy(np.ascontiguousarray(w.target_rows)))

    def __len__(self) -> int:
        return int(self.target_rows.shape[0])

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.context_rows.index_select(0, index)
        b, n = rows.shape
        ctx = self.vectors.index_select(0, rows.reshape(-1)).view(b, n, -1)
        tgt = self.vectors.index_select(0, self.target_rows.index_select(0, index))
        return ctx, tgt

    def __getitem__(self, index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.dim() == 0:
            ctx, tgt = self.gather(idx.view(1))
            return ctx[0], tgt[0]
        return self.gather(idx)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather(torch.as_tensor(indices, dtype=torch.long))


def _batch_collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`__getitems__` already returns stacked tensors; nothing left to collate."""
    return batch


def make_loader(dataset: WindowDataset, batch_size: int, shuffle: bool, seed: int | None = None) -> DataLoader:
    """Single-process DataLoader over batch gathers; with `shuffle`, the order depends only on `seed`."""
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed or 0))
        sampler: Any = RandomSampler(dataset, generator=gen)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_batch_collate, num_workers=0)


def as_vector_tensor(vectors: np.ndarray) -> torch.Tensor:
    """float32 CPU tensor sharing memory with `vectors` (one conversion copy only if it is not float32)."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array (n_chunks, dim), got {type(vectors).__name__} "
                         f"with shape {getattr(vectors, 'shape', None)}")
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    with _quiet_readonly():
        return torch.from_numpy(arr)


@contextlib.contextmanager
def _quiet_readonly() -> Iterator[None]:
    """`torch.from_numpy` warns on read-only (memory-mapped) arrays; they are only ever read here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


# --- losses and schedules -------------------------------------------------------------------------------


def compute_loss(pred: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Loss between unit predictions and (normalised) targets, as selected by `cfg.loss`."""
    target = F.normalize(target, dim=-1)

    def infonce() -> torch.Tensor:
        logits = pred @ target.T / cfg.infonce_temperature
        return F.cross_entropy(logits, torch.arange(pred.shape[0], device=pred.device))

    if cfg.loss == "mse":
        return F.mse_loss(pred, target)
    if cfg.loss == "cosine":
        return (1.0 - (pred * target).sum(dim=-1)).mean()
    if cfg.loss == "infonce":
        return infonce()
    return cfg.mse_weight * F.mse_loss(pred, target) + cfg.infonce_weight * infonce()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel makes the optimizer step ~5x cheaper on CPU than the per-tensor loop.
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


class _WarmupLambda:
    """LR factor: linear warm-up, then cosine decay to 0 or constant (a plain object: not stored in state)."""

    def __init__(self, warmup: int, total: int, cosine: bool):
        self.warmup, self.total, self.cosine = warmup, total, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR needs at least two steps in each phase; shorter runs fall back to warm-up + cosine.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=min(max(cfg.warmup_fraction, 2.0 / total_steps), 0.5),
            anneal_strategy="cos",
        )
    warmup = int(round(cfg.warmup_fraction * total_steps))
    lam = _WarmupLambda(warmup, total_steps, cosine=cfg.schedule != "constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lam)


# --- runtime (threads, determinism, RNG) ----------------------------------------------------------------


@contextlib.contextmanager
def _torch_runtime(cfg: TrainConfig) -> Iterator[None]:
    """Apply threads/determinism for the run and restore the process-wide settings afterwards."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain numbers (no numpy objects, so `weights_only=True` loads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


# --- evaluation helpers ---------------------------------------------------------------------------------


def evaluate_cosine(model: nn.Module, vectors: np.ndarray | torch.Tensor, seqs: SequenceLike, batch_size: int = 1024) -> float:
    """Mean cos(prediction, target) over the windows of `seqs` (the early-stopping metric).

    Predictions come from the one prediction path (`lvm_core.models.predict`); the cosine stays torch's,
    batch by batch, so a NaN prediction gives NaN (the divergence check) rather than an error.
    """
    vec = vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors
    total, n = 0.0, 0
    for pred, tgt in iter_predictions(model, vec, seqs, batch_size, allow_empty=False):
        total += float(F.cosine_similarity(torch.from_numpy(pred), torch.from_numpy(tgt), dim=-1).double().sum())
        n += pred.shape[0]
    return total / max(n, 1)


# --- training loop --------------------------------------------------------------------------------------


@dataclass
class _LoopState:
    epoch: int = 0
    global_step: int = 0
    best_val: float = -math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    loss_ema: float | None = None
    best_loss_ema: float | None = None
    ema_steps: int = 0
    initial_val: float | None = None
    status: str = "running"
    history: list[EpochMetrics] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_val_cosine": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "loss_ema": self.loss_ema,
            "best_loss_ema": self.best_loss_ema,
            "ema_steps": self.ema_steps,
            "initial_val_cosine": self.initial_val,
            "status": self.status,
        }

    def load(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_val = float(state["best_val_cosine"])
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.loss_ema = state["loss_ema"]
        self.best_loss_ema = state["best_loss_ema"]
        self.ema_steps = int(state["ema_steps"])
        self.initial_val = state["initial_val_cosine"]
        self.status = str(state["status"])
        self.history = [EpochMetrics(**h) for h in history]


class _Diverged(Exception):
    pass


def _check_vectors(vectors: np.ndarray, dim: int) -> None:
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array (n_chunks, dim), got shape {getattr(vectors, 'shape', None)}")
    if vectors.shape[1] != dim:
        raise ValueError(f"vectors have dim {vectors.shape[1]} but model_config.dim is {dim}")
    bad: list[np.ndarray] = []
    for start in range(0, vectors.shape[0], 65536):  # blockwise: no full-size boolean copy
        finite = np.isfinite(vectors[start : start + 65536]).all(axis=1)
        if not finite.all():
            bad.append(start + np.flatnonzero(~finite))
    if bad:
        rows = np.concatenate(bad)
        raise ValueError(f"vectors contain non-finite values in {rows.size} row(s), first rows {rows[:5].tolist()}")


def train(
    model_config: ModelConfig | dict[str, Any],
    train_config: TrainConfig | dict[str, Any],
    vectors: np.ndarray,
    train_seqs: Any,
    val_seqs: Any,
    checkpoint_dir: Path,
    resume: bool = False,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    fault_hook: FaultHook | None = None,
    fingerprint: EncoderFingerprint | None = None,
) -> TrainResult:
    """Train `model_config`'s model on row-index windows, checkpointing every epoch into `checkpoint_dir`.

    `on_epoch_end(metrics)` runs after each epoch's checkpoint is written (log metrics there; an exception
    from it stops training, and the run can be resumed). `fault_hook(epoch, step, ctx, target)` runs
    before every training step and may return a replacement `(ctx, target)`; it exists for fault-injection
    tests. Divergence is returned as `status="diverged"` (never raised). With `resume=True` and no
    checkpoint yet, training starts fresh; with `resume=False` an existing checkpoint is refused.
    `fingerprint` (the encoder of `vectors`) goes into every checkpoint's encoder.json; without it the
    checkpoints record `unrecorded_encoder`, which no encoder's vectors match.
    """
    mc = model_config if isinstance(model_config, ModelConfig) else ModelConfig.model_validate(model_config)
    tc = train_config if isinstance(train_config, TrainConfig) else TrainConfig.model_validate(train_config)
    _check_vectors(vectors, mc.dim)
    if fingerprint is not None and fingerprint.dim != mc.dim:
        raise ValueError(f"encoder {fingerprint.describe()} has dim {fingerprint.dim} but model_config.dim is {mc.dim}")
    encoder = fingerprint or unrecorded_encoder(mc.dim)
    vec_t = as_vector_tensor(vectors)
    train_ds = WindowDataset.from_arrays(vec_t, train_seqs, "train_seqs")
    val_ds = WindowDataset.from_arrays(vec_t, val_seqs, "val_seqs")
    for what, ds in (("train_seqs", train_ds), ("val_seqs", val_ds)):
        if ds.context_rows.shape[1] != mc.context_len:
            raise ValueError(f"{what} has context length {ds.context_rows.shape[1]} but model_config.context_len is {mc.context_len}")

    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    recover_checkpoint_dir(root)
    last_dir, best_dir = root / CHECKPOINT_LAST_DIR, root / CHECKPOINT_BEST_DIR
    has_last = (last_dir / CHECKPOINT_META_FILE).is_file()
    if has_last and not resume:
        raise CheckpointExistsError(f"{root}: already holds a checkpoint; pass resume=True or use an empty folder")

    with _torch_runtime(tc):
        seed_everything(tc.seed)
        if resume and has_last:
            meta = read_checkpoint_meta(last_dir)
            check_compatible(meta, mc, tc, vectors.shape[1], fingerprint)
            model = load_checkpoint(last_dir)[0]  # rebuilt by load_model_dir, like any model
        else:
            model = build_model(mc)
        model.train()
        n_params = count_parameters(model)
        optimizer = make_optimizer(model, tc)
        steps_per_epoch = math.ceil(len(train_ds) / tc.batch_size)
        scheduler = make_scheduler(optimizer, tc, steps_per_epoch * tc.epochs)
        loop = _LoopState()
        best_weights: dict[str, torch.Tensor] | None = None
        resumed_from: int | None = None

        if resume and has_last:
            state = load_training_state(last_dir)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            loop.load(state["loop"], meta.get("history", []))
            if (best_dir / CHECKPOINT_META_FILE).is_file():
                best_weights = load_checkpoint(best_dir)[0].state_dict()
            _set_rng_state(state["rng"])  # last: rebuilding a model above draws from the RNGs
            resumed_from = loop.epoch
            log.info("resuming %s from epoch %d (%s)", mc.arch, loop.epoch, last_dir)
        else:
            loop.initial_val = evaluate_cosine(model, vec_t, val_seqs, tc.eval_batch_size)

        def checkpoint_meta(epoch: int, val: float) -> dict[str, Any]:
            return {  # the model config is the folder's config.json
                "train_config": tc.model_dump(),
                "epoch": epoch,
                "val_cosine": val,
                "best_epoch": loop.best_epoch,
                "best_val_cosine": loop.best_val,
                "initial_val_cosine": loop.initial_val,
                "status": loop.status,
                "n_parameters": n_params,
                "torch_version": torch.__version__,
                "history": [m.to_dict() for m in loop.history],
            }

        if resumed_from is None and loop.initial_val is not None and math.isfinite(loop.initial_val):
            # epoch 0 competes: the untrained weights are the best until an epoch beats them by min_delta
            loop.best_val, loop.best_epoch = loop.initial_val, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            write_checkpoint(best_dir, model, mc, encoder, {**checkpoint_meta(0, loop.initial_val), "checkpoint": "best"}, None)

        def result(status: TrainStatus, reason: str) -> TrainResult:
            final = None
            if best_weights is not None:
                model.load_state_dict(best_weights)
                final = model.eval()
            return TrainResult(
                status=status,
                reason=reason,
                history=list(loop.history),
                best_epoch=loop.best_epoch,
                best_val_cosine=None if loop.best_epoch is None else loop.best_val,
                initial_val_cosine=loop.initial_val,
                checkpoint_dir=root,
                model=final,
                resumed_from_epoch=resumed_from,
                n_parameters=n_params,
            )

        if loop.status in ("completed", "early_stopped"):
            return result(loop.status, "checkpoint already finished")  # type: ignore[arg-type]

        for epoch in range(loop.epoch + 1, tc.epochs + 1):
            try:
                train_loss, grad_mean, grad_max, last_lr, seconds = _train_epoch(
                    model, optimizer, scheduler, train_ds, tc, loop, epoch, fault_hook
                )
                val = evaluate_cosine(model, vec_t, val_seqs, tc.eval_batch_size)
                if not math.isfinite(val):
                    raise _Diverged(f"non-finite validation cosine after epoch {epoch}")
            except _Diverged as exc:
                log.warning("training diverged: %s; last good checkpoint kept at %s", exc, last_dir)
                return result("diverged", str(exc))

            improved = val > loop.best_val + tc.min_delta
            if improved:
                loop.best_val, loop.best_epoch, loop.bad_epochs = val, epoch, 0
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                loop.bad_epochs += 1
            loop.epoch = epoch
            metrics = EpochMetrics(
                epoch=epoch,
                train_loss=train_loss,
                val_cosine=val,
                lr=last_lr,
                grad_norm=grad_mean,
                grad_norm_max=grad_max,
                epoch_seconds=seconds,
                steps=steps_per_epoch,
                is_best=improved,
            )
            loop.history.append(metrics)
            if loop.bad_epochs >= tc.patience:
                loop.status = "early_stopped"
            elif epoch == tc.epochs:
                loop.status = "completed"

            meta = checkpoint_meta(epoch, val)
            if improved:
                write_checkpoint(best_dir, model, mc, encoder, {**meta, "checkpoint": "best"}, None)
            state = {
                "format": CHECKPOINT_FORMAT,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "loop": loop.to_state(),
                "rng": _rng_state(),
            }
            write_checkpoint(last_dir, model, mc, encoder, {**meta, "checkpoint": "last"}, state)
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if loop.status == "early_stopped":
                return result("early_stopped", f"no val-cosine gain > {tc.min_delta} for {tc.patience} epoch(s)")
        return result("completed", f"ran {tc.epochs} epoch(s)")


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dataset: WindowDataset,
    cfg: TrainConfig,
    loop: _LoopState,
    epoch: int,
    fault_hook: FaultHook | None,
) -> tuple[float, float, float, float, float]:
    """One pass over the shuffled training windows; raises `_Diverged` before a bad update is applied.

    Returns (mean loss, mean grad norm, max grad norm, lr of the epoch's last step, seconds).
    """
    start = time.perf_counter()
    model.train()
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=_epoch_seed(cfg.seed, epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    loss_sum, n_seen, grad_sum, grad_max, steps, lr = 0.0, 0, 0.0, 0.0, 0, 0.0
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress_enabled())
    try:
        for step, (ctx, tgt) in enumerate(loader):
            if fault_hook is not None:
                replaced = fault_hook(epoch, step, ctx, tgt)
                if replaced is not None:
                    ctx, tgt = replaced
            pred = model(ctx)
            loss = compute_loss(pred, tgt, cfg)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _Diverged(f"non-finite loss ({value}) at epoch {epoch} step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            if not math.isfinite(norm) or norm > cfg.max_grad_norm_explode:
                raise _Diverged(
                    f"gradient norm explosion ({norm:.3g} > {cfg.max_grad_norm_explode:g}) at epoch {epoch} step {step}"
                )
            _check_blowup(loop, value, cfg, epoch, step)
            lr = float(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            loop.global_step += 1
            crash_point("train.batch")
            b = ctx.shape[0]
            loss_sum += value * b
            n_seen += b
            grad_sum += norm
            grad_max = max(grad_max, norm)
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}")
    finally:
        bar.close()
    return loss_sum / max(n_seen, 1), grad_sum / max(steps, 1), grad_max, lr, time.perf_counter() - start


def _check_blowup(loop: _LoopState, value: float, cfg: TrainConfig, epoch: int, step: int) -> None:
    """Smoothed batch loss against its best value so far: a jump by `loss_blowup_factor` means divergence."""
    loop.loss_ema = value if loop.loss_ema is None else _EMA_BETA * loop.loss_ema + (1 - _EMA_BETA) * value
    loop.ema_steps += 1
    if loop.ema_steps < _EMA_WARMUP_STEPS:
        return
    if loop.best_loss_ema is None or loop.loss_ema < loop.best_loss_ema:
        loop.best_loss_ema = loop.loss_ema
    if loop.best_loss_ema > 0 and loop.loss_ema > cfg.loss_blowup_factor * loop.best_loss_ema:
        raise _Diverged(
            f"loss blow-up (smoothed {loop.loss_ema:.4g} > {cfg.loss_blowup_factor:g} x best {loop.best_loss_ema:.4g}) "
            f"at epoch {epoch} step {step}"
        )
