"""Ingest step: one source shard parsed and cleaned into bounded article files.

Repeated ids are left to the global pass (`dedup.py`), which counts them into `ingest_stats.json`
beside the kept articles (read into the manifest). Pages unchanged since the previous dataset are not
cleaned again (`known.py`); each shard counts what it cleaned and what it took from there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest, write_manifest
from lvm_core.data.build.known import KnownArticles, KnownLookup, local_known, with_known_texts
from lvm_core.data.build.records import IngestedShard
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    step_key,
    work_dir,
    work_store,
)
from lvm_core.data.ingest.base import Article, KnownPage
from lvm_core.data.ingest.shards.files import write_article_shards
from lvm_core.data.ingest.shards.plan import plan_source_shards
from lvm_core.data.ingest.shards.read import read_shard_pages
from lvm_core.data.ingest.sources import cleaner_id
from lvm_core.io.storage import read_json
from lvm_core.runtime.faults import crash_point

INGEST_STATS_FILE = "ingest_stats.json"


def read_ingest_stats(articles_path: Path) -> dict[str, Any]:
    """What the ingest step counted (repeated ids); empty for work folders of older builds."""
    path = Path(articles_path).parent / INGEST_STATS_FILE
    try:
        stats = read_json(path)
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def plan_shards(source: SourceInfo, config: BuildConfig) -> list[Any]:
    """Independently readable parts of the source, in source order (`lvm_core.data.ingest.shards.SourceShard`)."""
    return plan_source_shards(source.path, target_bytes=config.shard_bytes)


def shard_key(shard: Any) -> list[Any]:
    """What identifies a source shard's bytes (the source digest is keyed beside it)."""
    return [shard.kind, shard.index, shard.count, shard.start, shard.stop, shard.header_stop]


def ingest_shard_work_dir(
    shard: Any, source: SourceInfo, config: BuildConfig, known: KnownArticles | None = None
) -> Path:
    """Keyed by the shard's bytes, the cleaner and the previous dataset it takes known pages from (a cold
    and an incremental ingest never share a folder, though their article files are the same)."""
    key = step_key("ingest", "shard", source.digest, shard_key(shard), source.snapshot_id,
                   config.limit_articles, config.shard_articles, cleaner_id(source.path),
                   known.identity if known is not None else None)
    return work_dir(config.work_data_dir(), "ingest", key)


def ingest_shard_step(
    shard: Any, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None,
    known: KnownArticles | None = None,
) -> IngestedShard:
    """Parse and clean one source shard into bounded article files (ARTICLES_SCHEMA), source order.

    With `limit_articles` a shard reads at most that many articles: the global pass (`dedup_articles`)
    keeps the first N of the whole source. Repeated ids are left to that pass too. With `known` (the
    previous dataset's index, `known.py`) a dump page whose raw text is unchanged is not cleaned: its text
    comes from the previous dataset, so the files are the same as a cleaning would write.
    """
    out_dir, store = Path(out_dir), work_store(config)
    done = None if config.cold else done_record(out_dir, IngestedShard, store)  # cold: nothing reused from work/
    if done is not None:
        return done
    known = local_known(known, config, store)
    t0 = time.perf_counter()
    counted = {"articles": 0, "cleaned": 0, "reused": 0}
    lookup = KnownLookup(known) if known is not None else None

    def pages() -> Iterator[Article | KnownPage]:
        for item in read_shard_pages(shard, known=lookup):
            counted["articles"] += 1
            counted["reused" if isinstance(item, KnownPage) else "cleaned"] += 1
            if on_progress is not None:
                on_progress(1)
            yield item
            if config.limit_articles is not None and counted["articles"] >= config.limit_articles:
                break
        crash_point("ingest")  # all read, no file renamed into place yet

    files = write_article_shards(
        with_known_texts(pages(), known), out_dir, snapshot_id=source.snapshot_id,
        max_articles=config.shard_articles, prefix=f"articles-{shard.index:05d}",
    )
    return finish_shard(out_dir, IngestedShard(
        shard=shard.label, index=shard.index, files=tuple(str(f) for f in files),
        articles=counted["articles"], bytes=sum(f.stat().st_size for f in files),
        input_bytes=shard.stop - shard.start, seconds=round(time.perf_counter() - t0, 3),
        cleaned=counted["cleaned"], reused_articles=counted["reused"],
    ), store)


def ingest_reuse(ingested: list[IngestedShard], known: KnownArticles | None) -> dict[str, Any]:
    """What the ingest shards cleaned and took from the previous dataset (manifest lineage.reuse.ingest)."""
    return {
        "articles_cleaned": int(sum(r.cleaned or 0 for r in ingested)),
        "articles_reused": int(sum(r.reused_articles or 0 for r in ingested)),
        "previous_dataset": known.dataset_id if known is not None else None,
        "previous_content_hash": known.content_hash if known is not None else None,
        "cleaner": known.cleaner if known is not None else None,
    }


def record_ingest(
    stage_dir: Path, manifest: DatasetManifest, source: SourceInfo, ingested: list[IngestedShard],
    known: KnownArticles | None,
) -> DatasetManifest:
    """The manifest with the cleaner its text came from (`cleaner`, part of the content: another cleaner
    makes another dataset) and what ingest cleaned or reused (run-only `lineage.reuse.ingest`, beside what
    the other steps record under `lineage.reuse`); rewritten in the staging folder."""
    lineage = dict(manifest.lineage or {})
    lineage["reuse"] = {**dict(lineage.get("reuse") or {}), "ingest": ingest_reuse(ingested, known)}
    manifest = manifest.with_fields(cleaner=cleaner_id(source.path), lineage=lineage)
    write_manifest(DatasetPaths(Path(stage_dir)).manifest, manifest)
    return manifest
