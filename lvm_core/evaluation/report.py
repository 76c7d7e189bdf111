"""Evaluation report: Markdown + self-contained HTML with plots, gates, summary and neighbour tables.

The HTML embeds its PNGs as base64 (one file to attach to an MLflow run or a Prefect artifact); the
Markdown references the same PNGs written next to it. Every file is published atomically.
Plots use matplotlib's object API with the Agg canvas, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lvm_core.evaluation.bootstrap import format_delta, format_interval
from lvm_core.evaluation import INTERVAL_METRICS, EvaluationResult
from lvm_core.io.storage import atomic_path

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
OFFSET_PNG = "offset_sweep.png"
METRICS_PNG = "metrics_vs_baselines.png"
BINS_PNG = "coherence_bins.png"
TEXT_LIMIT = 240  # characters of chunk text shown per table cell


class ReportError(ValueError):
    """The report cannot be written from the given inputs."""


# --- small table model rendered to both formats ----------------------------------------------------


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[Any]]

    def md(self) -> str:
        def cell(v: Any) -> str:
            # raw HTML in data must not render in Markdown viewers either
            text = html.escape(_fmt(v), quote=False)
            return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(h) for h in self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(_fmt(h))}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td{_cls(v)}>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in self.rows
        )
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "PASS" if v else "FAIL"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "—"
        return f"{f:.4f}" if abs(f) < 1000 else f"{f:.1f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _cls(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return ' class="pass"' if v else ' class="fail"'
    return ""


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- tables ----------------------------------------------------------------------------------------


def _context_table(context: Mapping[str, Any]) -> _Table | None:
    rows = [[k, v] for k, v in context.items() if k != "gates"]
    return _Table(["item", "value"], rows) if rows else None


def _gates_table(gates: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> _Table | None:
    if not gates:
        return None
    if isinstance(gates, Mapping):  # manifest style: name -> {passed, value, threshold}
        gates = [{"name": k, **v} for k, v in gates.items()]
    rows = [
        [g.get("name"), bool(g.get("passed")), _gate_value(g.get("value")), g.get("threshold"), g.get("detail", "")]
        for g in gates
    ]
    return _Table(["gate", "result", "value", "threshold", "detail"], rows)


def _gate_value(value: Any) -> Any:
    """A delta gate's value ({baseline, split, delta, low, high}) as `Δ +x [lo, hi] vs baseline (split)`."""
    if isinstance(value, Mapping) and {"delta", "low", "high"} <= set(value):
        text = format_delta(_num(value["delta"]), _num(value["low"]), _num(value["high"]))
        return f"{text} vs {value.get('baseline', '?')} ({value.get('split', '?')})"
    return value


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _cell(res: EvaluationResult, predictor: str, split: str, key: str) -> Any:
    """The metric with its interval (`0.5690 [0.5610, 0.5770]`) where one was computed, else the number."""
    value = res.metrics.get(predictor, {}).get(split, {}).get(key)
    iv = res.intervals.get(predictor, {}).get(split, {}).get(key) if key in INTERVAL_METRICS else None
    if value is None or not iv:
        return value
    return format_interval(float(value), _num(iv.get("low")), _num(iv.get("high")))


def _summary_table(res: EvaluationResult) -> _Table:
    rows = []
    for r in res.summary_table():
        p, s = r["predictor"], r["split"]
        rows.append(
            [p, s, r["n_windows"]] + [_cell(res, p, s, k) for k in ("cosine", "margin", "r@5", "mrr", "contrastive_acc")]
        )
    return _Table(["predictor", "split", "windows", "cosine", "margin", "R@5", "MRR", "contrastive acc"], rows)


DELTA_METRICS = (("cosine", "cosine"), ("margin", "margin"), ("r@5", "R@5"), ("mrr", "MRR"), ("contrastive_acc", "contrastive acc"))


def _delta_table(res: EvaluationResult) -> _Table | None:
    """Model − baseline per split and baseline, each with its article-bootstrap interval."""
    if not res.deltas:
        return None
    rows = []
    for s in res.splits:
        for b in res.predictors[1:]:
            d = res.deltas.get(s, {}).get(b)
            if not d:
                continue
            cells = []
            for key, _ in DELTA_METRICS:
                e = d.get(key) or {}
                cells.append(format_delta(_num(e.get("delta")), _num(e.get("low")), _num(e.get("high"))))
            rows.append([s, b] + cells)
    if not rows:
        return None
    return _Table(["split", "baseline"] + [f"Δ {label}" for _, label in DELTA_METRICS], rows)


