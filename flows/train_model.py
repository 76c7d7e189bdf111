"""Flow: dataset (or reference NPZ) → baselines + trained model → MLflow run → registered `challenger`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.hooks import RUN_HOOKS

from lvm_core import contracts
from lvm_core.models import ModelConfig
from lvm_core.tracking import TrainingRun, configure_tracking
from lvm_core.train import TrainConfig
from tasks import train as t
from tasks.common import publish_table




@flow(name="train_model", flow_run_name="train-{arch}", log_prints=True, **RUN_HOOKS)
def train_model(
    data: str,
    val: str | None = None,
    arch: Literal["amn", "amn_mix", "gru", "lstm", "transformer"] = "amn",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-4,
    resume: bool = False,
    force: bool = False,
    data_dir: str | None = None,
    registered_name: str | None = None,
    hidden: int = 256,
    mlp_hidden: int = 512,
    dropout: float = 0.5,
    weight_decay: float = 0.1,
    train_options: TrainConfig | None = None,
) -> dict[str, Any]:
    """Train one architecture on a gated dataset folder (or reference NPZ), track it and register it.

    `force` trains on a dataset that failed its gates (recorded on the run). `resume` continues the
    interrupted run of the same data/model/optimiser settings from its last checkpoint.

    Defaults (lr 1e-4, dropout 0.5, weight decay 0.1) are the best measured on the embedded sample, where
    ~7k training windows make every architecture overfit within an epoch at lighter regularisation.

    Args:
        data: A built dataset folder, or a reference-format training-sequences NPZ.
        val: Validation NPZ (reference format only; dataset folders carry their own val split).
        arch: Architecture: amn (baseline), amn_mix (AMN anchored on its attention mix), gru, lstm or transformer.
        epochs: Maximum epochs; early stopping on val cosine may end sooner.
        batch_size: Training batch size.
        lr: AdamW learning rate.
        resume: Continue the interrupted run of the same settings from its last checkpoint.
        force: Train on a dataset that failed its gates (recorded on the run).
        data_dir: Data folder (default $LVM_DATA_DIR or ./lvm-data).
        registered_name: Registered model name (default lvm-<arch>).
        hidden: Attention / recurrent / transformer width.
        mlp_hidden: MLP / feed-forward width.
        dropout: Dropout inside the model.
        weight_decay: AdamW weight decay.
        train_options: Loss, schedule, patience, seed, divergence thresholds (epochs/batch/lr above win).
    """
    log = get_run_logger()
    root = Path(data_dir) if data_dir else contracts.default_data_dir()
    configure_tracking(root)
    dataset = t.load_training_data(data, val, force)
    base = (train_options or TrainConfig()).model_dump()
    base.update(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    train_config = TrainConfig(**base)
    model_config = ModelConfig(arch=arch, dim=dataset.dim, context_len=dataset.context_len,
                               hidden=hidden, mlp_hidden=mlp_hidden, dropout=dropout)
    name = registered_name or f"lvm-{arch}"
    ckpt = t.checkpoint_dir_for(root, dataset, model_config, train_config)
    split_hash = dataset.manifest.splits.content_hash if dataset.manifest else None
    tags = {"forced": str(bool(force)).lower(), "resumed": str(bool(resume)).lower(), "checkpoint_dir": str(ckpt)}
    if force and dataset.manifest and not dataset.manifest.gates_passed:
        tags["forced_past_failed_gates"] = ",".join(dataset.manifest.failed_gates)
    with TrainingRun(root, run_name=f"{arch}-{dataset.dataset_id}", arch=arch,
                     snapshot_id=dataset.manifest.snapshot_id if dataset.manifest else None,
                     encoder_fingerprint=dataset.fingerprint, split_hash=split_hash, tags=tags) as run:
        run.log_params({"model": model_config.model_dump(), "train": train_config.model_dump(),
                        "data": {"source": str(dataset.source), "dataset_id": dataset.dataset_id,
                                 "train_windows": len(dataset.sequences["train"]),
                                 "val_windows": len(dataset.split("val") or [])}})
        if dataset.manifest_path is not None:
            run.log_dataset_manifest(dataset.manifest_path)
            if dataset.manifest and dataset.manifest.gates:
                gates = {name: g.to_dict() for name, g in dataset.manifest.gates.items()}
                run.log_gate_results({"stage": "pre_training", **gates}, stage="pre_training")
        baselines_dir = ckpt.parent / f"{ckpt.name}-baselines"
        _, baseline_scores = t.fit_baselines(dataset, baselines_dir)
        for bname, scores in baseline_scores.items():
            run.log_metrics({f"baseline.{bname}.{split}_cosine": v for split, v in scores.items()})
        result = t.run_training(dataset, model_config, train_config, ckpt, resume, run)
        if not result.ok:
            run.mark_failed(f"diverged: {result.reason}")
            raise t.TrainingDivergedError(
                f"training diverged ({result.reason}); last good checkpoint kept at {result.last_checkpoint or ckpt}"
            )
        run.log_metrics({"best_val_cosine": result.best_val_cosine or 0.0, "best_epoch": result.best_epoch or 0,
                         "epochs_run": result.epochs_completed})
        info = t.register_model(run, result, model_config, dataset, name, baselines_dir, baseline_scores, ckpt)
    best_baseline = max(baseline_scores.items(), key=lambda kv: kv[1].get("val", float("-inf")))
    summary = {
        **info,
        "arch": arch,
        "dataset": str(dataset.source),
        "dataset_id": dataset.dataset_id,
        "status": result.status,
        "epochs_run": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "val_cosine": result.best_val_cosine,
        "baselines_val_cosine": {k: v.get("val") for k, v in baseline_scores.items()},
        "best_baseline": best_baseline[0],
        "checkpoint_dir": str(ckpt),
        "tracking_uri": contracts.default_tracking_uri(root),
    }
    publish_table(
        [{"predictor": f"{arch} (model)", "val_cosine": result.best_val_cosine}]
        + [{"predictor": k, "val_cosine": v.get("val")} for k, v in baseline_scores.items()],
        f"train-{arch}-{dataset.dataset_id}", f"{name} v{info['version']} beside the trivial baselines",
    )
    log.info("registered %s v%s (alias challenger); val cosine %.4f vs best baseline %s %.4f",
             name, info["version"], result.best_val_cosine or float("nan"), best_baseline[0], best_baseline[1].get("val", float("nan")))
    return summary
