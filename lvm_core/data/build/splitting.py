"""The split step of a build: the family's split registry carried from the previous dataset, then
splits.parquet, split_registry.parquet, the split report and the lineage record.

The registry comes from `family.previous_dataset_for` whether or not the build is `cold` (cold only stops
reusing articles): the previous dataset's split_registry.parquet, checked against the hash its manifest records,
or, for a dataset published before registries existed, one made from its splits.parquet. A registry of another
family, or one that is unreadable or inconsistent, stops the build with one line before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.build.family import PublishedDataset, dataset_family, previous_dataset_for
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.split_registry import (
    CarriedSplits,
    RegistryHeader,
    SplitRegistry,
    SplitRegistryError,
    carry_splits,
    check_registry_rows,
    read_registry,
    registry_from_splits,
    write_registry,
)
from lvm_core.data.splits import SplitConfig, split_report, splits_table
from lvm_core.io.storage import read_json, write_parquet


@dataclass(frozen=True)
class SplitOutcome:
    """What the split step leaves for the rest of the analysis and the manifest."""

    n_articles: int
    splits: pl.DataFrame
    config: SplitConfig
    report: dict[str, Any]  # splits.json / the manifest's `splits` block, with the registry hash
    lineage: dict[str, Any]  # the manifest's run-only lineage entries of this step


def split_config(config: BuildConfig) -> SplitConfig:
    return SplitConfig(
        mode=config.split_mode, fractions=tuple(config.fractions), seed=config.seed,
        ood_ranges=config.exclude_articles, val_ranges=config.val_articles, holdout_titles=config.holdout_titles,
    )


def split_step(paths: DatasetPaths, coh_binned: pl.DataFrame, config: BuildConfig, source: SourceInfo) -> SplitOutcome:
    """Split the binned articles along the family's registry; write splits.parquet and split_registry.parquet."""
    articles = pq.read_table(paths.articles, columns=["article_id", "title"])
    title_of = dict(zip(articles.column("article_id").to_pylist(), articles.column("title").to_pylist()))
    titles = pl.Series("title", [title_of.get(a, "") for a in coh_binned["article_id"].to_list()])
    split_cfg = split_config(config)
    previous, parent = carried_registry(config, source)
    carried = carry_splits(coh_binned, split_cfg, titles, parent,
                           RegistryHeader(dataset_family(source.snapshot_id), source.snapshot_id, source.dataset_id))
    write_parquet(paths.splits, splits_table(carried.splits))
    write_registry(paths.split_registry, carried.registry)
    report = split_report(carried.splits, split_cfg)
    report["registry_hash"] = carried.registry.hash
    return SplitOutcome(int(articles.num_rows), carried.splits, split_cfg, report, _lineage(previous, carried))


def carried_registry(config: BuildConfig, source: SourceInfo) -> tuple[PublishedDataset | None, SplitRegistry | None]:
    """The previous dataset of the family and the registry this build carries on from (None, None for a
    family's first build). Also called before any work, so a bad registry stops a build at once."""
    previous = previous_dataset_for(config, source.snapshot_id, source.dataset_id)
    if previous is None:
        return None, None
    return previous, parent_registry(previous, dataset_family(source.snapshot_id))


def parent_registry(previous: PublishedDataset, family: str) -> SplitRegistry:
    """The registry a build carries on from: `previous`'s own (checked against its manifest), else one made
    from its splits.parquet; refused when it belongs to another family."""
    paths = DatasetPaths(previous.root)
    recorded = _recorded_registry_hash(paths)
    if paths.split_registry.is_file():
        registry = read_registry(paths.split_registry)
        if recorded and registry.hash != recorded:
            raise SplitRegistryError(f"{paths.split_registry}: registry hash {registry.hash[:12]} differs from the "
                                     f"{recorded[:12]} its dataset's manifest records (replaced or edited)")
    elif recorded:
        raise SplitRegistryError(f"{paths.split_registry}: missing, but its dataset's manifest records split "
                                 f"registry {recorded[:12]}")
    else:
        registry = legacy_registry(previous)
    if registry.header.family != family:
        raise SplitRegistryError(f"{paths.split_registry}: split registry of family {registry.header.family!r}, "
                                 f"but this build is of family {family!r}")
    return registry


def legacy_registry(previous: PublishedDataset) -> SplitRegistry:
    """The registry of a dataset published before registries existed: its splits.parquet as generation 0."""
    path = DatasetPaths(previous.root).splits
    try:
        splits = pl.read_parquet(path, columns=["article_id", "split"])
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SplitRegistryError(f"{path}: unreadable splits of the previous dataset ({exc})") from None
    header = RegistryHeader(previous.family, previous.snapshot_id, previous.dataset_id)
    registry = registry_from_splits(splits, header)
    check_registry_rows(path, registry.rows, header)
    return registry


def _recorded_registry_hash(paths: DatasetPaths) -> str | None:
    try:
        manifest = read_json(paths.manifest)
    except (OSError, ValueError):
        return None
    block = manifest.get("splits") if isinstance(manifest, dict) else None
    value = block.get("registry_hash") if isinstance(block, dict) else None
    return str(value) if value else None


def _lineage(previous: PublishedDataset | None, carried: CarriedSplits) -> dict[str, Any]:
    """The lineage entries of the split step: the previous dataset and the registry (hash, parent, counts)."""
    header = carried.registry.header
    out: dict[str, Any] = {}
    if previous is not None:
        manifest = read_json(DatasetPaths(previous.root).manifest)
        out["previous_dataset"] = previous.dataset_id
        out["previous_content_hash"] = manifest.get("content_hash") if isinstance(manifest, dict) else None
    out["split_registry"] = {
        "hash": carried.registry.hash, "family": header.family, "generation": header.generation,
        "parent_hash": header.parent_hash, "parent_dataset": header.parent_dataset, **carried.counts,
    }
    return out