def _interval_note(res: EvaluationResult) -> str:
    boot = res.config.get("bootstrap") or {}
    if not res.intervals:
        return "No intervals were computed for this evaluation."
    level = float(boot.get("level", 0.95))
    arts = ", ".join(f"{s} {n}" for s, n in (boot.get("n_articles") or {}).items())
    return (
        f"[low, high]: {level:.0%} article-level bootstrap intervals ({boot.get('n_resamples')} resamples of "
        f"articles, seed {boot.get('seed')}; articles per split: {arts}). Reported split: {res.reporting_split}"
        + ("" if res.reporting_split == "test" else " (this dataset has no test split)")
        + "; val is the split used for selection."
    )


def _metric_table(res: EvaluationResult, keys: Sequence[str], labels: Sequence[str] | None = None) -> _Table:
    rows = []
    for p in res.predictors:
        for s in res.splits:
            rows.append([p, s] + [_cell(res, p, s, k) for k in keys])
    return _Table(["predictor", "split"] + list(labels or keys), rows)


def _offset_table(res: EvaluationResult) -> _Table | None:
    ks = sorted({k for p in res.offset_sweep.values() for d in p.values() for k in d})
    if not ks:
        return None
    rows = []
    for s in res.splits:
        counts = res.offset_counts.get(s, {})
        rows.append(["(windows)", s] + [counts.get(k) for k in ks])
        for p in res.predictors:
            d = res.offset_sweep.get(p, {}).get(s, {})
            rows.append([p, s] + [d.get(k) for k in ks])
    return _Table(["predictor", "split"] + [f"k={k:+d}" if k else "k=0 (target)" for k in ks], rows)


def _bins_table(res: EvaluationResult) -> _Table | None:
    bins = sorted({b for p in res.metrics_by_bin.values() for d in p.values() for b in d}, key=str)
    if not bins:
        return None
    rows = []
    for s in res.splits:
        counts = res.bin_counts.get(s, {})
        rows.append(["(windows)", s] + [counts.get(b) for b in bins])
        for p in res.predictors:
            d = res.metrics_by_bin.get(p, {}).get(s, {})
            rows.append([p, s] + [d.get(b) for b in bins])
    return _Table(["predictor", "split"] + [f"bin {b}" for b in bins], rows)


def _data_table(res: EvaluationResult) -> _Table | None:
    if not res.oracle_recall and not res.data_direction:
        return None
    rows = [[s, res.oracle_recall.get(s), res.data_direction.get(s)] for s in res.splits]
    return _Table(["split", "oracle R@5", "data direction cos(ctx[j], target), j = 0.."], rows)


def _neighbor_tables(res: EvaluationResult) -> list[tuple[str, _Table]]:
    out = []
    for s in res.splits:
        rows = []
        for r in res.neighbors.get(s, []):
            neigh = " ‖ ".join(
                f"[{n['score']:.3f}{' = target' if n.get('is_target') else ''}] {_clip(n['text'], 160)}"
                for n in r.get("neighbors", [])
            )
            rows.append(
                [
                    f"{r['article_id']}#{r['target_chunk_index']}",
                    _clip(r["context_last"]),
                    _clip(r["target"]),
                    r.get("cosine_to_target"),
                    r.get("target_rank"),
                    neigh,
                ]
            )
        if rows:
            out.append(
                (
                    s,
                    _Table(
                        [
                            "article#chunk",
                            "context (last chunk)",
                            "true target",
                            "cos",
                            "rank",
                            "nearest chunks to the prediction",
                        ],
                        rows,
                    ),
                )
            )
    return out


def _baseline_lines(res: EvaluationResult) -> list[str]:
    lines = []
    if len(res.predictors) < 2:
        return lines
    report = res.reporting_split
    for s in sorted(res.splits, key=lambda x: x != report):  # the reporting split first
        try:
            name, val = res.best_baseline(s, "cosine")
            model = res.metric(res.model_name, s, "cosine")
        except ValueError:
            continue
        d = res.delta(name, s)
        delta = format_delta(d["delta"], d["low"], d["high"]) if math.isfinite(d["delta"]) else format_delta(model - val)
        role = " (reported)" if s == report else ""
        lines.append(
            f"{s}{role}: {res.model_name} cosine {_cell(res, res.model_name, s, 'cosine')} vs best baseline {name} "
            f"{_cell(res, name, s, 'cosine')}: {delta}"
        )
    if "val" in res.splits and "ood" in res.splits:
        try:
            lines.append(f"|ood − val| cosine of {res.model_name}: {_fmt(res.ood_val_gap())}")
        except ValueError:
            pass
    return lines


