"""Prefect tasks of drift monitoring: sample reference and current contexts by group, run both tests."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lvm_core.drift import samples
from lvm_core.drift.features import Features
from lvm_core.drift.report import DriftReport, drift_report
from tasks.common import COMPUTE_RETRIES, IO_RETRIES


@task(name="reference-contexts", task_run_name="reference-contexts-{dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def reference_sample(root: str, dataset_id: str, max_groups: int, max_per_group: int, seed: int) -> samples.GroupedSample:
    """The model's held-out (val) windows, grouped by article."""
    return samples.load_reference_sample(root, ("val",), max_groups, max_per_group, seed)


@task(name="current-contexts", cache_policy=NO_CACHE, **IO_RETRIES)
def current_sample(current: str, max_groups: int, max_per_group: int, seed: int) -> samples.GroupedSample:
    """Every replica's received contexts grouped by session, or a dataset folder's test/ood windows by article."""
    return samples.load_current_sample(current, max_groups, max_per_group, seed)


@task(name="drift-tests", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def drift_tests(reference: samples.GroupedSample, current: samples.GroupedSample, threshold_auc: float, alpha: float,
                min_groups: int, seed: int, n_permutations: int, features: Features) -> DriftReport:
    """Grouped domain-classifier AUC and group-permutation MMD, or "insufficient data" below min_groups."""
    if reference.contexts.shape[2] != current.contexts.shape[2]:
        raise ValueError(f"current contexts have dimension {current.contexts.shape[2]}, the reference "
                         f"{reference.contexts.shape[2]}: another encoder?")
    report = drift_report(reference.contexts, current.contexts, reference.groups, current.groups,
                                threshold_auc=threshold_auc, alpha=alpha, min_groups=min_groups, seed=seed,
                                n_permutations=n_permutations, features=features)
    report.notes = [*reference.notes, *current.notes, *report.notes]
    return report
