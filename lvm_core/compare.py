"""Architecture comparison: the evidence behind "why AMN" — every architecture and trivial baseline on
the same windows, with size, accuracy, training time and inference latency side by side."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from lvm_core.baselines import mean_cosine
from lvm_core.sequences import SequenceSet, gather

Predict = Callable[[np.ndarray], np.ndarray]


class Predictor(Protocol):
    def predict(self, ctx: np.ndarray) -> np.ndarray: ...

COLUMNS = ("predictor", "kind", "params", "val_cosine", "ood_cosine", "ood_val_gap", "train_seconds", "latency_ms_per_batch")


def latency_ms(predict: Predict, vectors: np.ndarray, seqs: SequenceSet, batch_size: int = 64, repeats: int = 20) -> float:
    """Median wall time of one prediction batch, in milliseconds (after one warm-up call)."""
    n = min(batch_size, len(seqs))
    ctx, _ = gather(vectors, seqs, np.arange(n))
    predict(ctx)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(ctx)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def comparison_row(
    name: str, kind: str, predictor: Predictor, vectors: np.ndarray, seqs: dict[str, SequenceSet],
    params: int = 0, train_seconds: float = 0.0,
) -> dict[str, Any]:
    val = mean_cosine(predictor, vectors, seqs["val"])
    ood = mean_cosine(predictor, vectors, seqs["ood"]) if len(seqs.get("ood", [])) else float("nan")
    return {
        "predictor": name, "kind": kind, "params": int(params), "val_cosine": val, "ood_cosine": ood,
        "ood_val_gap": abs(ood - val), "train_seconds": float(train_seconds),
        "latency_ms_per_batch": latency_ms(predictor.predict, vectors, seqs["val"]),
    }


def comparison_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """A Markdown table sorted by val cosine, best first."""
    ordered = sorted(rows, key=lambda r: -r["val_cosine"])
    lines = [f"## {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in ordered:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            if c == "latency_ms_per_batch":
                cells.append(f"{v:.2f}")
            elif c == "train_seconds":
                cells.append(f"{v:.0f}")
            elif isinstance(v, float):
                cells.append(f"{v:.4f}")
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
