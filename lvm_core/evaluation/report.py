"""Evaluation report: Markdown + self-contained HTML with plots, gates, summary and neighbour tables.

The HTML embeds its PNGs as base64 (one file to attach to an MLflow run or a Prefect artifact); the
Markdown references the same PNGs written next to it. Every file is published atomically.
`write_report` is a driver over the report's sections (`SECTIONS`, in reading order); the tables are
built in `report_tables` and the figures drawn in `report_figures`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lvm_core.contracts.errors import UserError
from lvm_core.evaluation import report_tables
from lvm_core.evaluation.report_figures import Plot, report_plots
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.io.storage import atomic_path

__all__ = ["REPORT_HTML", "REPORT_MD", "ReportError", "write_report"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


class ReportError(UserError, ValueError):
    """The report cannot be written from the given inputs."""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.pass{color:#0a7a0a;font-weight:600} td.fail{color:#b00020;font-weight:600}
img{max-width:100%;border:1px solid #eee}
.muted{color:#666;font-size:0.85em}
"""


@dataclass(frozen=True)
class Section:
    """One section of the report: a heading, then intro text, bullets, a figure and a table, each optional."""

    heading: str
    intro: str = ""
    table: report_tables.Table | None = None
    image: Plot | None = None
    bullets: Sequence[str] = ()

    def markdown(self) -> str:
        md = []
        if self.intro:
            md.append(self.intro)
        if self.bullets:
            md.append("\n".join(f"- {html.escape(b, quote=False)}" for b in self.bullets))
        if self.image is not None and self.image.png is not None:
            md.append(f"![{self.image.caption}]({self.image.name})")
        if self.table is not None:
            md.append(self.table.md())
        return "\n\n".join(md)

    def html(self) -> str:
        ht = []
        if self.intro:
            ht.append(f"<p>{html.escape(self.intro)}</p>")
        if self.bullets:
            ht.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in self.bullets) + "</ul>")
        if self.image is not None and self.image.png is not None:
            caption = html.escape(self.image.caption)
            b64 = base64.b64encode(self.image.png).decode("ascii")
            ht.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{b64}"><figcaption class="muted">{caption}</figcaption></figure>'
            )
        if self.table is not None:
            ht.append(self.table.html())
        return "\n".join(ht)


# --- sections, in reading order --------------------------------------------------------------------

#: A section builder: (result, context, plots) -> the sections it contributes (none when it has no data).
SectionBuilder = Callable[[EvaluationResult, Mapping[str, Any], Mapping[str, Plot]], list[Section]]


