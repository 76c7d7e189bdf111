"""`train`: the training driver — checks, a fresh or resumed start, then epochs with checkpoints and early stopping.

The driver decides the run's life cycle and nothing else. Epoch 0, the untrained
model — the recency-weighted mean fitted on the train windows (`fit_anchor`, `models.archs.base`) — is a
candidate like every epoch: its val cosine (`initial_val_cosine`) is the score to beat, its
weights are written to `best/` before the first epoch, and when no epoch beats it by `min_delta` the run
returns the untrained weights with `best_epoch == 0`. `best` is committed before `last`, so a crash between
the two leaves at worst a `best` one epoch ahead, which the deterministic re-run of that epoch rewrites.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lvm_core.contracts.layout import CHECKPOINT_BEST_DIR, CHECKPOINT_LAST_DIR, CHECKPOINT_META_FILE
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.models.archs.base import VectorPredictor
from lvm_core.models.builder import build_model, count_parameters
from lvm_core.models.config import ModelConfig
from lvm_core.models.loader import unrecorded_encoder
from lvm_core.train.baselines import fit_anchor
from lvm_core.train.batches import WindowDataset, as_vector_tensor
from lvm_core.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointExistsError,
    check_compatible,
    load_checkpoint,
    load_training_state,
    read_checkpoint_meta,
    recover_checkpoint_dir,
    write_checkpoint,
)
from lvm_core.train.config import EpochMetrics, TrainConfig, TrainResult, TrainStatus
from lvm_core.train.epoch import Diverged, FaultHook, LoopState, evaluate_cosine, train_epoch
from lvm_core.train.optim import make_optimizer, make_scheduler
from lvm_core.train.rng import rng_state, seed_everything, set_rng_state, torch_runtime

log = logging.getLogger(__name__)


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
    anchor_weights: np.ndarray | None = None,
) -> TrainResult:
    """Train `model_config`'s model on row-index windows, checkpointing every epoch into `checkpoint_dir`.

    `on_epoch_end(metrics)` runs after each epoch's checkpoint is written (log metrics there; an exception
    from it stops training, and the run can be resumed). `fault_hook(epoch, step, ctx, target)` runs
    before every training step and may return a replacement `(ctx, target)`; it exists for fault-injection
    tests. Divergence is returned as `status="diverged"` (never raised). With `resume=True` and no
    checkpoint yet, training starts fresh; with `resume=False` an existing checkpoint is refused.
    `fingerprint` (the encoder of `vectors`) goes into every checkpoint's encoder.json; without it the
    checkpoints record `unrecorded_encoder`, which no encoder's vectors match. `anchor_weights` are the
    recency-weighted mean's slot weights already fitted on `train_seqs` (e.g. the fitted
    `recency_weighted_mean` baseline's `weights`), to skip fitting them again; None fits them here.
    """
    mc = model_config if isinstance(model_config, ModelConfig) else ModelConfig.model_validate(model_config)
    tc = train_config if isinstance(train_config, TrainConfig) else TrainConfig.model_validate(train_config)
    _check_vectors(vectors, mc.dim)
    if fingerprint is not None and fingerprint.dim != mc.dim:
        raise ValueError(f"encoder {fingerprint.describe()} has dim {fingerprint.dim} but model_config.dim is {mc.dim}")
    vec_t = as_vector_tensor(vectors)
    train_ds = _window_dataset(vec_t, train_seqs, "train_seqs", mc)
    _window_dataset(vec_t, val_seqs, "val_seqs", mc)
    root, has_last = _checkpoint_root(Path(checkpoint_dir), resume)
    with torch_runtime(tc):
        seed_everything(tc.seed)
        run = _Run.start(mc, tc, fingerprint, vectors, train_seqs, vec_t, val_seqs, len(train_ds), root,
                         resume and has_last, anchor_weights)
        if run.loop.status in ("completed", "early_stopped"):
            return run.result(run.loop.status, "checkpoint already finished")  # type: ignore[arg-type]
        for epoch in range(run.loop.epoch + 1, tc.epochs + 1):
            finished = run.epoch(epoch, train_ds, vec_t, val_seqs, fault_hook, on_epoch_end)
            if finished is not None:
                return finished
        return run.result("completed", f"ran {tc.epochs} epoch(s)")


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


def _window_dataset(vec_t: torch.Tensor, seqs: Any, what: str, mc: ModelConfig) -> WindowDataset:
    ds = WindowDataset.from_arrays(vec_t, seqs, what)
    if ds.context_rows.shape[1] != mc.context_len:
        raise ValueError(f"{what} has context length {ds.context_rows.shape[1]} but model_config.context_len is {mc.context_len}")
    return ds


def _checkpoint_root(root: Path, resume: bool) -> tuple[Path, bool]:
    """The checkpoint folder, recovered from an interrupted commit; whether it holds a `last` checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    recover_checkpoint_dir(root)
    has_last = (root / CHECKPOINT_LAST_DIR / CHECKPOINT_META_FILE).is_file()
    if has_last and not resume:
        raise CheckpointExistsError(f"{root}: already holds a checkpoint; pass resume=True or use an empty folder")
    return root, has_last


