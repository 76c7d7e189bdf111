"""Model card: a Markdown page that says what a registered LVM is, what it was trained on and how good it is.

Why: a cosine of 0.56 means nothing on its own (a 5-weight average of the context reaches it on the
embedded sample), so the card always puts the model's numbers beside the trivial baselines, names the
exact data snapshot and encoder, and lists the gates and known limitations. It renders whatever keys are
present, so the training and evaluation flows can add sections without changing this module.

Expected `info` keys (all optional):
- `name`, `version`, `run_id`, `created_at`
- `model`: `{arch, params, config: {...}}`
- `data`: `{snapshot_id, dataset_id, dataset_dir, manifest_digest, counts: {...}, splits: {...}}`
- `encoder`: an `EncoderFingerprint.to_dict()` (or the object)
- `training`: `{epochs_run, early_stopped, best_epoch, best_val_cosine, ...}`; `best_epoch == 0` means no
  training epoch beat the untrained model, and the card says so
- `metrics`: `metrics[predictor][split][metric]` (`lvm_core.evaluation.EvaluationResult.metrics`; the
  first predictor, or `model_name`, is the model) or `metrics[split][predictor]` (number or metric dict),
  or a whole `EvaluationResult.to_dict()`, whose bootstrap `intervals` and `deltas` are then shown
- `intervals`, `deltas`: as in `EvaluationResult` (when `metrics` is a plain dict)
- `model_name`: which predictor in `metrics` is the model
- `gates`: a GateReport, its `to_manifest()` dict, or `name -> bool`
- `intended_use`: text replacing the default; `limitations`: extra bullet points
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.evaluation.bootstrap import format_delta, format_interval
from lvm_core.io.storage import to_plain as _plain

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITATIONS", "render_model_card"]

SPLIT_NAMES = ("train", "val", "ood", "test")
BASELINE_ORDER = ("copy_last", "mean", "context_mean", "recency_weighted", "recency_weighted_mean", "ridge")
PRIMARY_METRIC = "cosine"

DEFAULT_INTENDED_USE = (
    "Predict the sentence-embedding vector of the next chunk of an encyclopedic article from the vectors of "
    "the preceding chunks, for research on vector-space language models, retrieval of likely continuations "
    "(nearest chunks to the prediction) and as a component of larger systems. Inputs must be vectors from "
    "exactly the encoder named above; the model refuses vectors of another dimension or fingerprint."
)

DEFAULT_LIMITATIONS = (
    "Trained and evaluated on a single Wikipedia snapshot; other snapshots, domains or writing styles may "
    "score lower.",
    "English only (the encoder and the training text are English).",
    "Predicts a vector, not text: text is only recovered by nearest-neighbour search in a bank of known chunks.",
    "Tied to one encoder: vectors from any other encoder (or another version of it) are meaningless inputs.",
    "Cosine to the true next chunk is modest in absolute terms; judge it against the trivial baselines "
    "(copy-last, mean of context, recency-weighted mean, ridge) reported beside it.",
    "Inherits the biases and gaps of Wikipedia's coverage and of the encoder.",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True, default=str).replace("|", "\\|").replace("`", "'") + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "| " + " | ".join(_fmt(h) if not isinstance(h, str) else h for h in headers) + " |"
    sep = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key))
        else:
            out.append((key, v))
    return out


def _kv_table(d: Mapping[str, Any]) -> str:
    return _table(["key", "value"], [(k, v) for k, v in _flatten(d)])


# --- metrics ---------------------------------------------------------------------------------------


def _metrics_by_split(metrics: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Normalise to metrics[split][predictor][metric]."""
    if not metrics:
        return {}
    split_major = all(k in SPLIT_NAMES for k in metrics)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for outer, inner in metrics.items():
        if not isinstance(inner, Mapping):
            continue
        for mid, value in inner.items():
            split, predictor = (outer, mid) if split_major else (mid, outer)
            entry = dict(value) if isinstance(value, Mapping) else {PRIMARY_METRIC: value}
            out.setdefault(str(split), {})[str(predictor)] = entry
    return out


