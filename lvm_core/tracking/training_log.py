"""What a training records on its MLflow run: its inputs (parameters, dataset manifest, pre-training gates), the
baselines' scores, its outcome (failed on divergence, best/final numbers otherwise), and the registered model
with its training curves and model card."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lvm_core.models.builder import build_model, count_parameters
from lvm_core.models.config import ModelConfig
from lvm_core.tracking.curves import plot_training_curves
from lvm_core.tracking.model_logging import ModelVersionInfo
from lvm_core.tracking.runs import TrainingRun
from lvm_core.train.config import TrainConfig, TrainingDivergedError, TrainResult
from lvm_core.train.data import TrainingData

BaselineScores = dict[str, dict[str, float]]  # baseline name -> split -> mean cosine


@contextlib.contextmanager
def training_run(
    data_dir: Path,
    data: TrainingData,
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


def _log_training_inputs(run: TrainingRun, data: TrainingData, model_config: ModelConfig,
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


def log_baseline_scores(run: TrainingRun, baseline_scores: BaselineScores) -> None:
    """`baseline.<name>.<split>_cosine` metrics on the training run."""
    for bname, scores in baseline_scores.items():
        run.log_metrics({f"baseline.{bname}.{split}_cosine": v for split, v in scores.items()})


def finish_training(run: TrainingRun, result: TrainResult, checkpoint_dir: Path) -> None:
    """Diverged: the run is marked failed and `TrainingDivergedError` stops the caller. Otherwise the best/final
    numbers are logged."""
    if not result.ok:
        run.mark_failed(f"diverged: {result.reason}")
        raise TrainingDivergedError(
            f"training diverged ({result.reason}); last good checkpoint kept at {result.last_checkpoint or checkpoint_dir}"
        )
    run.log_metrics({"best_val_cosine": result.best_val_cosine or 0.0, "best_epoch": result.best_epoch or 0,
                     "epochs_run": result.epochs_completed})


def register_trained_model(
    run: TrainingRun,
    result: TrainResult,
    model_config: ModelConfig,
    data: TrainingData,
    registered_name: str,
    baselines_dir: Path,
    baseline_scores: BaselineScores,
    work_dir: Path,
) -> ModelVersionInfo:
    """Training curves (plot in `work_dir`, logged under `plots`), the model registered as a new version
    with its baselines, and its model card."""
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
    card = model_card_fields(info, run.run_id, count_parameters(model), result, model_config, data, baseline_scores)
    run.log_model_card(render_model_card(card))
    return info


def model_card_fields(info: ModelVersionInfo, run_id: str, n_parameters: int, result: TrainResult,
                      model_config: ModelConfig, data: TrainingData, baseline_scores: BaselineScores) -> dict[str, Any]:
    """What the model card of a registered version says (`render_model_card` turns it into Markdown)."""
    val_model = result.best_val_cosine
    return {
        "name": info.name,
        "version": info.version,
        "run_id": run_id,
        "uri": info.uri,
        "model": {"arch": model_config.arch, "params": n_parameters, "config": model_config.model_dump()},
        "data": {"dataset_id": data.dataset_id, "dataset_dir": str(data.source),
                 "counts": data.manifest.counts.to_dict() if data.manifest else {},
                 "splits": data.manifest.sequences if data.manifest else {}},
        "encoder": data.fingerprint.to_dict(),
        "training": {"epochs_run": result.epochs_completed, "status": result.status, "reason": result.reason,
                     "best_epoch": result.best_epoch, "best_val_cosine": val_model,
                     "initial_val_cosine": result.initial_val_cosine},
        "metrics": {"val": {"model": val_model, **{k: v.get("val") for k, v in baseline_scores.items()}}},
        "model_name": "model",
    }
