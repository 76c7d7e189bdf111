"""The model card's sections in reading order, and `render_model_card` over them.

Each section renders whatever of its keys are present (see the package docstring), so the training
and evaluation flows can add facts without changing this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lvm_core.evaluation.gates import gate_value_text
from lvm_core.evaluation.model_card.beside_baselines import metrics_section
from lvm_core.evaluation.model_card.markdown import cell, kv_table, table
from lvm_core.io.plain import to_plain

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITATIONS", "render_model_card"]

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


def _gate_rows(gates: Any) -> list[tuple[str, Any, Any, Any]]:
    """(name, passed, value, threshold) rows from a GateReport, its manifest dict or name -> bool."""
    if hasattr(gates, "results") and not isinstance(gates, Mapping):
        return [(r.name, r.passed, r.value, r.threshold) for r in gates.results]
    gates = to_plain(gates)
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


_DATA_FACTS = (
    ("snapshot_id", "snapshot"),
    ("dataset_id", "dataset id"),
    ("dataset_dir", "dataset folder"),
    ("manifest_digest", "manifest sha256"),
    ("split_hash", "split hash"),
)
_KNOWN_KEYS = {"name", "version", "run_id", "created_at", "uri", "model", "data", "encoder", "training",
               "metrics", "model_name", "gates", "intended_use", "limitations", "intervals", "deltas", "ood_kind",
               "protocol", "crossval"}


def render_model_card(info: Mapping[str, Any]) -> str:
    """Markdown model card from whatever of the documented keys are present."""
    info = dict(info)
    out: list[str] = []
    for section in SECTIONS:
        out += section(info)
    return "\n".join(out).rstrip() + "\n"


def _title(info: dict[str, Any]) -> list[str]:
    name = info.get("name") or "LVM"
    version = info.get("version")
    out = [f"# Model card: {name}" + (f" v{version}" if version is not None else ""), ""]
    summary = []
    for key, label in (("run_id", "MLflow run"), ("created_at", "created"), ("uri", "model URI")):
        if info.get(key):
            summary.append(f"- {label}: `{info[key]}`")
    return out + ([*summary, ""] if summary else [])


def _model(info: dict[str, Any]) -> list[str]:
    model = to_plain(info.get("model") or {})
    if not model:
        return []
    out = ["## Model", ""]
    for key, label in (("arch", "architecture"), ("params", "trainable parameters")):
        if key in model:
            out.append(f"- {label}: {cell(model[key])}")
    if any(k in model for k in ("arch", "params")):
        out.append("")
    config = model.get("config")
    if isinstance(config, Mapping) and config:
        out += ["Configuration:", "", kv_table(config), ""]
    rest = {k: v for k, v in model.items() if k not in ("arch", "params", "config")}
    return out + ([kv_table(rest), ""] if rest else [])


def _data(info: dict[str, Any]) -> list[str]:
    data = to_plain(info.get("data") or {})
    if not data:
        return []
    out = ["## Data", ""]
    out += [f"- {label}: `{data[key]}`" for key, label in _DATA_FACTS if data.get(key) is not None]
    out.append("")
    for key, label in (("counts", "Counts:"), ("splits", "Splits:")):
        value = data.get(key)
        if isinstance(value, Mapping) and value:
            out += [label, "", kv_table(value), ""]
    shown = {key for key, _ in _DATA_FACTS} | {"counts", "splits"}
    rest = {k: v for k, v in data.items() if k not in shown}
    return out + ([kv_table(rest), ""] if rest else [])


def _encoder(info: dict[str, Any]) -> list[str]:
    encoder = to_plain(info.get("encoder") or {})
    if not encoder:
        return []
    out = ["## Encoder", ""]
    out += [f"- {k}: `{v}`" for k, v in encoder.items()]
    return out + ["", "Inputs must come from exactly this encoder (same fingerprint id).", ""]


def _training(info: dict[str, Any]) -> list[str]:
    training = to_plain(info.get("training") or {})
    if not training:
        return []
    out = ["## Training", ""]
    for key, label in (("epochs_run", "epochs run"), ("early_stopped", "stopped early"), ("best_epoch", "best epoch")):
        if key in training:
            out.append(f"- {label}: {cell(training[key])}")
    if training.get("best_epoch") == 0:
        out.append(
            "- **no training epoch beat the untrained model** on val: the shipped weights are the untrained "
            "(epoch 0) weights"
        )
    rest = {k: v for k, v in training.items() if k not in ("epochs_run", "early_stopped", "best_epoch")}
    if rest:
        out += ["", kv_table(rest)]
    return out + [""]


def _metrics(info: dict[str, Any]) -> list[str]:
    metrics = info.get("metrics")
    intervals, deltas = info.get("intervals"), info.get("deltas")
    ood_kind = info.get("ood_kind")
    if isinstance(metrics, Mapping) and "metrics" in metrics and "predictors" in metrics:
        model_name = info.get("model_name") or (metrics.get("predictors") or [None])[0]
        ood_kind = ood_kind or (metrics.get("config") or {}).get("ood_kind")
        intervals = intervals or metrics.get("intervals")
        deltas = deltas or metrics.get("deltas")
        metrics = metrics["metrics"]
    else:
        model_name = info.get("model_name")
    if not metrics:
        return []
    section = metrics_section(to_plain(metrics), model_name, to_plain(intervals or {}), to_plain(deltas or {}),
                              None if ood_kind is None else str(ood_kind))
    return ["## Metrics beside baselines", "", *section]


def _gates(info: dict[str, Any]) -> list[str]:
    gates = info.get("gates")
    rows = _gate_rows(gates) if gates else []
    if not rows:
        return []
    failed = [r[0] for r in rows if not r[1]]
    verdict = "all gates passed" if not failed else f"FAILED: {', '.join(failed)}"
    rows = [(n, ok, gate_value_text(v), t) for n, ok, v, t in rows]
    return ["## Gates", "", f"Result: **{verdict}**", "", table(["gate", "passed", "value", "threshold"], rows), ""]


def _protocol(info: dict[str, Any]) -> list[str]:
    """The promotion protocol: the one pre-declared primary comparison and how often the test split was evaluated.

    `protocol` keys (all optional): `primary_comparison` (text), `test_evaluations` (this one included),
    `warn_test_evaluations`, `max_test_evaluations`, `split_hash`, `post_hoc` (text).
    """
    protocol = to_plain(info.get("protocol") or {})
    if not protocol:
        return []
    out = ["## Evaluation protocol", ""]
    if protocol.get("primary_comparison"):
        out.append(f"- primary comparison (pre-declared; the only one that decides promotion): "
                   f"{protocol['primary_comparison']}")
    n = protocol.get("test_evaluations")
    if n is not None:
        warn, limit = protocol.get("warn_test_evaluations"), protocol.get("max_test_evaluations")
        where = f" (split hash `{str(protocol['split_hash'])[:12]}`)" if protocol.get("split_hash") else ""
        line = f"- evaluations of this test split{where}, this one included: **{n}**"
        if limit is not None and int(n) > int(limit):
            line += f" — above the limit of {limit}: the test_evaluations gate fails"
        elif warn is not None and int(n) > int(warn):
            line += f" — WARNING: above {warn} (the gate fails above {limit}); every look spends the test split"
        out.append(line)
    if protocol.get("post_hoc"):
        out.append(f"- post hoc: {protocol['post_hoc']}")
    return out + [""]


def _crossval(info: dict[str, Any]) -> list[str]:
    """The architectures' grouped cross-validation on this dataset (`lvm_core.evaluation.compare.crossval_facts`):
    the evidence that chose the architecture, pooled over every article rather than one test split."""
    cv = to_plain(info.get("crossval") or {})
    if not cv:
        return []
    out = ["## Cross-validated comparison of the architectures", "", str(cv["text"]), "",
           table(cv["headers"], cv["rows"]), ""]
    if cv.get("curve_rows"):
        out += [f"Learning curve ({cv.get('curve_arch')}): gain over the best baseline with fewer training articles.",
                "", table(cv["curve_headers"], cv["curve_rows"]), ""]
    return out + [f"Full table and learning-curve plot: `{cv['source']}`", ""]


def _use_and_limitations(info: dict[str, Any]) -> list[str]:
    out = ["## Intended use", "", str(info.get("intended_use") or DEFAULT_INTENDED_USE), ""]
    limitations = list(DEFAULT_LIMITATIONS) + [str(x) for x in (info.get("limitations") or [])]
    return out + ["## Limitations", "", *[f"- {item}" for item in limitations], ""]


def _other(info: dict[str, Any]) -> list[str]:
    extra = {k: v for k, v in info.items() if k not in _KNOWN_KEYS and v is not None}
    return ["## Other", "", kv_table(to_plain(extra)), ""] if extra else []


#: The card's sections in reading order; each returns its Markdown lines (none when its key is absent).
SECTIONS: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    _title, _model, _data, _encoder, _training, _metrics, _protocol, _crossval, _gates, _use_and_limitations, _other,
)
