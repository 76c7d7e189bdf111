"""`lvm check` (every data gate again on a built dataset) and `lvm datasets` (the built ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import call, console, err
from flows.cli.options import DataDirOpt, data_dir_of, parse_thresholds
from flows.cli.tables import gate_cell


def check(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (published or set aside under _failed/)")],
    threshold: Annotated[list[str] | None, typer.Option(help="Gate threshold override NAME=VALUE on top of the dataset's own (repeatable)")] = None,
    docs_dir: Annotated[Path | None, typer.Option("--docs-dir", help="Where Data Docs and validation_result.json go [default: a new temporary folder]; never inside the dataset")] = None,
    docs: Annotated[bool, typer.Option("--docs/--no-docs", help="Render the Data Docs HTML")] = True,
    encoder: Annotated[str | None, typer.Option(help="Encoder to re-encode the oracle sample with [default: the dataset's]; its fingerprint must match")] = None,
) -> None:
    """Re-run every data gate on an existing dataset (oracle, leakage and split parity recomputed from its files); exit 1 if any fails.

    The dataset folder is only read.
    """
    from expectations.check import check_dataset

    result = call(check_dataset, dataset, parse_thresholds(threshold), docs_dir, docs, encoder)
    t = Table(title=f"data gates: {Path(dataset).name}")
    t.add_column("gate", no_wrap=True)
    for col in ("passed", "value", "threshold", "detail"):
        t.add_column(col, overflow="fold")
    for r in result.report.results:
        t.add_row(r.name, "[green]yes[/]" if r.passed else "[red]NO[/]", gate_cell(r.value), gate_cell(r.threshold),
                  "" if r.passed else r.detail)
    console.print(t)
    o = result.oracle
    sampled = int(o["sample_size"]) + int(o.get("train_sample_size") or 0)
    console.print(f"oracle recall@{o['k']}: {o['recall']:.4f} ({o['hits']}/{sampled} re-encoded targets: {o['sample_size']} "
                  f"of {o['n_targets']} evaluation targets and {o.get('train_sample_size') or 0} train targets, seed "
                  f"{o['seed']}); misaligned rows (cosine < {o.get('aligned_cos')} to their re-encoded text): "
                  f"{o.get('misaligned')}; the manifest recorded {gate_cell(result.recorded_oracle)}",
                  highlight=False, soft_wrap=True)
    if result.recomputed:
        now, then = result.recomputed["leakage_raw"], (result.recorded or {}).get("leakage_raw") or {}
        console.print(f"leakage recomputed from the files: text-hash overlap rate "
                      f"{now['text_hash_overlap']['rate']:.4f}, near duplicates {now['near_duplicates']['rate']:.4f}, "
                      f"test rows repeating val {now['val_test']['rate']:.4f}; the manifest recorded "
                      f"{gate_cell((then.get('text_hash_overlap') or {}).get('rate'))}; split parity recomputed "
                      "over the articles with windows", highlight=False, soft_wrap=True)
    if result.report.docs_path:
        console.print(f"data docs: {result.report.docs_path}", highlight=False, soft_wrap=True)
    if not result.passed:
        err.print(f"[bold red]failed:[/] {', '.join(result.report.failed)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("all data gates passed", highlight=False)


def datasets(data_dir: DataDirOpt = None) -> None:
    """List built datasets."""
    from lvm_core.data.build.load import list_datasets

    rows = list_datasets(Path(data_dir_of(data_dir)))
    t = Table("dataset", "ready", "articles", "chunks", "train/val/test/ood", "created")
    for r in rows:
        s = r["sequences"] or {}
        t.add_row(r["dataset"], "yes" if r["ready"] else "no", str(r["articles"]), str(r["chunks"]),
                  "/".join(str(s.get(k, "-")) for k in ("train", "val", "test", "ood")), str(r["created_at"]))
    console.print(t)
