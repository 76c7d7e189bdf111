"""Prefect tasks of training: load data, fit baselines, train with checkpoints, register the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lvm_core.contracts.layout import CHECKPOINT_LAST_DIR, default_tracking_uri
from lvm_core.data.windows import SequenceSet
from lvm_core.evaluation.crossval import CrossValConfig, CrossValResult, run_crossval
from lvm_core.models.config import ModelConfig
from lvm_core.tracking.runs import TrainingRun
from lvm_core.tracking.training_log import BaselineScores, register_trained_model
from lvm_core.train import data as train_data
from lvm_core.train.baselines import fit_scored_baselines
from lvm_core.train.checkpoint import prepare_checkpoint_dir
from lvm_core.train.config import EpochMetrics, TrainConfig, TrainResult
from lvm_core.train.trainer import train
from tasks.common import COMPUTE_RETRIES, HEAVY_CPU_TAG, HOUR, IO_RETRIES, publish_table


@task(name="load-training-data", task_run_name="load-{data}", cache_policy=NO_CACHE, **IO_RETRIES)
def load_training_data(data: str, val: str | None, force: bool) -> train_data.TrainingData:
    """A dataset folder (gates must have passed unless forced) or a reference-format NPZ (+ optional val NPZ)."""
    path = Path(data)
    if path.is_dir():
        if val:
            raise ValueError("--val is only for NPZ training files; a dataset folder has its own val split")
        return train_data.from_dataset(path, force=force)
    if path.suffix == ".npz":
        return train_data.from_reference_npz(path, Path(val) if val else None)
    raise FileNotFoundError(f"{data}: not a dataset folder or a .npz file")


@task(name="fit-baselines", task_run_name="baselines-{data.dataset_id}", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def fit_baselines(data: train_data.TrainingData, out_dir: Path) -> tuple[dict[str, Any], BaselineScores]:
    """Copy-last, mean, recency-weighted mean and ridge, fitted on train, scored on the same val/test/ood windows."""
    fitted, scores = fit_scored_baselines(data, out_dir)
    log = get_run_logger()
    for name, s in scores.items():
        log.info("baseline %-18s %s", name, " ".join(f"{k}={v:.4f}" for k, v in s.items()))
    return fitted, scores


@task(name="train", task_run_name="train-{model_config.arch}-{data.dataset_id}", cache_policy=NO_CACHE,
      timeout_seconds=24 * HOUR, tags=[HEAVY_CPU_TAG])
def run_training(
    data: train_data.TrainingData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool,
    run: TrainingRun,
) -> TrainResult:
    """Train with per-epoch checkpoints, early stopping and divergence detection; metrics go to MLflow live."""
    log = get_run_logger()
    done = prepare_checkpoint_dir(checkpoint_dir, resume)
    if done is not None:
        for h in done:  # earlier epochs of the interrupted run, so the curves are whole
            run.log_epoch({k: v for k, v in h.items() if isinstance(v, (int, float)) and k != "epoch"}, step=int(h["epoch"]))
        log.info("resuming from %s (%d epochs done)", checkpoint_dir / CHECKPOINT_LAST_DIR, len(done))

    def on_epoch_end(m: EpochMetrics) -> None:
        run.log_epoch(
            {"train_loss": m.train_loss, "val_cosine": m.val_cosine, "lr": m.lr, "grad_norm": m.grad_norm,
             "grad_norm_max": m.grad_norm_max, "epoch_time_s": m.epoch_seconds},
            step=m.epoch,
        )
        log.info("epoch %d: train_loss %.5f val_cosine %.4f lr %.2e grad_norm %.3f (%.1fs)%s",
                 m.epoch, m.train_loss, m.val_cosine, m.lr, m.grad_norm, m.epoch_seconds, " *best" if m.is_best else "")

    val = data.split("val")
    if val is None:
        raise ValueError(f"{data.source}: no validation windows; cannot early-stop or evaluate")
    return train(model_config, train_config, data.vectors, data.sequences["train"], val, checkpoint_dir,
                 resume=resume, on_epoch_end=on_epoch_end, fingerprint=data.fingerprint)


@task(name="register-model", task_run_name="register-{registered_name}", cache_policy=NO_CACHE, **IO_RETRIES)
def register_model(
    run: TrainingRun,
    result: TrainResult,
    model_config: ModelConfig,
    data: train_data.TrainingData,
    registered_name: str,
    baselines_dir: Path,
    baseline_scores: BaselineScores,
    work_dir: Path,
) -> dict[str, Any]:
    """Log curves and the model card, register a new version with alias `challenger`."""
    info = register_trained_model(run, result, model_config, data, registered_name, baselines_dir, baseline_scores,
                                  work_dir)
    return info.to_dict()


# --- the flow's result and its Prefect artifacts (no task run of its own) -----------------------------------


def publish_training_summary(
    info: dict[str, Any],
    data: train_data.TrainingData,
    model_config: ModelConfig,
    result: TrainResult,
    baseline_scores: BaselineScores,
    checkpoint_dir: Path,
    data_dir: Path,
) -> dict[str, Any]:
    """The flow's result; the model beside the baselines as a Prefect table artifact and one log line."""
    arch, name = model_config.arch, info["name"]
    best_baseline = max(baseline_scores.items(), key=lambda kv: kv[1].get("val", float("-inf")))
    summary = {
        **info,
        "arch": arch,
        "dataset": str(data.source),
        "dataset_id": data.dataset_id,
        "status": result.status,
        "epochs_run": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "val_cosine": result.best_val_cosine,
        "baselines_val_cosine": {k: v.get("val") for k, v in baseline_scores.items()},
        "best_baseline": best_baseline[0],
        "checkpoint_dir": str(checkpoint_dir),
        "tracking_uri": default_tracking_uri(data_dir),
    }
    publish_table(
        [{"predictor": f"{arch} (model)", "val_cosine": result.best_val_cosine}]
        + [{"predictor": k, "val_cosine": v.get("val")} for k, v in baseline_scores.items()],
        f"train-{arch}-{data.dataset_id}", f"{name} v{info['version']} beside the trivial baselines",
    )
    get_run_logger().info("registered %s v%s (alias challenger); val cosine %.4f vs best baseline %s %.4f",
                          name, info["version"], result.best_val_cosine or float("nan"), best_baseline[0],
                          best_baseline[1].get("val", float("nan")))
    return summary


@task(name="cross-validate", task_run_name="crossval-{dataset_id}", cache_policy=NO_CACHE,
      timeout_seconds=24 * HOUR, tags=[HEAVY_CPU_TAG])
def cross_validate(dataset_id: str, vectors: np.ndarray, pooled: SequenceSet, chunk_article_ids: np.ndarray,
                   text_hash: np.ndarray | None, config: CrossValConfig) -> CrossValResult:
    """Grouped cross-validation by article of every architecture beside the baselines (`lvm_core.evaluation.crossval`)."""
    log = get_run_logger()
    return run_crossval(vectors, pooled, chunk_article_ids, text_hash, config, progress=log.info)
