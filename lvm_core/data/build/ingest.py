"""Ingest step: one source shard parsed and cleaned into bounded article files.

Repeated ids are left to the global pass (`dedup.py`), which counts them into `ingest_stats.json`
beside the kept articles (read into the manifest).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.data.build.records import IngestedShard
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    step_key,
    work_dir,
)
from lvm_core.data.ingest.shards.files import write_article_shards
from lvm_core.data.ingest.shards.plan import plan_source_shards
from lvm_core.data.ingest.shards.read import read_shard
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


def ingest_shard_work_dir(shard: Any, source: SourceInfo, config: BuildConfig) -> Path:
    key = step_key("ingest", "shard", source.digest, shard_key(shard), source.snapshot_id,
                   config.limit_articles, config.shard_articles)
    return work_dir(config.resolved_data_dir(), "ingest", key)


def ingest_shard_step(
    shard: Any, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None
) -> IngestedShard:
    """Parse and clean one source shard into bounded article files (ARTICLES_SCHEMA), source order.

    With `limit_articles` a shard reads at most that many articles: the global pass (`dedup_articles`)
    keeps the first N of the whole source. Repeated ids are left to that pass too.
    """
    out_dir = Path(out_dir)
    done = None if config.cold else done_record(out_dir, IngestedShard)  # cold: nothing reused from work/
    if done is not None:
        return done
    t0 = time.perf_counter()
    counted = {"articles": 0}

    def articles() -> Any:
        for article in read_shard(shard):
            counted["articles"] += 1
            if on_progress is not None:
                on_progress(1)
            yield article
            if config.limit_articles is not None and counted["articles"] >= config.limit_articles:
                break
        crash_point("ingest")  # all read, no file renamed into place yet

    files = write_article_shards(
        articles(), out_dir, snapshot_id=source.snapshot_id, max_articles=config.shard_articles,
        prefix=f"articles-{shard.index:05d}",
    )
    return finish_shard(out_dir, IngestedShard(
        shard=shard.label, index=shard.index, files=tuple(str(f) for f in files),
        articles=counted["articles"], bytes=sum(f.stat().st_size for f in files),
        input_bytes=shard.stop - shard.start, seconds=round(time.perf_counter() - t0, 3),
    ))
