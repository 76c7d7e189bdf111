"""Training curves as one PNG: loss, validation cosine (with the baselines as lines) and learning rate per epoch.

The figure is logged with every training run (`plots/training_curves.png`) and is the only matplotlib code
of the tracking layer, so drawing stays apart from talking to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lvm_core.io import storage


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: Path, title: str | None = None) -> Path:
    """Train/val loss, val cosine and learning rate per epoch as one PNG (matplotlib Agg).

    `history` holds one dict per epoch with any of `epoch`, `train_loss`, `val_loss`, `val_cosine`, `lr`;
    panels without data are left out. `baseline_*` keys (e.g. `baseline_val_cosine`) of the last entry
    are drawn as horizontal lines on the cosine panel.
    """
    if not history:
        raise ValueError("plot_training_curves: history is empty")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h.get("epoch", i) for i, h in enumerate(history)]

    def series(key: str) -> list[float] | None:
        values = [h.get(key) for h in history]
        if all(v is None for v in values):
            return None
        return [float("nan") if v is None else float(v) for v in values]

    panels: list[tuple[str, list[tuple[str, list[float]]], bool]] = []
    losses = [(k, s) for k in ("train_loss", "val_loss") if (s := series(k)) is not None]
    if losses:
        panels.append(("loss", losses, False))
    cos = [(k, s) for k in ("val_cosine", "train_cosine", "ood_cosine") if (s := series(k)) is not None]
    if cos:
        panels.append(("cosine", cos, False))
    lr = series("lr")
    if lr is not None:
        panels.append(("learning rate", [("lr", lr)], True))
    if not panels:
        raise ValueError(
            f"plot_training_curves: no plottable keys in history (keys: {sorted(history[0])}); "
            "expected train_loss, val_loss, val_cosine or lr"
        )
    fig = Figure(figsize=(4.2 * len(panels), 3.4), constrained_layout=True)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, lines, log_scale) in zip(axes, panels):
        for key, values in lines:
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        if label == "cosine":
            for key, value in history[-1].items():
                if key.startswith("baseline_") and isinstance(value, (int, float)):
                    ax.axhline(float(value), linestyle="--", linewidth=1, color="grey")
                    ax.annotate(key[len("baseline_"):], (epochs[0], float(value)), fontsize=7, color="grey")
        if log_scale and all(v > 0 for v in lines[0][1] if not math.isnan(v)):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110)
    return path