def _order_predictors(predictors: Sequence[str], model_name: str | None) -> list[str]:
    def rank(p: str) -> tuple[int, int, str]:
        if p == model_name:
            return (0, 0, p)
        if p in BASELINE_ORDER:
            return (1, BASELINE_ORDER.index(p), p)
        return (2, 0, p)

    return sorted(predictors, key=rank)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _with_interval(value: Any, iv: Mapping[str, Any] | None) -> Any:
    """`0.5690 [0.5610, 0.5770]` when an interval exists, else the value as is."""
    if not iv or _num(value) is None:
        return value
    return format_interval(float(value), _num(iv.get("low")), _num(iv.get("high")))


def _metrics_section(
    metrics: Mapping[str, Any],
    model_name: str | None,
    intervals: Mapping[str, Any] | None = None,
    deltas: Mapping[str, Any] | None = None,
) -> list[str]:
    intervals = intervals or {}
    deltas = deltas or {}
    by_split = _metrics_by_split(metrics)
    if not by_split:
        return ["No metrics recorded."]
    predictors: list[str] = []
    for split_rows in by_split.values():
        for p in split_rows:
            if p not in predictors:
                predictors.append(p)
    if model_name is None and predictors:
        model_name = predictors[0]
    ordered = _order_predictors(predictors, model_name)
    splits = [s for s in SPLIT_NAMES if s in by_split] + [s for s in by_split if s not in SPLIT_NAMES]
    lines: list[str] = []

    # headline: primary metric, predictors × splits, with the model's margin over the best baseline
    has_primary = any(PRIMARY_METRIC in m for rows in by_split.values() for m in rows.values())
    if has_primary:
        report = "test" if any(m.get("n_windows", 1) for m in by_split.get("test", {}).values()) else "val"

        def iv(p: str, s: str) -> Mapping[str, Any] | None:
            return (intervals.get(p) or {}).get(s, {}).get(PRIMARY_METRIC)

        def dl(p: str, s: str) -> Mapping[str, Any] | None:
            return ((deltas.get(s) or {}).get(p) or {}).get(PRIMARY_METRIC)

        delta_splits = [s for s in splits if any(dl(p, s) for p in ordered)]
        headers = ["predictor"]
        for s in splits:
            headers.append(f"{s} {PRIMARY_METRIC}")
            if s in delta_splits:
                headers.append(f"{s} Δ model − baseline")
        rows = []
        for p in ordered:
            label = f"**{p}** (model)" if p == model_name else p
            row: list[Any] = [label]
            for s in splits:
                row.append(_with_interval(by_split[s].get(p, {}).get(PRIMARY_METRIC), iv(p, s)))
                if s in delta_splits:
                    d = dl(p, s) or {}
                    row.append(format_delta(_num(d.get("delta")), _num(d.get("low")), _num(d.get("high"))) if d else None)
            rows.append(row)
        lines += [_table(headers, rows), ""]
        if intervals or deltas:
            lines += [f"[low, high]: article-level bootstrap intervals. Reported split: {report}"
                      + ("" if report == "test" else " (no test split)") + "; val is used for selection.", ""]
        notes = []
        for s in sorted(splits, key=lambda x: x != report) if (intervals or deltas) else splits:
            model_v = by_split[s].get(model_name or "", {}).get(PRIMARY_METRIC)
            base = [
                (p, m.get(PRIMARY_METRIC))
                for p, m in by_split[s].items()
                if p != model_name and isinstance(m.get(PRIMARY_METRIC), (int, float))
                and not math.isnan(float(m[PRIMARY_METRIC]))
            ]
            if isinstance(model_v, (int, float)) and base:
                best_p, best_v = max(base, key=lambda t: float(t[1]))
                delta = float(model_v) - float(best_v)
                d = dl(best_p, s) or {}
                low, high = _num(d.get("low")), _num(d.get("high"))
                if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
                    role = " (reported)" if s == report else ""
                    verdict = ("beats" if low > 0 else "is worse than" if high < 0
                               else "is not distinguishable from")
                    notes.append(
                        f"- {s}{role}: the model ({_with_interval(float(model_v), iv(model_name or '', s))}) {verdict} "
                        f"the best baseline ({best_p}, {_with_interval(float(best_v), iv(best_p, s))}): "
                        f"{format_delta(_num(d.get('delta')), low, high)}"
                    )
                    continue
                verdict = "beats" if delta > 0 else "does not beat"
                notes.append(f"- {s}: the model {verdict} the best baseline ({best_p}, {_fmt(float(best_v))}) by {delta:+.4f}")
        if "val" in by_split and "ood" in by_split and model_name:
            v = by_split["val"].get(model_name, {}).get(PRIMARY_METRIC)
            o = by_split["ood"].get(model_name, {}).get(PRIMARY_METRIC)
            if isinstance(v, (int, float)) and isinstance(o, (int, float)):
                notes.append(f"- |ood − val| {PRIMARY_METRIC} of the model: {abs(float(o) - float(v)):.4f}")
        if notes:
            lines += [*notes, ""]

    # every other metric, one table per split
    for s in splits:
        names: list[str] = []
        for m in by_split[s].values():
            for k, v in m.items():
                if k != PRIMARY_METRIC and k not in names and not isinstance(v, (Mapping, list)):
                    names.append(k)
        if not names:
            continue
        rows = [[p, *[by_split[s].get(p, {}).get(k) for k in names]] for p in ordered if p in by_split[s]]
        lines += [f"**{s}** — all metrics", "", _table(["predictor", *names], rows), ""]
    return lines


