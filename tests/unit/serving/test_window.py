"""The served-contexts window the drift monitor reads: the newest contexts of one shape, flushed only when changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.vectors import random_unit

pytestmark = pytest.mark.slow


def test_context_window_keeps_the_newest_of_one_shape(tmp_path: Path):
    from lvm_core.serving.window import ContextWindow

    w = ContextWindow(tmp_path / "w.npy", capacity=5, flush_s=60)
    a = random_unit(1, 7, 2, 4)
    w.add(a[:3])
    w.add(a[3:])
    assert np.array_equal(w.snapshot(), a[-5:])
    assert w.flush() and not w.flush()  # unchanged since: not rewritten
    assert np.array_equal(np.load(tmp_path / "w.npy"), a[-5:])
    b = random_unit(2, 2, 3, 4)  # another model's shape starts a new window
    w.add(b)
    assert np.array_equal(w.snapshot(), b)