@dataclass
class _Run:
    """One training run in progress: the model, its optimiser and schedule, the loop state and the best weights."""

    mc: ModelConfig
    tc: TrainConfig
    encoder: EncoderFingerprint
    root: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loop: LoopState
    n_params: int
    steps_per_epoch: int
    best_weights: dict[str, torch.Tensor] | None = None
    resumed_from: int | None = None

    @property
    def last_dir(self) -> Path:
        return self.root / CHECKPOINT_LAST_DIR

    @property
    def best_dir(self) -> Path:
        return self.root / CHECKPOINT_BEST_DIR

    @classmethod
    def start(cls, mc: ModelConfig, tc: TrainConfig, fingerprint: EncoderFingerprint | None, vectors: np.ndarray,
              train_seqs: Any, vec_t: torch.Tensor, val_seqs: Any, n_train: int, root: Path, resuming: bool,
              anchor_weights: np.ndarray | None = None) -> _Run:
        """A fresh run (anchor fitted on train, epoch 0 scored and written as `best`) or the interrupted one
        continued from `last`."""
        meta: dict[str, Any] = {}
        if resuming:
            meta = read_checkpoint_meta(root / CHECKPOINT_LAST_DIR)
            check_compatible(meta, mc, tc, mc.dim, fingerprint)
            model = load_checkpoint(root / CHECKPOINT_LAST_DIR)[0]  # rebuilt by load_model_dir, like any model
        else:
            model = build_model(mc)
            if anchor_weights is not None and isinstance(model, VectorPredictor):
                model.set_anchor(anchor_weights)
            else:
                fit_anchor(model, vectors, train_seqs, seed=tc.seed)  # no global RNG draw: resume stays exact
        model.train()
        optimizer = make_optimizer(model, tc)
        steps_per_epoch = math.ceil(n_train / tc.batch_size)
        run = cls(mc, tc, fingerprint or unrecorded_encoder(mc.dim), root, model, optimizer,
                  make_scheduler(optimizer, tc, steps_per_epoch * tc.epochs), LoopState(),
                  count_parameters(model), steps_per_epoch)
        if resuming:
            run._resume(meta)
        else:
            run.loop.initial_val = evaluate_cosine(model, vec_t, val_seqs, tc.eval_batch_size)
            run._epoch_zero()
        return run

    def _resume(self, meta: dict[str, Any]) -> None:
        state = load_training_state(self.last_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loop.load(state["loop"], meta.get("history", []))
        if (self.best_dir / CHECKPOINT_META_FILE).is_file():
            self.best_weights = load_checkpoint(self.best_dir)[0].state_dict()
        set_rng_state(state["rng"])  # last: rebuilding a model above draws from the RNGs
        self.resumed_from = self.loop.epoch
        log.info("resuming %s from epoch %d (%s)", self.mc.arch, self.loop.epoch, self.last_dir)

    def _epoch_zero(self) -> None:
        """Epoch 0 competes: the untrained weights are the best until an epoch beats them by min_delta."""
        loop = self.loop
        if loop.initial_val is None or not math.isfinite(loop.initial_val):
            return
        loop.best_val, loop.best_epoch = loop.initial_val, 0
        self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        meta = {**self.checkpoint_meta(0, loop.initial_val), "checkpoint": "best"}
        write_checkpoint(self.best_dir, self.model, self.mc, self.encoder, meta, None)

    def checkpoint_meta(self, epoch: int, val: float) -> dict[str, Any]:
        loop = self.loop
        return {  # the model config is the folder's config.json
            "train_config": self.tc.model_dump(),
            "epoch": epoch,
            "val_cosine": val,
            "best_epoch": loop.best_epoch,
            "best_val_cosine": loop.best_val,
            "initial_val_cosine": loop.initial_val,
            "status": loop.status,
            "n_parameters": self.n_params,
            "torch_version": torch.__version__,
            "history": [m.to_dict() for m in loop.history],
        }

    def epoch(self, epoch: int, train_ds: WindowDataset, vec_t: torch.Tensor, val_seqs: Any,
              fault_hook: FaultHook | None, on_epoch_end: Callable[[EpochMetrics], None] | None) -> TrainResult | None:
        """Train, validate and checkpoint one epoch; a TrainResult when the run ends with it, else None."""
        tc, loop = self.tc, self.loop
        try:
            train_loss, grad_mean, grad_max, last_lr, seconds = train_epoch(
                self.model, self.optimizer, self.scheduler, train_ds, tc, loop, epoch, fault_hook
            )
            val = evaluate_cosine(self.model, vec_t, val_seqs, tc.eval_batch_size)
            if not math.isfinite(val):
                raise Diverged(f"non-finite validation cosine after epoch {epoch}")
        except Diverged as exc:
            log.warning("training diverged: %s; last good checkpoint kept at %s", exc, self.last_dir)
            return self.result("diverged", str(exc))
        improved = self._score(epoch, val)
        metrics = EpochMetrics(
            epoch=epoch, train_loss=train_loss, val_cosine=val, lr=last_lr, grad_norm=grad_mean,
            grad_norm_max=grad_max, epoch_seconds=seconds, steps=self.steps_per_epoch, is_best=improved,
        )
        loop.history.append(metrics)
        if loop.bad_epochs >= tc.patience:
            loop.status = "early_stopped"
        elif epoch == tc.epochs:
            loop.status = "completed"
        self._write_checkpoints(epoch, val, improved)
        if on_epoch_end is not None:
            on_epoch_end(metrics)
        if loop.status == "early_stopped":
            return self.result("early_stopped", f"no val-cosine gain > {tc.min_delta} for {tc.patience} epoch(s)")
        return None

    def _score(self, epoch: int, val: float) -> bool:
        """Early-stopping bookkeeping for the epoch's val cosine; whether it is the new best."""
        loop = self.loop
        improved = val > loop.best_val + self.tc.min_delta
        if improved:
            loop.best_val, loop.best_epoch, loop.bad_epochs = val, epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            loop.bad_epochs += 1
        loop.epoch = epoch
        return improved

    def _write_checkpoints(self, epoch: int, val: float, improved: bool) -> None:
        """`best` (when improved) before `last`, which also carries the optimiser, schedule, loop and RNG states."""
        meta = self.checkpoint_meta(epoch, val)
        if improved:
            write_checkpoint(self.best_dir, self.model, self.mc, self.encoder, {**meta, "checkpoint": "best"}, None)
        state = {
            "format": CHECKPOINT_FORMAT,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": self.loop.to_state(),
            "rng": rng_state(),
        }
        write_checkpoint(self.last_dir, self.model, self.mc, self.encoder, {**meta, "checkpoint": "last"}, state)

    def result(self, status: TrainStatus, reason: str) -> TrainResult:
        """The run's outcome; the model holds the best weights (None when not even epoch 0 was scored)."""
        final = None
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            final = self.model.eval()
        loop = self.loop
        return TrainResult(
            status=status,
            reason=reason,
            history=list(loop.history),
            best_epoch=loop.best_epoch,
            best_val_cosine=None if loop.best_epoch is None else loop.best_val,
            initial_val_cosine=loop.initial_val,
            checkpoint_dir=self.root,
            model=final,
            resumed_from_epoch=self.resumed_from,
            n_parameters=self.n_params,
        )
