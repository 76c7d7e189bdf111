"""Flow: the whole plan in one run — build → train → evaluate → promote."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.build_dataset import build_dataset
from flows.evaluate_model import evaluate_model
from flows.infra.hooks import RUN_HOOKS
from flows.infra.runners import shard_task_runner
from flows.train_model import train_model
from lvm_core.contracts.build_options import BuildOptions
from lvm_core.contracts.layout import default_data_dir
from lvm_core.train.config import TrainConfig
from tasks.dataset import collect_work_garbage


@flow(name="lvm_pipeline", flow_run_name="pipeline-{source}", log_prints=True, **RUN_HOOKS)
def lvm_pipeline(
    source: str = "sample",
    data_dir: str | None = None,
    limit_articles: int | None = None,
    snapshot_id: str | None = None,
    arch: Literal["amn", "amn_mix", "gru", "lstm", "transformer"] = "amn",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-4,
    build_options: BuildOptions = BuildOptions(),
    train_options: TrainConfig | None = None,
    model_thresholds: dict[str, float | int | bool] | None = None,
    promote: bool = True,
    workers: int | None = None,
    dask_address: str | None = None,
    collect_work: bool = False,
) -> dict[str, Any]:
    """Build a gated dataset from the snapshot, train a model on it, evaluate it beside the baselines and
    promote it to `champion` when every gate passes. Each stage is a subflow, visible on its own in the UI.

    Args:
        source: 'sample', a dump path or URL, or a .parquet/.jsonl file with id,title,text.
        data_dir: Data folder (default $LVM_DATA_DIR or ./lvm-data).
        limit_articles: Only the first N articles, for quick runs.
        snapshot_id: Override the snapshot id derived from the source.
        arch: Architecture to train: amn, amn_mix, gru, lstm or transformer.
        epochs: Maximum training epochs.
        batch_size: Training batch size.
        lr: AdamW learning rate.
        build_options: Chunking, encoder, splits and data-gate thresholds.
        train_options: Loss, schedule, patience, seed.
        model_thresholds: Post-training gate threshold overrides.
        promote: Make the model `champion` when every gate passes.
        workers: Build the dataset's shards on a temporary local Dask cluster of this many workers.
        dask_address: Build them on an existing Dask cluster (tcp://HOST:8786); default $LVM_DASK_ADDRESS.
        collect_work: Once the dataset is published, remove the work folders no running build needs (`lvm gc`);
            the scheduled deployment (prefect.yaml) sets it, so monthly rebuilds do not pile up work.
    """
    build = build_dataset.with_options(task_runner=shard_task_runner(workers, dask_address))
    dataset = build(source=source, data_dir=data_dir, limit_articles=limit_articles,
                    snapshot_id=snapshot_id, options=build_options)
    if collect_work:
        collect_work_garbage(str(data_dir_for(data_dir)))
    trained = train_model(data=dataset, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                          data_dir=data_dir, train_options=train_options)
    thresholds = {**build_options.thresholds, **(model_thresholds or {})}
    evaluated = evaluate_model(model=trained["uri"], dataset=dataset, data_dir=data_dir,
                               thresholds=thresholds, promote=promote)
    get_run_logger().info("pipeline done: dataset %s, model %s, gates %s", dataset, trained["uri"],
                          "passed" if evaluated["gates_passed"] else "failed")
    return {"dataset": dataset, "train": trained, "evaluation": evaluated}


def data_dir_for(data_dir: str | None) -> str:
    """The data folder a build with this `data_dir` parameter uses."""
    return data_dir or str(default_data_dir())
