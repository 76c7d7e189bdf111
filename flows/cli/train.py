"""`lvm train` (one model, registered as challenger) and `lvm compare` (every architecture beside the baselines)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import call_flow, err
from flows.cli.options import Arch, DataDirOpt, data_dir_of


def train(
    data: Annotated[str, typer.Option(help="A built dataset folder, or a reference-format training-sequences NPZ")],
    val: Annotated[str | None, typer.Option(help="Validation NPZ (reference format; dataset folders carry their own)")] = None,
    arch: Annotated[str, Arch] = "amn",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on val cosine may end sooner)")] = 20,
    batch: Annotated[int, typer.Option("--batch", "--batch-size", help="Batch size")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-4,
    loss: Annotated[str, typer.Option(help="mse | cosine | infonce | mse+infonce")] = "mse",
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs")] = 3,
    dropout: Annotated[float, typer.Option(help="Dropout in the model")] = 0.5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run from its last checkpoint")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train on a dataset that failed its gates (recorded on the run)")] = False,
    name: Annotated[str | None, typer.Option(help="Registered model name [default: lvm-<arch>]")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a model, log it to MLflow and register it as `challenger`."""
    from flows.train_model import train_model
    from lvm_core.train.config import TrainConfig

    def go():
        opts = TrainConfig(loss=loss, patience=patience, seed=seed)
        return train_model(data=data, val=val, arch=arch, epochs=epochs, batch_size=batch, lr=lr, resume=resume,
                           force=force, data_dir=data_dir_of(data_dir), registered_name=name, dropout=dropout,
                           weight_decay=weight_decay, train_options=opts)

    summary = call_flow(go)
    t = Table(title=f"{summary['name']} v{summary['version']} ({summary['status']}, {summary['epochs_run']} epochs)")
    t.add_column("predictor")
    t.add_column("val cosine", justify="right")
    t.add_row(f"[bold]{arch} (model)[/]", f"{summary['val_cosine']:.4f}")
    for k, v in summary["baselines_val_cosine"].items():
        t.add_row(k, "" if v is None else f"{v:.4f}")
    err.print(t)
    typer.echo(summary["uri"])


def compare(
    data: Annotated[str, typer.Option(help="A built dataset folder")],
    arch: Annotated[list[str] | None, typer.Option(help="Architectures to train (repeatable) [default: all]")] = None,
    folds: Annotated[int, typer.Option(help="Grouped cross-validation folds by article (>= 3); 0: the fixed split, "
                                            "models trained once and registered")] = 10,
    seeds: Annotated[int, typer.Option(help="Training seeds per fold (cross-validation)")] = 3,
    curve_fraction: Annotated[list[float] | None, typer.Option(
        help="Learning curve: fractions of the training articles (repeatable) [default: 0.25 0.5]")] = None,
    no_curve: Annotated[bool, typer.Option("--no-curve", help="Skip the learning curve")] = False,
    jobs: Annotated[int, typer.Option(help="Trainings run at once (cross-validation; one torch thread each)")] = 2,
    split_seed: Annotated[int, typer.Option(help="Seed of the article-to-fold assignment")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per training [default: 3 in cross-validation, 20 with --folds 0]")] = None,
    batch: Annotated[int | None, typer.Option("--batch", "--batch-size", help="Batch size [default: 128 / 64]")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate [default: 2e-4 / 1e-4]")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Every architecture beside the trivial baselines: grouped cross-validation by article (default), or --folds 0."""
    from flows.compare import compare_architectures
    from lvm_core.evaluation.bootstrap import format_delta, format_interval

    if folds and folds < 3:
        err.print(f"[red]--folds must be 0 or >= 3 (test, inner validation, inner train), got {folds}[/]")
        raise typer.Exit(2)
    fractions = [] if no_curve else (curve_fraction or [0.25, 0.5])
    out = call_flow(compare_architectures, data=data, archs=arch or ["amn", "amn_mix", "gru", "lstm", "transformer"],
                    epochs=epochs, batch_size=batch, lr=lr, data_dir=data_dir_of(data_dir), folds=folds, seeds=seeds,
                    curve_fractions=fractions, jobs=jobs, split_seed=split_seed)
    if out.get("crossval"):
        _crossval_table(out["rows"], folds, seeds)
        typer.echo(out["markdown"])
        return
    t = Table(title="architectures beside the trivial baselines")
    for col in ("predictor", "params", "val cos (selection)", "test cos [95% CI]", "Δ test vs best baseline", "ood cos",
                "train s", "ms/batch"):
        t.add_column(col, justify="left" if col == "predictor" else "right")
    for r in sorted(out["rows"], key=lambda r: -r["val_cosine"]):
        d = r.get("delta_vs_best_baseline")
        delta = format_delta(d["delta"], d["low"], d["high"]) if d and r["predictor"] != r.get("best_baseline") else "—"
        t.add_row(r["predictor"], f"{r['params']:,}", f"{r['val_cosine']:.4f}",
                  format_interval(r["test_cosine"], *(r.get("test_interval") or (None, None))), delta,
                  f"{r['ood_cosine']:.4f}", f"{r['train_seconds']:.0f}", f"{r['latency_ms_per_batch']:.2f}")
    err.print(t)
    typer.echo(out["markdown"])


def _crossval_table(rows: list[dict], folds: int, seeds: int) -> None:
    from lvm_core.evaluation.bootstrap import format_delta, format_interval
    from lvm_core.evaluation.compare import crossval_verdict

    t = Table(title=f"grouped {folds}-fold cross-validation by article, {seeds} seed(s)")
    for col in ("predictor", "cosine [95% CI]", "Δ vs best baseline [95% CI]", "Holm p", "R@1 (within article)", "MRR"):
        t.add_column(col, justify="left" if col == "predictor" else "right")
    for r in rows:
        d = r.get("delta_cosine")
        t.add_row(r["predictor"], format_interval(r["cosine"]["mean"], r["cosine"]["low"], r["cosine"]["high"]),
                  format_delta(d["delta"], d["low"], d["high"]) if d else "—", f"{d['p_holm']:.3g}" if d else "—",
                  f"{r['r@1']['mean']:.3f}", f"{r['mrr']['mean']:.3f}")
    err.print(t)
    err.print(crossval_verdict(rows, 0.95))
