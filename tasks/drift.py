"""Prefect tasks of drift monitoring: sample reference and current contexts, run both tests."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from lvm_core import drift
from tasks.common import COMPUTE_RETRIES, IO_RETRIES


@task(name="reference-contexts", task_run_name="reference-contexts-{dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def reference_rows(root: str, dataset_id: str, features: drift.Features, max_windows: int, seed: int) -> np.ndarray:
    """Feature rows (≤ max_windows, F) of a seeded sample of the dataset's training windows."""
    return drift.context_features(drift.load_reference_contexts(root, ("train",), max_windows, seed), features)


@task(name="current-contexts", cache_policy=NO_CACHE, **IO_RETRIES)
def current_rows(current: str, features: drift.Features, max_windows: int, seed: int) -> np.ndarray:
    """Feature rows of the contexts the service received (.npy) or of a dataset folder's test/ood windows."""
    return drift.context_features(drift.load_current_contexts(current, max_windows, seed), features)


@task(name="drift-tests", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def drift_tests(reference: np.ndarray, current: np.ndarray, threshold_auc: float, alpha: float, seed: int,
                n_permutations: int, max_rows: int, features: str) -> drift.DriftReport:
    """Domain-classifier AUC and MMD permutation test on the two row samples."""
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"current contexts have {current.shape[1]} features per row, the reference "
                         f"{reference.shape[1]}: another embedding dimension (another encoder?)")
    report = drift.drift_report(reference, current, threshold_auc=threshold_auc, alpha=alpha, seed=seed,
                                n_permutations=n_permutations, max_rows=max_rows)
    report.features = features
    return report
