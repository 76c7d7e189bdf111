"""The tables of the evaluation report, and the one small table model rendered to both Markdown and HTML.

Cells are formatted in one place (`_fmt`: numbers to 4 decimals, NaN/None as "—", booleans as PASS/FAIL)
and escaped for each format, so a chunk text containing HTML or pipes cannot break either document.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lvm_core.evaluation.bootstrap import format_delta, format_interval
from lvm_core.evaluation.gates import gate_value_text, primary_baseline
from lvm_core.evaluation.result import INTERVAL_METRICS, EvaluationResult, split_label

TEXT_LIMIT = 240  # characters of chunk text shown per table cell
DELTA_METRICS = (("cosine", "cosine"), ("margin", "margin"), ("r@5", "R@5"), ("mrr", "MRR"),
                 ("within_r@1", "within-article R@1"), ("within_mrr", "within-article MRR"),
                 ("contrastive_acc", "contrastive acc"))


@dataclass
class Table:
    """Headers and rows of cell values, rendered as a Markdown or an HTML table."""

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
    """A cell as text: 4 decimals, "—" for None/NaN, PASS/FAIL for booleans, lists comma-joined."""
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
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- tables ----------------------------------------------------------------------------------------


def context_table(context: Mapping[str, Any]) -> Table | None:
    rows = [[k, v] for k, v in context.items() if k not in ("gates", "crossval")]
    return Table(["item", "value"], rows) if rows else None


def gates_table(gates: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> Table | None:
    if not gates:
        return None
    if isinstance(gates, Mapping):  # manifest style: name -> {passed, value, threshold}
        gates = [{"name": k, **v} for k, v in gates.items()]
    rows = [
        [g.get("name"), bool(g.get("passed")), gate_value_text(g.get("value")), g.get("threshold"), g.get("detail", "")]
        for g in gates
    ]
    return Table(["gate", "result", "value", "threshold", "detail"], rows)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _cell(res: EvaluationResult, predictor: str, split: str, key: str) -> Any:
    """The metric with its interval (`0.5690 [0.5610, 0.5770]`) where one was computed, else the number."""
    value = res.metrics.get(predictor, {}).get(split, {}).get(key)
    iv = res.intervals.get(predictor, {}).get(split, {}).get(key) if key in INTERVAL_METRICS else None
    if value is None or not iv:
        return value
    return format_interval(float(value), _num(iv.get("low")), _num(iv.get("high")))


def summary_table(res: EvaluationResult) -> Table:
    rows = []
    for r in res.summary_table():
        p, s = r["predictor"], r["split"]
        rows.append(
            [p, split_label(s, res.ood_kind), r["n_windows"]]
            + [_cell(res, p, s, k) for k in ("cosine", "margin", "r@5", "mrr", "contrastive_acc", "within_r@1")]
        )
    headers = ["predictor", "split", "windows", "cosine", "margin", "R@5", "MRR", "contrastive acc", "within-article R@1"]
    return Table(headers, rows)


def delta_table(res: EvaluationResult) -> Table | None:
    """Model − baseline per split and baseline, each with its article-level interval."""
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
            rows.append([split_label(s, res.ood_kind), b] + cells)
    if not rows:
        return None
    return Table(["split", "baseline"] + [f"Δ {label}" for _, label in DELTA_METRICS], rows)


def interval_note(res: EvaluationResult) -> str:
    boot = res.config.get("bootstrap") or {}
    if not res.intervals:
        return "No intervals were computed for this evaluation."
    level = float(boot.get("level", 0.95))
    arts = ", ".join(f"{s} {n}" for s, n in (boot.get("n_articles") or {}).items())
    if boot.get("method") == "cluster_t":
        how = (f"{level:.0%} cluster-robust t intervals over articles (G − 1 degrees of freedom, articles "
               f"weighted by their windows; they hold their level with ~10 articles, where a percentile "
               f"bootstrap is too narrow; articles per split: {arts})")
    else:
        how = (f"{level:.0%} article-level bootstrap intervals ({boot.get('n_resamples')} resamples of articles, "
               f"seed {boot.get('seed')}; articles per split: {arts})")
    return (
        f"[low, high]: {how}. Reported split: {res.reporting_split}"
        + ("" if res.reporting_split == "test" else " (this dataset has no test split)")
        + "; val is the split used for selection."
        + ood_note(res)
    )


def ood_note(res: EvaluationResult) -> str:
    """What the ood split is, from the manifest's `ood_kind` (empty when the evaluation has no ood split)."""
    if "ood" not in res.splits:
        return ""
    if res.ood_kind == "in_distribution":
        return (" ood is a second in-distribution test sample (stratified split, `ood_kind: in_distribution`): "
                "its numbers are a second look at test, not a shift, and are not gated as one.")
    if res.ood_kind == "shift":
        return " ood is a real shift (articles held out by range or title): its cosine and gap are gated."
    return " What ood is was not recorded (`ood_kind` unknown)."