# --- gates -----------------------------------------------------------------------------------------


def _gate_rows(gates: Any) -> list[tuple[str, Any, Any, Any]]:
    if hasattr(gates, "results") and not isinstance(gates, Mapping):
        return [(r.name, r.passed, r.value, r.threshold) for r in gates.results]
    gates = _plain(gates)
    rows: list[tuple[str, Any, Any, Any]] = []

    def walk(prefix: str, entry: Any) -> None:
        if isinstance(entry, bool):
            rows.append((prefix, entry, None, None))
        elif isinstance(entry, Mapping) and "passed" in entry:
            rows.append((prefix or str(entry.get("name", "?")), entry["passed"], entry.get("value"), entry.get("threshold")))
        elif isinstance(entry, Mapping):
            for k, v in entry.items():
                if k in ("stage", "docs_path"):
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(entry, list):
            for item in entry:
                if isinstance(item, Mapping):
                    walk(f"{prefix}.{item.get('name')}" if prefix else str(item.get("name")), item)

    if isinstance(gates, Mapping) and isinstance(gates.get("results"), list):
        walk("", gates["results"])
    else:
        walk("", gates)
    return rows


def _gate_value(value: Any) -> Any:
    """A delta gate's value ({baseline, split, delta, low, high}) as `Δ +x [lo, hi] vs baseline (split)`."""
    if isinstance(value, Mapping) and {"delta", "low", "high"} <= set(value):
        text = format_delta(_num(value["delta"]), _num(value["low"]), _num(value["high"]))
        return f"{text} vs {value.get('baseline', '?')} ({value.get('split', '?')})"
    return value


# --- card ------------------------------------------------------------------------------------------


