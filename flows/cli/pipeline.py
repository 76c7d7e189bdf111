"""`lvm run`: the whole pipeline (build → train → evaluate → promote) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import call_flow, err
from flows.cli.options import (
    Arch,
    DaskAddressOpt,
    DataDirOpt,
    OnDuplicateOpt,
    WorkersOpt,
    data_dir_of,
    parse_thresholds,
)
from flows.cli.tables import print_dataset_summary, print_evaluation


def run(
    source: Annotated[str, typer.Option(help="'sample' or a dump / Parquet / JSONL path")] = "sample",
    limit_articles: Annotated[int | None, typer.Option(help="Only the first N articles (quick runs)")] = None,
    arch: Annotated[str, Arch] = "amn",
    epochs: Annotated[int, typer.Option(help="Maximum epochs")] = 20,
    batch: Annotated[int, typer.Option("--batch", "--batch-size", help="Batch size")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-4,
    threshold: Annotated[list[str] | None, typer.Option(help="Gate threshold override NAME=VALUE (repeatable)")] = None,
    on_duplicate: OnDuplicateOpt = "error",
    data_dir: DataDirOpt = None,
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
) -> None:
    """Run the whole pipeline (build → train → evaluate → promote) and print gates and model vs baselines."""
    from flows.pipeline import lvm_pipeline
    from lvm_core.contracts.build_options import BuildOptions

    def go():
        return lvm_pipeline(source=source, data_dir=data_dir_of(data_dir), limit_articles=limit_articles, arch=arch,
                            epochs=epochs, batch_size=batch, lr=lr,
                            build_options=BuildOptions(thresholds=parse_thresholds(threshold), on_duplicate=on_duplicate),
                            workers=workers, dask_address=dask_address)

    out = call_flow(go)
    print_dataset_summary(Path(out["dataset"]))
    print_evaluation(out["evaluation"])
    root = Path(data_dir_of(data_dir)).resolve()
    err.print(f"dataset:    {out['dataset']}", soft_wrap=True)
    err.print(f"model:      {out['train']['uri']}  (MLflow run {out['train']['run_id']})", soft_wrap=True)
    err.print(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db", soft_wrap=True)
