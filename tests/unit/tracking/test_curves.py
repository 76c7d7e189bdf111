"""Training curves refuse a history with nothing to plot."""

from __future__ import annotations

import pytest

from lvm_core.tracking.curves import plot_training_curves


def test_plot_training_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no plottable keys"):
        plot_training_curves([{"epoch": 0, "foo": 1}], tmp_path / "x.png")