def render_model_card(info: Mapping[str, Any]) -> str:
    """Markdown model card from whatever of the documented keys are present."""
    info = dict(info)
    name = info.get("name") or "LVM"
    version = info.get("version")
    title = f"# Model card: {name}" + (f" v{version}" if version is not None else "")
    out: list[str] = [title, ""]
    summary = []
    for key, label in (("run_id", "MLflow run"), ("created_at", "created"), ("uri", "model URI")):
        if info.get(key):
            summary.append(f"- {label}: `{info[key]}`")
    if summary:
        out += [*summary, ""]

    model = _plain(info.get("model") or {})
    if model:
        out += ["## Model", ""]
        for key, label in (("arch", "architecture"), ("params", "trainable parameters")):
            if key in model:
                out.append(f"- {label}: {_fmt(model[key])}")
        if any(k in model for k in ("arch", "params")):
            out.append("")
        config = model.get("config")
        if isinstance(config, Mapping) and config:
            out += ["Configuration:", "", _kv_table(config), ""]
        rest = {k: v for k, v in model.items() if k not in ("arch", "params", "config")}
        if rest:
            out += [_kv_table(rest), ""]

    data = _plain(info.get("data") or {})
    if data:
        out += ["## Data", ""]
        for key, label in (
            ("snapshot_id", "snapshot"),
            ("dataset_id", "dataset id"),
            ("dataset_dir", "dataset folder"),
            ("manifest_digest", "manifest sha256"),
            ("split_hash", "split hash"),
        ):
            if data.get(key) is not None:
                out.append(f"- {label}: `{data[key]}`")
        out.append("")
        counts = data.get("counts")
        if isinstance(counts, Mapping) and counts:
            out += ["Counts:", "", _kv_table(counts), ""]
        splits = data.get("splits")
        if isinstance(splits, Mapping) and splits:
            out += ["Splits:", "", _kv_table(splits), ""]
        rest = {
            k: v for k, v in data.items()
            if k not in ("snapshot_id", "dataset_id", "dataset_dir", "manifest_digest", "split_hash", "counts", "splits")
        }
        if rest:
            out += [_kv_table(rest), ""]

    encoder = _plain(info.get("encoder") or {})
    if encoder:
        out += ["## Encoder", ""]
        out += [f"- {k}: `{v}`" for k, v in encoder.items()]
        out += ["", "Inputs must come from exactly this encoder (same fingerprint id).", ""]

    training = _plain(info.get("training") or {})
    if training:
        out += ["## Training", ""]
        for key, label in (
            ("epochs_run", "epochs run"),
            ("early_stopped", "stopped early"),
            ("best_epoch", "best epoch"),
        ):
            if key in training:
                out.append(f"- {label}: {_fmt(training[key])}")
        if training.get("best_epoch") == 0:
            out.append(
                "- **no training epoch beat the untrained model** on val: the shipped weights are the untrained "
                "(epoch 0) weights"
            )
        rest = {k: v for k, v in training.items() if k not in ("epochs_run", "early_stopped", "best_epoch")}
        if rest:
            out += ["", _kv_table(rest)]
        out.append("")

    metrics = info.get("metrics")
    intervals, deltas = info.get("intervals"), info.get("deltas")
    if isinstance(metrics, Mapping) and "metrics" in metrics and "predictors" in metrics:
        model_name = info.get("model_name") or (metrics.get("predictors") or [None])[0]
        intervals = intervals or metrics.get("intervals")
        deltas = deltas or metrics.get("deltas")
        metrics = metrics["metrics"]
    else:
        model_name = info.get("model_name")
    if metrics:
        out += ["## Metrics beside baselines", ""]
        out += _metrics_section(_plain(metrics), model_name, _plain(intervals or {}), _plain(deltas or {}))

    gates = info.get("gates")
    if gates:
        rows = _gate_rows(gates)
        if rows:
            failed = [r[0] for r in rows if not r[1]]
            verdict = "all gates passed" if not failed else f"FAILED: {', '.join(failed)}"
            out += ["## Gates", "", f"Result: **{verdict}**", ""]
            rows = [(n, ok, _gate_value(v), t) for n, ok, v, t in rows]
            out += [_table(["gate", "passed", "value", "threshold"], rows), ""]

    out += ["## Intended use", "", str(info.get("intended_use") or DEFAULT_INTENDED_USE), ""]
    limitations = list(DEFAULT_LIMITATIONS) + [str(x) for x in (info.get("limitations") or [])]
    out += ["## Limitations", "", *[f"- {item}" for item in limitations], ""]

    known = {"name", "version", "run_id", "created_at", "uri", "model", "data", "encoder", "training",
             "metrics", "model_name", "gates", "intended_use", "limitations", "intervals", "deltas"}
    extra = {k: v for k, v in info.items() if k not in known and v is not None}
    if extra:
        out += ["## Other", "", _kv_table(_plain(extra)), ""]
    return "\n".join(out).rstrip() + "\n"
