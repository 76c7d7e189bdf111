"""`lvm drift` (coherence between two builds) and `lvm monitor-drift` (served contexts vs training contexts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import call, call_flow, console, err
from flows.cli.options import DataDirOpt, data_dir_of


def drift(
    a: Annotated[Path, typer.Option(help="Dataset folder of the older snapshot")],
    b: Annotated[Path, typer.Option(help="Dataset folder of the newer snapshot")],
    plot: Annotated[Path | None, typer.Option(help="Write an overlay histogram PNG here")] = None,
) -> None:
    """Compare article coherence between two builds (mean difference, KS statistic and p-value)."""
    from lvm_core.data import coherence
    from lvm_core.data.build.load import load_dataset

    def coh(root: Path):
        ds = load_dataset(root, require_ready=False)
        return coherence.article_coherence(ds.vectors, ds.article_ids, ds.chunk_index)

    ca, cb = call(coh, a), call(coh, b)
    report = coherence.coherence_drift(ca, cb)
    if plot is not None:
        coherence.plot_coherence_drift(ca, cb, plot, labels=(a.name, b.name))
        report["plot"] = str(plot)
    console.print_json(data=report)


def monitor_drift_command(
    current: Annotated[str | None, typer.Option(help="Served contexts: an .npy of shape (n, ctx, D), or a dataset folder (its test/ood windows) [default: $LVM_SERVED_CONTEXTS]")] = None,
    model: Annotated[str | None, typer.Option(help="Reference = the training data of this registered model: models:/<name>@<alias> or models:/<name>/<version> [default: models:/lvm-amn@champion unless --dataset or --service]")] = None,
    service: Annotated[str | None, typer.Option(help="Reference = the training data of the model this running `lvm serve` answers with, e.g. http://127.0.0.1:8000 (token from LVM_SERVE_TOKEN)")] = None,
    dataset: Annotated[str | None, typer.Option(help="Reference = this dataset folder or dataset id")] = None,
    window: Annotated[int, typer.Option(min=10, help="Contexts sampled from each side")] = 2000,
    threshold_auc: Annotated[float, typer.Option(min=0.5, max=1.0, help="Drift when the domain-classifier ROC-AUC is above this")] = 0.75,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drift when the MMD permutation p-value is below this")] = 0.01,
    seed: Annotated[int, typer.Option(help="Sampling and permutation seed")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """Check once whether served contexts drifted from the model's training contexts; exit 1 on drift.

    Runs the `monitor_drift` flow (alerts through LVM_ALERT_WEBHOOK_URL and scores to LVM_PUSHGATEWAY_URL
    when set) and prints each score beside its threshold.
    """
    from flows.drift import monitor_drift

    if not (model or service or dataset):
        model = "models:/lvm-amn@champion"
    out = call_flow(monitor_drift, reference_dataset=dataset, current=current, data_dir=data_dir_of(data_dir),
                    model=model, service=service, threshold_auc=threshold_auc, alpha=alpha, max_windows=window, seed=seed)
    t = Table("test", "value", "threshold", "fires", title=f"{Path(out['current']).name} vs training contexts of {out['reference']}")
    t.add_row("domain-classifier ROC-AUC", f"{out['auc']:.4f}", f"> {out['threshold_auc']}", "[red]yes[/]" if out["auc"] > out["threshold_auc"] else "no")
    t.add_row("MMD permutation p-value", f"{out['mmd_p_value']:.4f}", f"< {out['alpha']}", "[red]yes[/]" if out["mmd_p_value"] < out["alpha"] else "no")
    console.print(t)
    console.print(f"{out['n_reference']} reference vs {out['n_current']} served contexts; alert: {out['alert'] or 'none sent'}; "
                  f"pushed to Prometheus: {'yes' if out['pushed'] else 'no'}", highlight=False, soft_wrap=True)
    if out["drifted"]:
        err.print(f"[bold red]drift:[/] {'; '.join(out['reasons'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("no drift", highlight=False)
