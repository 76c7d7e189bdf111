"""Ingest steps: the source parsed and cleaned into article files, whole or shard by shard.

Repeated ids are counted into `ingest_stats.json` beside the articles (read into the manifest); the
sharded path leaves them to the global pass (`dedup.py`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from lvm_core.contracts.layout import ARTICLES_FILE, ARTICLES_SCHEMA
from lvm_core.contracts.build_options import BuildConfig
from lvm_core.data.ingest.duplicates import drop_duplicate_ids
from lvm_core.data.ingest.sources import is_tabular, read_articles
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    step_key,
    work_dir,
)
from lvm_core.data.ingest.shards.plan import plan_source_shards
from lvm_core.data.ingest.shards.files import write_article_shards
from lvm_core.data.ingest.shards.read import read_shard
from lvm_core.io.storage import read_json, write_json, write_parquet
from lvm_core.runtime.faults import crash_point

INGEST_STATS_FILE = "ingest_stats.json"


def ingest_step(source: SourceInfo, config: BuildConfig, out_dir: Path, progress: bool = False) -> Path:
    """Parse and clean the source into articles.parquet (skipped when already done).

    Repeated ids are counted into `ingest_stats.json` beside it (read into the manifest). A dump may
    repeat a page: the first revision wins. A Parquet/JSONL row repeating an id with the same text is
    dropped; with a different text the build fails unless `config.on_duplicate` is "first" or "last".
    """
    out = Path(out_dir) / ARTICLES_FILE
    if out.exists():
        return out
    policy = config.on_duplicate if is_tabular(source.path) else "first"
    articles, dups = drop_duplicate_ids(
        read_articles(source.path, limit=config.limit_articles, progress=progress),
        on_duplicate=policy, source_name=Path(source.path).name,
    )
    ids, titles, texts, hashes = [], [], [], []
    for article in articles:
        ids.append(article.article_id)
        titles.append(article.title)
        texts.append(article.text)
        hashes.append(_sha1(article.text))
    crash_point("ingest")
    table = pa.table(
        {
            "article_id": pa.array(ids, pa.int64()),
            "title": pa.array(titles, pa.string()),
            "text": pa.array(texts, pa.string()),
            "snapshot_id": pa.array([source.snapshot_id] * len(ids), pa.string()),
            "text_sha1": pa.array(hashes, pa.string()),
        },
        schema=ARTICLES_SCHEMA,
    )
    write_json(Path(out_dir) / INGEST_STATS_FILE, dups.to_dict())
    write_parquet(out, table)
    return out


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
) -> dict[str, Any]:
    """Parse and clean one source shard into bounded article files (ARTICLES_SCHEMA), source order.

    With `limit_articles` a shard reads at most that many articles: the global pass (`dedup_articles`)
    keeps the first N of the whole source. Repeated ids are left to that pass too.
    """
    out_dir = Path(out_dir)
    done = done_record(out_dir)
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
    return finish_shard(out_dir, {
        "shard": shard.label, "index": shard.index, "files": [str(f) for f in files],
        "articles": counted["articles"], "bytes": sum(f.stat().st_size for f in files),
        "input_bytes": shard.stop - shard.start, "seconds": round(time.perf_counter() - t0, 3),
    })


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
