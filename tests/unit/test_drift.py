"""Drift of served contexts: the grouped tests on synthetic samples with the structure of real traffic
(overlapping windows of one article / session), the minimum sample, and the grouping of served contexts.

The rates on real articles (and their binomial argument) are in tests/integration/test_drift_real_data.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lvm_core.drift.classifier import domain_classifier_test
from lvm_core.drift.features import context_features, group_served, link_shared_chunks, sample_groups
from lvm_core.drift.mmd import mmd_permutation_test
from lvm_core.drift.report import drift_report
from lvm_core.drift.samples import load_current_sample
from lvm_core.io.vectors import l2_normalize

D, CTX = 16, 4
SYNTHETIC_DRAWS = 10


def articles(rng: np.random.Generator, n_articles: int, windows: int, center: np.ndarray,
             spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Contexts (n, CTX, D) and article ids: each article a topic around `center` and a run of chunk vectors
    around it, read as overlapping windows (consecutive windows share CTX - 1 vectors), like real traffic."""
    ctxs, ids = [], []
    for a in range(n_articles):
        topic = center + spread * rng.standard_normal(D)
        chunks = l2_normalize(topic + 0.6 * rng.standard_normal((windows + CTX - 1, D)), dtype=None)
        ctxs += [chunks[t : t + CTX] for t in range(windows)]
        ids += [a] * windows
    return np.asarray(ctxs, dtype=np.float32), np.asarray(ids)


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


def test_new_articles_alarm_the_row_level_tests_but_not_the_grouped_ones() -> None:
    """Same distribution of articles on both sides, different articles: no drift. Row-level CV and row
    permutations (the old method) call it drift every time; the grouped tests do not. (The rate claims are
    made on real articles in tests/integration/test_drift_real_data.py; here the point is the contrast.)"""
    center = np.zeros(D)
    old_alarms = new_alarms = 0
    for seed in range(SYNTHETIC_DRAWS):
        rng = np.random.default_rng(seed)
        (ref, ref_ids), (cur, cur_ids) = articles(rng, 12, 10, center), articles(rng, 12, 10, center)
        new = drift_report(ref, cur, ref_ids, cur_ids, seed=seed, n_permutations=500)
        new_alarms += new.drifted
        if seed < 3:  # the old method is slower (row permutations): three draws make the point
            old = drift_report(ref, cur, seed=seed, n_permutations=100, max_groups=None, max_per_group=None)
            old_alarms += old.drifted
    print(f"row-level alarms {old_alarms}/3, grouped alarms {new_alarms}/{SYNTHETIC_DRAWS}")
    assert old_alarms == 3
    assert new_alarms == 0


def test_a_shift_of_topics_is_drift_in_every_draw() -> None:
    misses = 0
    for seed in range(SYNTHETIC_DRAWS):
        rng = np.random.default_rng(1000 + seed)
        c1, c2 = rng.standard_normal(D), rng.standard_normal(D)
        (ref, ref_ids), (cur, cur_ids) = articles(rng, 12, 10, c1), articles(rng, 12, 10, c2)
        report = drift_report(ref, cur, ref_ids, cur_ids, seed=seed, n_permutations=500)
        misses += not report.drifted
    assert misses == 0


def test_below_the_minimum_of_groups_there_is_no_verdict() -> None:
    rng = np.random.default_rng(5)
    ref, ref_ids = articles(rng, 20, 10, np.zeros(D))
    noise, _ = articles(rng, 4, 100, np.ones(D) * 3)  # 400 wildly different contexts, but from 4 sessions
    report = drift_report(ref, noise, ref_ids, np.repeat(np.arange(4), 100))
    assert report.verdict == "insufficient data" and not report.drifted and report.auc is None
    assert report.n_current == 400 and report.n_current_groups == 4
    assert "fewer than 10" in report.reasons[0] and "insufficient data" in report.summary()
    assert "insufficient data" in report.markdown()
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    fine = drift_report(ref, noise, ref_ids, np.repeat(np.arange(4), 100), min_groups=5)
    assert fine.verdict == "insufficient data"  # still 4 < 5
    ungrouped = drift_report(ref, noise, ref_ids, None)  # as if every context were independent: a verdict
    assert ungrouped.verdict == "drift"
    with pytest.raises(ValueError, match="min_groups"):
        drift_report(ref, noise, ref_ids, None, min_groups=3)


def test_tests_separately_and_their_limits() -> None:
    rng = np.random.default_rng(3)
    ref, ref_ids = articles(rng, 12, 8, np.zeros(D))
    shifted, shifted_ids = articles(rng, 12, 8, rng.standard_normal(D) * 2)
    r, s = context_features(ref), context_features(shifted)
    res = mmd_permutation_test(r, s, ref_ids, shifted_ids, n_permutations=200)
    assert (res.n_reference, res.n_current) == (12, 12)  # counted in groups
    assert res.p_value == pytest.approx(1 / 201) and res.mmd2 > 0 and res.bandwidth > 0
    assert domain_classifier_test(r, s, ref_ids, shifted_ids).auc > 0.9
    with pytest.raises(ValueError, match="5-fold"):
        domain_classifier_test(r[:24], s, ref_ids[:24], shifted_ids)  # 3 reference articles
    with pytest.raises(ValueError, match="features"):
        domain_classifier_test(r, s[:, :D])
    # a difference in spread only (same centre, topics ten times wider): the group-level MMD sees it
    center = l2_normalize(rng.standard_normal(D), dtype=None)
    narrow, narrow_ids = articles(rng, 30, 4, center, spread=0.1)
    wide, wide_ids = articles(rng, 30, 4, center, spread=1.0)
    assert mmd_permutation_test(context_features(narrow), context_features(wide), narrow_ids, wide_ids).p_value < 0.01