# --- plots -----------------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _plot_offsets(res: EvaluationResult) -> bytes | None:
    splits = [s for s in res.splits if any(res.offset_sweep.get(p, {}).get(s) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.2 * len(splits), 3.8))
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, s in zip(axes, splits):
        for i, p in enumerate(res.predictors):
            d = res.offset_sweep.get(p, {}).get(s, {})
            ks = sorted(d)
            ax.plot(ks, [_nan_f(d[k]) for k in ks], marker="o", lw=2.2 if i == 0 else 1.2, label=p)
        ax.axvline(0, color="grey", ls="--", lw=0.8)
        ax.set_title(f"offset sweep — {s}")
        ax.set_xlabel("k (chunk at target + k; 0 = target, −1 = last context chunk)")
        ax.set_ylabel("mean cos(pred, chunk)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _nan_f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _plot_metrics(res: EvaluationResult) -> bytes | None:
    metrics = [("cosine", "cosine to target"), ("r@5", "retrieval R@5")]
    splits = [s for s in res.splits if any("cosine" in res.metrics.get(p, {}).get(s, {}) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    n_p = len(res.predictors)
    width = 0.8 / n_p
    x = np.arange(len(splits))
    for ax, (key, label) in zip(axes, metrics):
        for i, p in enumerate(res.predictors):
            vals = [_nan_f(res.metrics.get(p, {}).get(s, {}).get(key)) for s in splits]
            ivs = [res.interval(p, s, key) for s in splits]
            err = np.array([[max(0.0, v - lo), max(0.0, hi - v)] for v, (lo, hi) in zip(vals, ivs)]).T
            err = None if not np.isfinite(err).all() else err
            bars = ax.bar(x + (i - (n_p - 1) / 2) * width, vals, width, label=p, edgecolor="black" if i == 0 else None,
                          yerr=err, capsize=2, error_kw={"lw": 0.8})
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ax.set_xticks(x, splits)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _plot_bins(res: EvaluationResult) -> bytes | None:
    splits = [s for s in res.splits if any(res.metrics_by_bin.get(p, {}).get(s) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.5 * len(splits), 3.8))
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    n_p = len(res.predictors)
    width = 0.8 / n_p
    for ax, s in zip(axes, splits):
        bins = sorted({b for p in res.predictors for b in res.metrics_by_bin.get(p, {}).get(s, {})}, key=str)
        x = np.arange(len(bins))
        for i, p in enumerate(res.predictors):
            d = res.metrics_by_bin.get(p, {}).get(s, {})
            bars = ax.bar(x + (i - (n_p - 1) / 2) * width, [_nan_f(d.get(b)) for b in bins], width, label=p)
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ax.set_xticks(x, [str(b) for b in bins])
        ax.set_xlabel("coherence bin (low → high)")
        ax.set_ylabel("mean cos(pred, target)")
        ax.set_title(f"cosine by coherence bin — {s}")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


# --- document --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.pass{color:#0a7a0a;font-weight:600} td.fail{color:#b00020;font-weight:600}
img{max-width:100%;border:1px solid #eee}
.muted{color:#666;font-size:0.85em}
"""


def write_report(
    result: EvaluationResult,
    out_dir: Path,
    title: str = "LVM evaluation report",
    context: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.md, report.html and the PNG plots into `out_dir`; returns their paths by name.

    `context` holds dataset/model facts shown at the top (snapshot id, model name/version, run id, ...)
    and optionally ``gates``: a list of {name, passed, value, threshold[, detail]} dicts (or the
    manifest's name -> {...} mapping).
    """
    if not isinstance(result, EvaluationResult):
        raise ReportError(f"write_report: expected an EvaluationResult, got {type(result).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"write_report: {out_dir} exists and is not a folder")
    context = dict(context or {})
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    plots = {
        "offset_sweep": (
            OFFSET_PNG,
            _plot_offsets(result),
            "Offset sweep: mean cosine of the prediction to the chunk at target + k. The peak belongs at k = 0.",
        ),
        "metrics": (METRICS_PNG, _plot_metrics(result), "Model (outlined) beside the trivial baselines."),
        "coherence_bins": (BINS_PNG, _plot_bins(result), "Cosine per coherence bin of the window's article."),
    }

    # sections: (heading, markdown text, html text)
    sections: list[tuple[str, str, str]] = []

    def add(
        heading: str,
        intro: str = "",
        table: _Table | None = None,
        image: tuple[str, bytes | None, str] | None = None,
        bullets: Sequence[str] = (),
    ) -> None:
        md, ht = [], []
        if intro:
            md.append(intro)
            ht.append(f"<p>{html.escape(intro)}</p>")
        if bullets:
            md.append("\n".join(f"- {html.escape(b, quote=False)}" for b in bullets))
            ht.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in bullets) + "</ul>")
        if image is not None and image[1] is not None:
            name, data, caption = image
            md.append(f"![{caption}]({name})")
            b64 = base64.b64encode(data).decode("ascii")
            ht.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}"><figcaption class="muted">{html.escape(caption)}</figcaption></figure>'
            )
        if table is not None:
            md.append(table.md())
            ht.append(table.html())
        sections.append((heading, "\n\n".join(md), "\n".join(ht)))

    ctx_table = _context_table(context)
    if ctx_table is not None:
        add("Run", table=ctx_table)
    gates = _gates_table(context.get("gates"))
    if gates is not None:
        failed = [r[0] for r in gates.rows if not r[1]]
        add("Gates", "All gates passed." if not failed else f"Failed gates: {', '.join(map(str, failed))}.", gates)
    add(
        "Summary",
        _interval_note(result),
        table=_summary_table(result),
        image=plots["metrics"],
        bullets=_baseline_lines(result),
    )
    deltas = _delta_table(result)
    if deltas is not None:
        add(
            "Model − baseline",
            f"Paired differences {result.model_name} − baseline on the same windows of each split, with their "
            "article-bootstrap intervals; a difference whose interval contains 0 is not established.",
            deltas,
        )
    add("Offset sweep", table=_offset_table(result), image=plots["offset_sweep"])
    add(
        "Retrieval",
        "Rank of the true target among all chunks (the window's context chunks excluded) and within its own article. Ties are counted pessimistically.",
        _metric_table(result, ["r@1", "r@5", "r@10", "mrr", "median_rank", "within_r@1", "within_r@5", "within_mrr"]),
    )
    add(
        "Context ablations",
        "Change of mean cosine to the target when the context is altered (0 = the predictor ignores that change).",
        _metric_table(
            result,
            ["ablation_shuffled", "ablation_reversed", "ablation_leave_one_out", "ablation_repeat_padded"],
            ["shuffled", "reversed", "leave-one-out", "repeat-padded"],
        ),
    )
    horizon = int(result.config.get("horizon", 0) or 0)
    if horizon:
        add(
            "Rollout",
            "Predictions fed back as context; mean cosine to the true future chunk at each step.",
            _metric_table(
                result,
                [f"rollout_h{h}" for h in range(1, horizon + 1)] + ["rollout_n"],
                [f"h={h}" for h in range(1, horizon + 1)] + ["windows"],
            ),
        )
    bins = _bins_table(result)
    if bins is not None:
        add("Coherence bins", table=bins, image=plots["coherence_bins"])
    data = _data_table(result)
    if data is not None:
        add(
            "Data checks",
            "Oracle R@5 queries the bank with each target's true vector (checks the bank and row alignment, not a model).",
            data,
        )
    for split, table in _neighbor_tables(result):
        add(f"Nearest chunks — {split} ({result.model_name})", table=table)

    md_text = (
        f"# {html.escape(title, quote=False)}\n\n_generated {generated}_\n\n"
        + "\n\n".join(f"## {html.escape(h, quote=False)}\n\n{body}" for h, body, _ in sections)
        + "\n"
    )
    html_text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="muted">generated {generated}</p>\n'
        + "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{body}\n</section>" for h, _, body in sections)
        + "\n</body></html>\n"
    )

    paths: dict[str, Path] = {}
    for key, (name, data_png, _) in plots.items():
        if data_png is None:
            continue
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(data_png)
        paths[key] = out_dir / name
    with atomic_path(out_dir / REPORT_MD) as tmp:
        tmp.write_text(md_text, encoding="utf-8")
    paths["markdown"] = out_dir / REPORT_MD
    with atomic_path(out_dir / REPORT_HTML) as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    paths["html"] = out_dir / REPORT_HTML
    return paths
