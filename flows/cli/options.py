"""Options shared by several commands, and the parsing of option values the commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="LVM_DATA_DIR", help="Data folder for datasets, cache, models and the MLflow DB [default: ./lvm-data]"),
]


def data_dir_of(value: Path | None) -> str:
    return str(value if value is not None else Path("lvm-data"))


def ranges_or_none(v: str | None) -> str | None:
    return v.strip() if v else None


OnDuplicateOpt = Annotated[
    str,
    typer.Option("--on-duplicate", help="Parquet/JSONL rows repeating an id with a different text: error (fail), "
                 "or keep the first / last row. Identical repeats are always dropped and counted"),
]


WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", envvar="LVM_WORKERS", help="Run the shards on a temporary local Dask cluster of N "
                 "single-threaded worker processes [default: in this process, one shard at a time]"),
]
DaskAddressOpt = Annotated[
    str | None,
    typer.Option("--dask-address", envvar="LVM_DASK_ADDRESS", help="Run the shards on an existing Dask cluster, "
                 "e.g. tcp://dask-scheduler:8786 (its workers must see the data folder at the same path, or share --work-url)"),
]

WorkUrlOpt = Annotated[
    str | None,
    typer.Option("--work-url", envvar="LVM_WORK_URL", help="Share finished work folders and published datasets "
                 "through this fsspec URL (file:///mnt/shared/lvm, s3://bucket/lvm, ...) instead of a data folder "
                 "mounted on every machine: each worker keeps its own data folder (LVM_LOCAL_DATA_DIR) and takes "
                 "the shards any machine finished from there [default: none]"),
]

EmbedResourcesOpt = Annotated[
    str | None,
    typer.Option("--embed-resources", envvar="LVM_EMBED_RESOURCES", help="Send the embed shards only to the Dask "
                 "workers declaring these resources, e.g. GPU=1 (workers started with `dask worker --resources "
                 "GPU=1`); needs --dask-address"),
]


Arch = typer.Option(help="Architecture: amn (baseline), amn_mix (AMN anchored on its attention mix), gru, lstm, transformer")

def parse_thresholds(items: list[str] | None) -> dict[str, float | bool]:
    out: dict[str, float | bool] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--threshold")
        v = value.strip().lower()
        out[name.strip()] = v in ("true", "yes", "1") if v in ("true", "false", "yes", "no") else float(value)
    return out
