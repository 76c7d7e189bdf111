"""Drift of served contexts: the two tests (domain classifier, MMD) on synthetic samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_core.drift import (
    context_features,
    domain_classifier_auc,
    drift_report,
    load_current_contexts,
    mmd_permutation_test,
)
from lvm_core.io.vectors import l2_normalize

D, CTX = 32, 4


def _contexts(rng: np.random.Generator, n: int, center: np.ndarray, spread: float = 0.5) -> np.ndarray:
    """Contexts (n, CTX, D) of unit vectors: each context scattered around its own topic near `center`."""
    topic = l2_normalize(center + spread * rng.standard_normal((n, 1, D)), dtype=None)
    return l2_normalize(topic + 0.3 * rng.standard_normal((n, CTX, D)), dtype=None).astype(np.float32)


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    c1, c2 = l2_normalize(rng.standard_normal(D), dtype=None), l2_normalize(rng.standard_normal(D), dtype=None)
    return {"reference": _contexts(rng, 500, c1), "same": _contexts(rng, 300, c1), "shifted": _contexts(rng, 300, c2)}


def test_context_features_mean_and_last() -> None:
    rng = np.random.default_rng(0)
    c = l2_normalize(rng.standard_normal((5, CTX, D)), dtype=None)
    rows = context_features(c)
    assert rows.shape == (5, 2 * D)
    np.testing.assert_allclose(np.linalg.norm(rows[:, :D], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(rows[:, D:], c[:, -1, :], rtol=1e-6)
    assert context_features(c, "mean").shape == context_features(c, "last").shape == (5, D)
    with pytest.raises(ValueError, match=r"\(n, ctx, D\)"):
        context_features(c[0])
    bad = c.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        context_features(bad)


def test_same_distribution_is_not_drift(samples) -> None:
    report = drift_report(samples["reference"], samples["same"])
    print("same:", report.summary())
    assert 0.35 < report.auc < 0.65
    assert report.mmd_p_value > 0.05
    assert not report.drifted and report.reasons == []
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


def test_shifted_distribution_is_drift(samples) -> None:
    report = drift_report(samples["reference"], samples["shifted"])
    print("shifted:", report.summary())
    assert report.auc > 0.75
    assert report.mmd_p_value < 0.01
    assert report.drifted and len(report.reasons) == 2
    assert report.n_reference == 500 and report.n_current == 300


def test_tests_separately_and_their_limits(samples) -> None:
    ref = context_features(samples["reference"])
    shifted = context_features(samples["shifted"])
    assert domain_classifier_auc(ref, ref[::-1].copy(), seed=1) < 0.65  # identical rows: nothing to learn
    res = mmd_permutation_test(ref, shifted, n_permutations=50, max_rows=100)
    assert (res.n_reference, res.n_current) == (100, 100)  # subsampled to max_rows per side
    assert res.p_value == pytest.approx(1 / 51)  # smallest possible p-value
    assert res.bandwidth > 0 and res.mmd2 > 0
    # a difference in spread only: same mean direction, much wider scatter; MMD sees it
    rng = np.random.default_rng(3)
    center = l2_normalize(rng.standard_normal(D), dtype=None)
    narrow = context_features(_contexts(rng, 300, center, spread=0.2))
    wide = context_features(_contexts(rng, 300, center, spread=2.0))
    assert mmd_permutation_test(narrow, wide).p_value < 0.01
    with pytest.raises(ValueError, match="features"):
        domain_classifier_auc(ref, shifted[:, :D])


def test_load_current_contexts_from_npy(tmp_path) -> None:
    rng = np.random.default_rng(0)
    c = l2_normalize(rng.standard_normal((50, CTX, D)), dtype=None).astype(np.float32)
    np.save(tmp_path / "window.npy", c)
    got = load_current_contexts(tmp_path / "window.npy", max_windows=20)
    assert got.shape == (20, CTX, D) and got.dtype == np.float32
    np.save(tmp_path / "flat.npy", c[:, 0, :])
    with pytest.raises(ValueError, match=r"\(n, ctx, D\)"):
        load_current_contexts(tmp_path / "flat.npy")
    with pytest.raises(FileNotFoundError) as missing:
        load_current_contexts(tmp_path / "missing.npy")

    # A path that is not there is not retried (three retries with backoff made `lvm monitor-drift` take ~15 s
    # to say so); a failure that may pass is.
    from prefect.states import Failed

    from tasks.common import is_transient

    assert not is_transient(None, None, Failed(data=missing.value))
    assert is_transient(None, None, Failed(data=ConnectionResetError("the service went away")))