def metric_table(res: EvaluationResult, keys: Sequence[str], labels: Sequence[str] | None = None) -> Table:
    rows = []
    for p in res.predictors:
        for s in res.splits:
            rows.append([p, s] + [_cell(res, p, s, k) for k in keys])
    return Table(["predictor", "split"] + list(labels or keys), rows)


def offset_table(res: EvaluationResult) -> Table | None:
    ks = sorted({k for p in res.offset_sweep.values() for d in p.values() for k in d})
    if not ks:
        return None
    rows: list[list[Any]] = []
    for s in res.splits:
        counts = res.offset_counts.get(s, {})
        rows.append(["(windows)", s] + [counts.get(k) for k in ks])
        for p in res.predictors:
            d = res.offset_sweep.get(p, {}).get(s, {})
            rows.append([p, s] + [d.get(k) for k in ks])
    return Table(["predictor", "split"] + [f"k={k:+d}" if k else "k=0 (target)" for k in ks], rows)


def bins_table(res: EvaluationResult) -> Table | None:
    bins = sorted({b for p in res.metrics_by_bin.values() for d in p.values() for b in d}, key=str)
    if not bins:
        return None
    rows: list[list[Any]] = []
    for s in res.splits:
        counts = res.bin_counts.get(s, {})
        rows.append(["(windows)", s] + [counts.get(b) for b in bins])
        for p in res.predictors:
            d = res.metrics_by_bin.get(p, {}).get(s, {})
            rows.append([p, s] + [d.get(b) for b in bins])
    return Table(["predictor", "split"] + [f"bin {b}" for b in bins], rows)


def data_table(res: EvaluationResult) -> Table | None:
    if not res.data_direction:
        return None
    rows = [[split_label(s, res.ood_kind), res.data_direction.get(s)] for s in res.splits]
    return Table(["split", "data direction cos(ctx[j], target), j = 0.."], rows)


def neighbor_tables(res: EvaluationResult) -> list[tuple[str, Table]]:
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
                    Table(
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


def baseline_lines(res: EvaluationResult) -> list[str]:
    """The model against the ONE baseline of the primary comparison (best trivial baseline on val) per split,
    the reported split first; the gate and the model card compare against the same baseline."""
    lines: list[str] = []
    if len(res.predictors) < 2:
        return lines
    name = primary_baseline(res.metrics, res.model_name)
    if name == "none":
        return lines
    report = res.reporting_split
    for s in sorted(res.splits, key=lambda x: x != report):  # the reporting split first
        try:
            val = res.metric(name, s, "cosine")
            model = res.metric(res.model_name, s, "cosine")
        except ValueError:
            continue
        d = res.delta(name, s)
        delta = format_delta(d["delta"], d["low"], d["high"]) if math.isfinite(d["delta"]) else format_delta(model - val)
        role = " (reported; primary comparison)" if s == report else ""
        lines.append(
            f"{split_label(s, res.ood_kind)}{role}: {res.model_name} cosine {_cell(res, res.model_name, s, 'cosine')} "
            f"vs {name} (best trivial baseline on val) {_cell(res, name, s, 'cosine')}: {delta}"
        )
    if res.ood_kind == "shift" and report in res.splits and "ood" in res.splits:
        try:
            gap = abs(res.metric(res.model_name, "ood", "cosine") - res.metric(res.model_name, report, "cosine"))
            lines.append(f"|ood − {report}| cosine of {res.model_name}: {_fmt(gap)}")
        except ValueError:
            pass
    return lines
