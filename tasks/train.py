"""Prefect tasks of training: load data, fit baselines, train with checkpoints, register the model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import CHECKPOINT_LAST_DIR, EVAL_SPLITS, default_tracking_uri
from lvm_core.models.baselines import collection
from lvm_core.models.baselines.collection import save_baselines
from lvm_core.models.builder import build_model, count_parameters
from lvm_core.models.config import ModelConfig
from lvm_core.models.predict import mean_cosine
from lvm_core.tracking.curves import plot_training_curves
from lvm_core.tracking.runs import TrainingRun
from lvm_core.train import data as train_data
from lvm_core.train.checkpoint import prepare_checkpoint_dir
from lvm_core.train.config import EpochMetrics, TrainConfig, TrainResult
from lvm_core.train.trainer import train
from tasks.common import COMPUTE_RETRIES, HEAVY_CPU_TAG, HOUR, IO_RETRIES, publish_table


class TrainingDivergedError(UserError, RuntimeError):
    """Training stopped on divergence; the last good checkpoint is kept and nothing is registered."""


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
def fit_baselines(data: train_data.TrainingData, out_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Copy-last, mean, recency-weighted mean and ridge, fitted on train, scored on the same val/test/ood windows."""
    fitted = collection.fit_baselines(data.vectors, data.sequences["train"])
    scores: dict[str, dict[str, float]] = {}
    for name, b in fitted.items():
        scores[name] = {
            split: mean_cosine(b, data.vectors, seqs)
            for split in EVAL_SPLITS
            if (seqs := data.split(split)) is not None
        }
    save_baselines(fitted, out_dir)
    log = get_run_logger()
    for name, s in scores.items():
        log.info("baseline %-18s %s", name, " ".join(f"{k}={v:.4f}" for k, v in s.items()))
    return fitted, scores


@contextlib.contextmanager
def training_run(
    data_dir: Path,
    data: train_data.TrainingData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    *,
    force: bool,
    resume: bool,
) -> Iterator[TrainingRun]:
    """The MLflow run of one training, with its parameters, dataset manifest and pre-training gates logged.

    Tags record `forced`/`resumed`, the checkpoint folder and the failed data gates trained past.
    """
    split_hash = data.manifest.splits.content_hash if data.manifest else None
    tags = {"forced": str(bool(force)).lower(), "resumed": str(bool(resume)).lower(), "checkpoint_dir": str(checkpoint_dir)}
    if force and data.manifest and not data.manifest.gates_passed:
        tags["forced_past_failed_gates"] = ",".join(data.manifest.failed_gates)
    arch = model_config.arch
    with TrainingRun(data_dir, run_name=f"{arch}-{data.dataset_id}", arch=arch,
                     snapshot_id=data.manifest.snapshot_id if data.manifest else None,
                     encoder_fingerprint=data.fingerprint, split_hash=split_hash, tags=tags) as run:
        _log_training_inputs(run, data, model_config, train_config)
        yield run


def _log_training_inputs(run: TrainingRun, data: train_data.TrainingData, model_config: ModelConfig,
                         train_config: TrainConfig) -> None:
    run.log_params({"model": model_config.model_dump(), "train": train_config.model_dump(),
                    "data": {"source": str(data.source), "dataset_id": data.dataset_id,
                             "train_windows": len(data.sequences["train"]),
                             "val_windows": len(data.split("val") or [])}})
    if data.manifest_path is not None:
        run.log_dataset_manifest(data.manifest_path)
        if data.manifest and data.manifest.gates:
            gates = {name: g.to_dict() for name, g in data.manifest.gates.items()}
            run.log_gate_results({"stage": "pre_training", **gates}, stage="pre_training")


def log_baseline_scores(run: TrainingRun, baseline_scores: dict[str, dict[str, float]]) -> None:
    """`baseline.<name>.<split>_cosine` metrics on the training run."""
    for bname, scores in baseline_scores.items():
        run.log_metrics({f"baseline.{bname}.{split}_cosine": v for split, v in scores.items()})


def finish_training(run: TrainingRun, result: TrainResult, checkpoint_dir: Path) -> None:
    """Diverged: the run is marked failed and the flow stops. Otherwise the best/final numbers are logged."""
    if not result.ok:
        run.mark_failed(f"diverged: {result.reason}")
        raise TrainingDivergedError(
            f"training diverged ({result.reason}); last good checkpoint kept at {result.last_checkpoint or checkpoint_dir}"
        )
    run.log_metrics({"best_val_cosine": result.best_val_cosine or 0.0, "best_epoch": result.best_epoch or 0,
                     "epochs_run": result.epochs_completed})


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
    baseline_scores: dict[str, dict[str, float]],
    work_dir: Path,
) -> dict[str, Any]:
    """Log curves and the model card, register a new version with alias `challenger`."""
    from lvm_core.evaluation.model_card.card import render_model_card

    history = [h.to_dict() for h in result.history]
    curves = plot_training_curves(history, work_dir / "training_curves.png", title=f"{model_config.arch} on {data.dataset_id}")
    run.log_artifact(curves, "plots")
    model = result.model or build_model(model_config)
    tags = {
        "dataset_id": data.dataset_id,
        "best_epoch": result.best_epoch,
        "best_val_cosine": result.best_val_cosine,
        "train_status": result.status,
    }
    info = run.log_and_register_model(
        model, model_config, data.fingerprint, registered_name,
        signature_ctx=model_config.context_len, signature_dim=model_config.dim, tags=tags, baselines_dir=baselines_dir,
    )
    val_model = result.best_val_cosine
    card = render_model_card({
        "name": registered_name,
        "version": info.version,
        "run_id": run.run_id,
        "uri": info.uri,
        "model": {"arch": model_config.arch, "params": count_parameters(model), "config": model_config.model_dump()},
        "data": {"dataset_id": data.dataset_id, "dataset_dir": str(data.source),
                 "counts": data.manifest.counts.to_dict() if data.manifest else {},
                 "splits": data.manifest.sequences if data.manifest else {}},
        "encoder": data.fingerprint.to_dict(),
        "training": {"epochs_run": result.epochs_completed, "status": result.status, "reason": result.reason,
                     "best_epoch": result.best_epoch, "best_val_cosine": val_model,
                     "initial_val_cosine": result.initial_val_cosine},
        "metrics": {"val": {"model": val_model, **{k: v.get("val") for k, v in baseline_scores.items()}}},
        "model_name": "model",
    })
    run.log_model_card(card)
    return info.to_dict()


def publish_training_summary(
    info: dict[str, Any],
    data: train_data.TrainingData,
    model_config: ModelConfig,
    result: TrainResult,
    baseline_scores: dict[str, dict[str, float]],
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