def _run(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.context_table(context)
    return [] if table is None else [Section("Run", table=table)]


def _gates(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.gates_table(context.get("gates"))
    if table is None:
        return []
    failed = [r[0] for r in table.rows if not r[1]]
    intro = "All gates passed." if not failed else f"Failed gates: {', '.join(map(str, failed))}."
    return [Section("Gates", intro, table)]


def _summary(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    return [
        Section(
            "Summary",
            report_tables.interval_note(result),
            table=report_tables.summary_table(result),
            image=plots["metrics"],
            bullets=report_tables.baseline_lines(result),
        )
    ]


def _deltas(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.delta_table(result)
    if table is None:
        return []
    intro = (
        f"Paired differences {result.model_name} − baseline on the same windows of each split, with their "
        "article-level intervals; a difference whose interval contains 0 is not established. Only the "
        "pre-declared primary comparison (cosine, model − the best trivial baseline chosen on val, on the "
        "reported split; gate beats_best_baseline) decides promotion: every other row is descriptive and "
        "not corrected for multiplicity."
    )
    return [Section("Model − baseline", intro, table)]


def _offsets(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    return [Section("Offset sweep", table=report_tables.offset_table(result), image=plots["offset_sweep"])]


def _retrieval(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    keys = ["r@1", "r@5", "r@10", "mrr", "median_rank", "within_r@1", "within_r@5", "within_mrr"]
    intro = (
        "Rank of the true target among all chunks (the window's context chunks excluded) and within its own "
        "article. Ties are counted pessimistically."
    )
    return [Section("Retrieval", intro, report_tables.metric_table(result, keys))]


def _ablations(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.metric_table(
        result,
        ["ablation_shuffled", "ablation_reversed", "ablation_leave_one_out", "ablation_repeat_padded"],
        ["shuffled", "reversed", "leave-one-out", "repeat-padded"],
    )
    intro = "Change of mean cosine to the target when the context is altered (0 = the predictor ignores that change)."
    return [Section("Context ablations", intro, table)]


def _rollout(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    horizon = int(result.config.get("horizon", 0) or 0)
    if not horizon:
        return []
    table = report_tables.metric_table(
        result,
        [f"rollout_h{h}" for h in range(1, horizon + 1)] + ["rollout_n"],
        [f"h={h}" for h in range(1, horizon + 1)] + ["windows"],
    )
    return [Section("Rollout", "Predictions fed back as context; mean cosine to the true future chunk at each step.", table)]


def _bins(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.bins_table(result)
    return [] if table is None else [Section("Coherence bins", table=table, image=plots["coherence_bins"])]


def _data(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    table = report_tables.data_table(result)
    if table is None:
        return []
    intro = ("Mean cosine of the j-th context chunk to the target. The oracle recall of the data gate (target "
             "texts re-encoded, `lvm check`) is in the dataset manifest; querying the bank with its own rows, "
             "which cannot fail, is not reported.")
    return [Section("Data checks", intro, table)]


def _neighbors(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    return [
        Section(f"Nearest chunks — {split} ({result.model_name})", table=table)
        for split, table in report_tables.neighbor_tables(result)
    ]


def _crossval(result: EvaluationResult, context: Mapping[str, Any], plots: Mapping[str, Plot]) -> list[Section]:
    """The architectures' grouped cross-validation on this dataset (`context["crossval"]`, from
    `lvm_core.evaluation.compare.crossval_facts`): what chose the architecture, beside the one split above."""
    cv = context.get("crossval")
    if not cv:
        return []
    png = Path(cv["source"]) / "learning_curve.png"
    image = Plot("crossval_learning_curve.png", png.read_bytes(), "Learning curve: gain over the best baseline "
                 "against training articles (grouped cross-validation)") if png.is_file() else None
    out = [Section("Cross-validated comparison of the architectures",
                   f"{cv['text']} Full table: {cv['source']}/comparison.md.",
                   report_tables.Table(list(cv["headers"]), [list(r) for r in cv["rows"]]))]
    if cv.get("curve_rows"):
        out.append(Section(f"Learning curve ({cv['curve_arch']})",
                           "Gain of the architecture over the per-fold best baseline with fewer training articles "
                           "(nested subsets, same test articles): a curve still rising says more data would help.",
                           report_tables.Table(list(cv["curve_headers"]), [list(r) for r in cv["curve_rows"]]),
                           image=image))
    return out


SECTIONS: tuple[SectionBuilder, ...] = (
    _run, _gates, _summary, _deltas, _crossval, _offsets, _retrieval, _ablations, _rollout, _bins, _data, _neighbors,
)


# --- document --------------------------------------------------------------------------------------


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
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    plots = report_plots(result)
    sections = [section for build in SECTIONS for section in build(result, context, plots)]
    paths: dict[str, Path] = {}
    for key, plot in plots.items():
        if plot.png is None:
            continue
        with atomic_path(out_dir / plot.name) as tmp:
            tmp.write_bytes(plot.png)
        paths[key] = out_dir / plot.name
    plotted = {p.name for p in plots.values()}
    for section in sections:  # figures a section brings from elsewhere (the cross-validation's curve)
        if section.image is not None and section.image.png is not None and section.image.name not in plotted:
            with atomic_path(out_dir / section.image.name) as tmp:
                tmp.write_bytes(section.image.png)
            paths[section.image.name.removesuffix(".png")] = out_dir / section.image.name
    paths["markdown"] = _publish_text(out_dir / REPORT_MD, _markdown(title, generated, sections))
    paths["html"] = _publish_text(out_dir / REPORT_HTML, _html(title, generated, sections))
    return paths


def _markdown(title: str, generated: str, sections: Sequence[Section]) -> str:
    return (
        f"# {html.escape(title, quote=False)}\n\n_generated {generated}_\n\n"
        + "\n\n".join(f"## {html.escape(s.heading, quote=False)}\n\n{s.markdown()}" for s in sections)
        + "\n"
    )


def _html(title: str, generated: str, sections: Sequence[Section]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="muted">generated {generated}</p>\n'
        + "\n".join(f"<section><h2>{html.escape(s.heading)}</h2>\n{s.html()}\n</section>" for s in sections)
        + "\n</body></html>\n"
    )


def _publish_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