def test_sample_groups_caps_groups_and_windows_per_group() -> None:
    groups = np.repeat(np.arange(30), np.arange(1, 31))  # group g has g + 1 rows
    idx = sample_groups(groups, 10, 3, np.random.default_rng(0))
    kept, counts = np.unique(groups[idx], return_counts=True)
    assert len(kept) == 10 and counts.max() <= 3 and np.all(np.diff(idx) > 0)
    assert np.array_equal(counts, np.minimum(kept + 1, 3))
    assert len(sample_groups(groups, None, None, np.random.default_rng(0))) == len(groups)


def test_served_contexts_group_by_client_and_by_shared_chunks() -> None:
    """Keyed requests group by key; requests without a key by the chunks their windows share (re-encoding
    noise does not break the link); a context sharing nothing is its own group."""
    from lvm_core.io.context_window_file import client_group

    rng = np.random.default_rng(0)
    a, _ = articles(rng, 1, 6, np.zeros(D))  # one reader, six overlapping windows, no key
    b, _ = articles(rng, 1, 6, np.zeros(D))  # another
    a = a + rng.normal(0, 1e-6, a.shape).astype(np.float32)  # the same chunk encoded in another batch
    lone = l2_normalize(rng.standard_normal((2, CTX, D)), dtype=None).astype(np.float32)
    keyed, _ = articles(rng, 2, 3, np.zeros(D))
    contexts = np.concatenate([a, b, lone, keyed])
    clients = np.array([0] * 14 + [client_group("k1")] * 3 + [client_group("k2")] * 3, dtype=np.uint64)
    groups = group_served(contexts, clients)
    assert len(set(groups[:6])) == 1 and len(set(groups[6:12])) == 1 and groups[0] != groups[6]
    assert len(set(groups[12:14])) == 2 and len(set(groups[14:17])) == 1 and groups[14] != groups[17]
    assert len(np.unique(groups)) == 6
    assert len(np.unique(link_shared_chunks(contexts))) == 6  # the keyed pairs are articles too
    assert len(np.unique(group_served(contexts, None))) == 6


def test_load_current_sample_reads_every_replica_and_old_files(tmp_path: Path) -> None:
    import os

    from lvm_core.serving.window import ContextWindow

    rng = np.random.default_rng(1)
    folder = tmp_path / "served"
    for replica in ("a", "b"):
        os.environ["LVM_REPLICA"] = replica
        try:
            w = ContextWindow(folder, capacity=100)
        finally:
            del os.environ["LVM_REPLICA"]
        for session in range(3):
            ctx, _ = articles(rng, 1, 4, np.zeros(D))
            w.add(ctx, client=f"session-{session}")  # a client's requests reach both replicas
        w.flush()
    old, _ = articles(rng, 2, 5, np.zeros(D))
    np.save(folder / "contexts.npy", old)  # a window written before groups were recorded
    sample = load_current_sample(folder, max_per_group=None)
    assert sample.contexts.shape == (34, CTX, D)
    assert sample.n_groups == 3 + 2  # three sessions across both replicas, two readers in the old file
    assert any("before groups were recorded" in n for n in sample.notes)
    assert load_current_sample(str(folder / "contexts-*.npy")).n_groups == 3
    stale = folder / "contexts-gone.npy"
    np.save(stale, l2_normalize(rng.standard_normal((5, CTX, D)), dtype=None).astype(np.float32))
    os.utime(stale, (1, 1))
    sample = load_current_sample(folder, max_per_group=None)
    assert sample.n_groups == 5 and any("contexts-gone.npy left out" in n for n in sample.notes)
    capped = load_current_sample(folder, max_groups=2, max_per_group=3)
    assert capped.n_groups == 2 and len(capped.contexts) <= 6
    with pytest.raises(FileNotFoundError, match="no such"):
        load_current_sample(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", old[:, 0, :])
    with pytest.raises(ValueError, match=r"\(n, ctx, D\)"):
        load_current_sample(tmp_path / "flat.npy")


def test_missing_files_are_not_retried() -> None:
    """A path that is not there is not retried (three retries with backoff made `lvm monitor-drift` take
    ~15 s to say so); a failure that may pass is."""
    from prefect.states import Failed

    from tasks.common import is_transient

    with pytest.raises(FileNotFoundError) as missing:
        load_current_sample("/nonexistent/contexts.npy")
    assert not is_transient(None, None, Failed(data=missing.value))
    assert is_transient(None, None, Failed(data=ConnectionResetError("the service went away")))
