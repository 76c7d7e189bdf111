"""Rich tables and cell formats the commands print (datasets, evaluations, gate values)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from flows.cli.common import err


def print_dataset_summary(path: Path) -> None:
    from lvm_core.contracts.layout import DatasetPaths
    from lvm_core.contracts.manifest import read_manifest

    m = read_manifest(DatasetPaths(path).manifest)
    t = Table(title=f"dataset {m.dataset_id}", show_header=False)
    t.add_row("articles / chunks", f"{m.counts.articles} / {m.counts.chunks}")
    t.add_row("sequences " + "/".join(m.sequences), " / ".join(str(v) for v in m.sequences.values()))
    t.add_row("encoder", f"{m.encoder.name} ({m.encoder.dim}-d)")
    if m.coherence.mean is not None:
        t.add_row("coherence mean", f"{m.coherence.mean:.3f}")
    reuse = (m.lineage or {}).get("reuse")
    if reuse:
        t.add_row("reused from", str(reuse.get("previous_dataset") or ("nothing (cold)" if reuse.get("cold") else "nothing")))
        t.add_row("articles reused / chunked", f"{reuse.get('articles_reused', 0)} / {reuse.get('articles_chunked', 0)}")
        t.add_row("chunks reused / chunked", f"{reuse.get('chunks_reused', 0)} / {reuse.get('chunks_chunked', 0)}")
        t.add_row("vectors copied / from cache / encoded", " / ".join(
            str(reuse.get(k, 0)) for k in ("vectors_copied", "vectors_from_cache", "vectors_encoded")))
    t.add_row("crossing windows", str(m.crossing_windows))
    t.add_row("oracle recall@5", f"{m.oracle_recall_at_5:.4f}")
    t.add_row("gates", "all passed" if m.gates_passed else "FAILED")
    err.print(t)


def print_evaluation(summary: dict) -> None:
    t = Table(title=f"{summary['model']} beside the trivial baselines (same windows)")
    for col in ("predictor", "split", "cosine", "margin", "r@5", "mrr", "contrastive_acc"):
        t.add_column(col, justify="left" if col in ("predictor", "split") else "right")
    for row in summary["summary"]:
        name = row["predictor"]
        if name == summary.get("model_name_in_metrics"):
            name = f"[bold]{name}[/]"
        t.add_row(name, row["split"], *(cell(row.get(k)) for k in ("cosine", "margin", "r@5", "mrr", "contrastive_acc")))
    err.print(t)
    g = Table(title="post-training gates")
    for col in ("gate", "passed", "value", "threshold"):
        g.add_column(col)
    for name, r in summary["gates"].items():
        g.add_row(name, "[green]yes[/]" if r["passed"] else "[red]NO[/]", gate_cell(r["value"]), gate_cell(r["threshold"]))
    err.print(g)
    promo = summary.get("promotion") or {}
    err.print(f"promotion: {promo.get('action', 'skipped')} {promo.get('message', '')}".rstrip(), soft_wrap=True)
    cont = summary.get("contamination") or {}
    if cont.get("status") in ("contaminated", "unchecked"):
        err.print(f"[bold yellow]contamination:[/] {cont.get('tag')} (allowed; not promoted)", highlight=False, soft_wrap=True)
    err.print(f"report: {summary['report']['html']}", soft_wrap=True)


def cell(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def gate_cell(v) -> str:
    """A gate value or threshold for a table cell: floats to 4 places, a delta with its interval as
    `Δ +0.003 [−0.002, +0.008] vs NAME (split)`, other dicts as k=v pairs."""
    if isinstance(v, dict) and {"delta", "low", "high"} <= set(v):
        from lvm_core.evaluation.bootstrap import format_delta

        return f"{format_delta(v['delta'], v['low'], v['high'])} vs {v.get('baseline', '?')} ({v.get('split', '?')})"
    if isinstance(v, dict):
        return ", ".join(f"{k}={gate_cell(x)}" for k, x in v.items())
    return cell(v)


def print_gc_report(report) -> None:
    """What `lvm gc` removed (or would remove), with sizes, and the bytes freed."""
    verb = "would remove" if report.dry_run else "removed"
    t = Table(title=f"gc {report.data_dir}" + (" (dry run)" if report.dry_run else ""))
    for col in ("folder", "bytes", "why"):
        t.add_column(col, overflow="fold", justify="right" if col == "bytes" else "left")
    for item in report.removed:
        t.add_row(item.path, f"{item.bytes:,}", item.why)
    err.print(t)
    for line in (*report.kept, *report.repaired):
        err.print(line, highlight=False, soft_wrap=True)
    err.print(f"{verb} {len(report.removed)} folder(s); {report.bytes_freed:,} bytes "
              f"{'would be ' if report.dry_run else ''}freed", highlight=False, soft_wrap=True)
