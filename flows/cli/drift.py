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


INSUFFICIENT_EXIT = 3  # no verdict: too few articles / sessions (1 is drift, and a user error)


def monitor_drift_command(
    current: Annotated[str | None, typer.Option(help="Served contexts: a window file, a folder of window files (one contexts-<replica>.npy per replica) or a glob pattern; or a dataset folder (its test/ood windows) [default: $LVM_SERVED_CONTEXTS]")] = None,
    model: Annotated[str | None, typer.Option(help="Reference = the held-out (val) windows of this registered model's dataset: models:/<name>@<alias> or models:/<name>/<version> [default: models:/lvm-amn@champion unless --dataset or --service]")] = None,
    service: Annotated[str | None, typer.Option(help="Reference = the val windows of the model this running `lvm serve` answers with, e.g. http://127.0.0.1:8000 (token from LVM_SERVE_TOKEN)")] = None,
    dataset: Annotated[str | None, typer.Option(help="Reference = the val windows of this dataset folder or dataset id")] = None,
    min_groups: Annotated[int, typer.Option(min=5, help="Articles / client sessions each side needs before a verdict")] = 10,
    max_groups: Annotated[int, typer.Option(min=5, help="Articles / sessions sampled from each side")] = 250,
    per_group: Annotated[int, typer.Option(min=1, help="Windows sampled from each article / session")] = 4,
    threshold_auc: Annotated[float, typer.Option(min=0.5, max=1.0, help="Drift needs the grouped domain-classifier ROC-AUC above this")] = 0.75,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drift needs the MMD group-permutation p-value below this")] = 0.01,
    seed: Annotated[int, typer.Option(help="Sampling and permutation seed")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """Check once whether served contexts drifted from the model's held-out contexts.

    Exit 0: no drift; 1: drift; 3: insufficient data (fewer than --min-groups articles or client sessions on a
    side: no verdict, no alert). Runs the `monitor_drift` flow (PagerDuty trigger/resolve once per drift
    episode through LVM_ALERT_WEBHOOK_URL, scores to LVM_PUSHGATEWAY_URL when set) and prints each score
    beside its threshold.
    """
    from flows.drift import monitor_drift

    if not (model or service or dataset):
        model = "models:/lvm-amn@champion"
    if max_groups < min_groups:
        err.print(f"--max-groups {max_groups} is below --min-groups {min_groups}", highlight=False)
        raise typer.Exit(1)
    out = call_flow(monitor_drift, reference_dataset=dataset, current=current, data_dir=data_dir_of(data_dir),
                    model=model, service=service, threshold_auc=threshold_auc, alpha=alpha, min_groups=min_groups,
                    max_groups=max_groups, max_per_group=per_group, seed=seed)
    sizes = (f"{out['n_reference_groups']} reference articles vs {out['n_current_groups']} current sessions/articles "
             f"(minimum {out['min_groups']}); {out['n_reference']} vs {out['n_current']} contexts")
    for note in out["notes"]:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if out["verdict"] == "insufficient data":
        console.print(sizes, highlight=False, soft_wrap=True)
        err.print(f"[bold yellow]insufficient data:[/] {'; '.join(out['reasons'])}: no verdict, no alert",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(INSUFFICIENT_EXIT)
    t = Table("score", "value", "drift needs", title=f"{Path(out['current']).name} vs held-out contexts of {out['reference']}")
    t.add_row("domain-classifier ROC-AUC (over groups)", f"{out['auc']:.4f}", f"> {out['threshold_auc']}")
    t.add_row("MMD group-permutation p-value", f"{out['mmd_p_value']:.4g}", f"< {out['alpha']}")
    console.print(t)
    console.print(f"{sizes}; alert: {out['alert'] or 'none sent'}"
                  f"{' (episode ' + out['episode'] + ')' if out['episode'] else ''}; "
                  f"pushed to Prometheus: {'yes' if out['pushed'] else 'no'}", highlight=False, soft_wrap=True)
    if out["drifted"]:
        err.print(f"[bold red]drift:[/] {'; '.join(out['reasons'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("no drift (drift needs both tests to fire)", highlight=False)
