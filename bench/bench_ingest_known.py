"""Ingest of a month whose pages the previous dataset already holds: with the index of the previous dataset's
articles (`lvm_core.data.build.known`) against a cold ingest that cleans every page.

Month 1 is the source ingested cold and published as `<family>-20260101`; month 2 is the same source with
every `--edit-every`-th article's wikitext extended (0: unchanged), ingested as `<family>-20260201`:
cold (every page parsed and cleaned) and with the index (only changed pages cleaned). Both runs go through
the build's own `ingest_shard_step` over the planned shards, in this process, fresh work folders each
time; the article rows are checked equal. Printed: wall and CPU seconds of the shards (median of
`--repeat`), the index build time, and the ratios (CPU is the steadier one on a shared machine).

    .venv/bin/python bench/bench_ingest_known.py [--source sample] [--edit-every 20] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import bz2
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _month2(source: Path, out: Path, edit_every: int) -> tuple[Path, int]:
    """The source as plain XML with every `edit_every`-th page's text extended; how many pages were edited."""
    opener = bz2.open if source.suffix == ".bz2" else open
    with opener(source, "rb") as fh:
        raw = fh.read().decode("utf-8")
    if edit_every <= 0:
        out.write_text(raw, encoding="utf-8")
        return out, 0
    parts = raw.split("</text>")
    edited = 0
    for i in range(0, len(parts) - 1, edit_every):
        parts[i] += "\n\nA paragraph added in the second month."
        edited += 1
    out.write_text("</text>".join(parts), encoding="utf-8")
    return out, edited


def _ingest(source: Path, data_dir: Path, snapshot_id: str, known: object = None, **options: object) -> tuple:
    from lvm_core.contracts.build_options import BuildConfig
    from lvm_core.contracts.layout import ARTICLES_SCHEMA
    from lvm_core.data.build.ingest import ingest_reuse, ingest_shard_step, ingest_shard_work_dir, plan_shards
    from lvm_core.data.build.source import resolve_source
    from lvm_core.data.ingest.shards.files import concat_parquet

    config = BuildConfig(source=str(source), data_dir=str(data_dir), snapshot_id=snapshot_id, **options)
    info = resolve_source(config)
    t0, c0 = time.perf_counter(), time.process_time()
    records = [ingest_shard_step(s, info, config, ingest_shard_work_dir(s, info, config, known), known=known)
               for s in plan_shards(info, config)]
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    out = data_dir / f"joined-{snapshot_id}-{time.monotonic_ns()}.parquet"
    concat_parquet([f for r in records for f in r.files], out, ARTICLES_SCHEMA)
    for folder in {Path(f).parent for r in records for f in r.files}:
        shutil.rmtree(folder)  # the next run starts from nothing
    return seconds, out, ingest_reuse(records, known)


def _publish(data_dir: Path, snapshot_id: str, articles: Path, source: Path) -> None:
    from lvm_core.contracts.layout import MANIFEST_FILE, READY_MARKER, DatasetPaths, dataset_dir
    from lvm_core.data.ingest.sources import cleaner_id
    from lvm_core.io.storage import file_digest

    root = dataset_dir(data_dir, snapshot_id)
    root.mkdir(parents=True)
    shutil.copyfile(articles, DatasetPaths(root).articles)
    (root / MANIFEST_FILE).write_text(json.dumps({
        "dataset_id": snapshot_id, "snapshot_id": snapshot_id, "created_at": "2026-01-02T00:00:00",
        "cleaner": cleaner_id(source), "content_hash": file_digest(articles),
    }))
    (root / READY_MARKER).write_text("ready\n")


def main() -> None:
    import pyarrow.parquet as pq

    from lvm_core.contracts.build_options import BuildConfig
    from lvm_core.data.build.known import known_articles_for
    from lvm_core.data.build.source import resolve_source
    from lvm_core.data.ingest import sources

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="sample")
    ap.add_argument("--edit-every", type=int, default=0, help="extend every N-th page's wikitext in month 2 (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    source = sources.resolve_source(args.source)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-known-") as tmp:
        data = Path(tmp) / "data"
        _, month1, _ = _ingest(source, data, "enwiki-20260101")
        _publish(data, "enwiki-20260101", month1, source)
        month2, edited = _month2(source, Path(tmp) / "enwiki-20260201.xml", args.edit_every)
        config = BuildConfig(source=str(month2), data_dir=str(data), snapshot_id="enwiki-20260201")
        t0 = time.perf_counter()
        known, why = known_articles_for(config, resolve_source(config))
        index_seconds = time.perf_counter() - t0
        assert known is not None, why
        cold: list[tuple[float, float]] = []
        warm: list[tuple[float, float]] = []
        for _ in range(args.repeat):
            seconds, cold_rows, cold_counts = _ingest(month2, data, "enwiki-20260201", cold=True)
            cold.append(seconds)
            seconds, warm_rows, counts = _ingest(month2, data, "enwiki-20260201", known=known)
            warm.append(seconds)
            assert pq.read_table(cold_rows).equals(pq.read_table(warm_rows)), "rows differ"
    result = {
        "source": str(source), "pages_edited": edited, "previous_articles": known.n,
        "articles_cleaned": counts["articles_cleaned"], "articles_reused": counts["articles_reused"],
        "cold_articles_cleaned": cold_counts["articles_cleaned"],
        "cold_seconds": round(statistics.median(w for w, _ in cold), 3),
        "with_index_seconds": round(statistics.median(w for w, _ in warm), 3),
        "cold_cpu_seconds": round(statistics.median(c for _, c in cold), 3),
        "with_index_cpu_seconds": round(statistics.median(c for _, c in warm), 3),
        "index_build_seconds": round(index_seconds, 3),
    }
    result["ratio"] = round(result["with_index_seconds"] / result["cold_seconds"], 3)
    result["cpu_ratio"] = round(result["with_index_cpu_seconds"] / result["cold_cpu_seconds"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
