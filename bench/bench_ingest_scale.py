"""Peak memory and throughput of the build's own ingest, dedup and chunk steps on a 1x and an Nx dump.

Two paths, each run in a fresh subprocess per dump (its peak RSS is that process's own maximum, from
`resource.getrusage(RUSAGE_SELF)` taken right after the steps, cross-checked by the parent's
`RUSAGE_CHILDREN`):

- build: the steps as the build's tasks call them (`tasks/dataset.py`), one after the other in one
  process: `lvm_core.data.build.source.resolve_source`, `ingest.plan_shards`, `ingest.ingest_shard_step`
  per source shard, `dedup.dedup_articles` (the global pass: limit, repeated ids), `chunk.chunk_shard_step`
  per kept article file, each into the work folder the task would use (a fresh data folder per run);
- whole (baseline): the whole-snapshot path builds took before they were sharded —
  every article collected into lists, repeated ids dropped, one articles table, `to_pylist`,
  `chunk_articles`, one chunks table.

Target: build-path peak RSS at Nx / at 1x <= 1.3. Also printed: MB/s of clean article text per core (text
bytes / child CPU seconds) for both paths, the CPU seconds of ingest, dedup and chunk, and whether both
paths give the same chunk count. The dumps come from bench/make_scaled_dump.py (copies of the embedded
sample: for throughput and memory only, never quality).

    .venv/bin/python bench/bench_ingest_scale.py [--factor 16] [--work DIR] [--target-bytes 1048576] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TARGET_RATIO = 1.3


def run_build_steps(dump: Path, out: Path, target_bytes: int, max_articles: int) -> dict[str, float]:
    """The build's ingest, dedup and chunk steps, called as its tasks call them, shard after shard."""
    from lvm_core.contracts.build_options import BuildConfig, BuildOptions
    from lvm_core.data.build.chunk import chunk_shard_step, chunk_shard_work_dir
    from lvm_core.data.build.dedup import dedup_articles, dedup_work_dir
    from lvm_core.data.build.ingest import ingest_shard_step, ingest_shard_work_dir, plan_shards
    from lvm_core.data.build.source import resolve_source

    options = BuildOptions(shard_bytes=target_bytes, shard_articles=max_articles)
    config = BuildConfig.from_parts(str(dump), str(out), None, None, options)
    info = resolve_source(config)
    cpu = [time.process_time()]

    def lap() -> float:
        cpu.append(time.process_time())
        return cpu[-1] - cpu[-2]

    plan = plan_shards(info, config)
    ingested = [ingest_shard_step(s, info, config, ingest_shard_work_dir(s, info, config)) for s in plan]
    ingest_s = lap()
    kept = dedup_articles(ingested, info, config, dedup_work_dir(ingested, info, config))
    dedup_s = lap()
    chunked = [chunk_shard_step(f, info, config, chunk_shard_work_dir(f, info, config)) for f in kept.files]
    chunk_s = lap()
    return {
        "shards": len(plan), "article_files": len(kept.files), "articles": kept.articles,
        "chunks": sum(c.chunks for c in chunked), "ingest_cpu_s": ingest_s, "dedup_cpu_s": dedup_s,
        "chunk_cpu_s": chunk_s, "files": list(kept.files),
    }


def _text_bytes(article_files: list[str]) -> int:
    """Clean text bytes of the kept articles, one file at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return sum(int(pc.sum(pc.binary_length(pq.read_table(f, columns=["text"]).column("text"))).as_py() or 0)
               for f in article_files)


def run_whole(dump: Path, out: Path) -> dict[str, int]:
    """The whole-snapshot path of builds before sharding (one ingest, one chunk step), step for step."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lvm_core.contracts import layout
    from lvm_core.data import chunking
    from lvm_core.data.ingest import sources
    from lvm_core.data.ingest.base import Article
    from lvm_core.data.ingest.duplicates import drop_duplicate_ids
    from lvm_core.data.ingest.sources import read_articles
    from lvm_core.io.storage import write_parquet

    snapshot_id = sources.snapshot_id_for(dump)
    articles, _ = drop_duplicate_ids(read_articles(dump), on_duplicate="first", source_name=dump.name)
    ids, titles, texts, hashes, sources = [], [], [], [], []
    for article in articles:
        ids.append(article.article_id)
        titles.append(article.title)
        texts.append(article.text)
        hashes.append(hashlib.sha1(article.text.encode("utf-8")).hexdigest())
        sources.append(article.source_sha1)
    table = pa.table(
        {
            "article_id": pa.array(ids, pa.int64()), "title": pa.array(titles, pa.string()),
            "text": pa.array(texts, pa.string()), "snapshot_id": pa.array([snapshot_id] * len(ids), pa.string()),
            "text_sha1": pa.array(hashes, pa.string()), "source_sha1": pa.array(sources, pa.string()),
        },
        schema=layout.ARTICLES_SCHEMA,
    )
    write_parquet(out / "articles.parquet", table)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_articles = len(ids)
    del articles, ids, titles, texts, hashes, sources, table
    rows = pq.read_table(out / "articles.parquet", columns=["article_id", "title", "text"]).to_pylist()
    chunks = chunking.chunk_articles(Article(a["article_id"], a["title"], a["text"]) for a in rows)
    write_parquet(out / "chunks.parquet", chunks.cast(layout.CHUNKS_SCHEMA))
    return {"articles": n_articles, "chunks": chunks.num_rows, "text_bytes": text_bytes}


def child(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    if args.child == "build":
        result = run_build_steps(Path(args.dump), out, args.target_bytes, args.max_articles)
    else:
        result = run_whole(Path(args.dump), out)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # before counting text bytes: the steps' own peak
    if args.child == "build":
        result["text_bytes"] = _text_bytes(result.pop("files"))
    result.update(
        wall_s=time.perf_counter() - started, cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
    )
    print(json.dumps(result))
    return 0


def measure(method: str, dump: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=work))
    cmd = [
        sys.executable, __file__, "--child", method, "--dump", str(dump), "--out", str(out),
        "--target-bytes", str(args.target_bytes), "--max-articles", str(args.max_articles),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{method} on {dump.name} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["children_max_rss_bytes"] = after * 1024  # max over children so far: >= this one's if it grew
    result["children_max_grew"] = after > before
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="folder for the dumps (kept, reused) and outputs")
    parser.add_argument("--target-bytes", type=int, default=1 << 20, help="compressed bytes per source shard")
    parser.add_argument("--max-articles", type=int, default=2000, help="articles per article file")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=("build", "whole"), help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from make_scaled_dump import make_scaled_dump

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    dumps = {}
    for factor in (1, args.factor):
        folder = work / f"x{factor}"
        dump = folder / "enwiki-20260101-pages-articles-multistream.xml.bz2"
        if not dump.exists():
            started = time.perf_counter()
            make_scaled_dump(folder, factor)
            print(f"generated {factor}x dump: {dump.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.0f} s")
        dumps[factor] = dump

    results: dict[str, dict[int, dict[str, float]]] = {"build": {}, "whole": {}}
    # Smallest first, so the parent's RUSAGE_CHILDREN maximum grows run by run and confirms each child's.
    for factor in (1, args.factor):
        for method in ("build", "whole"):
            r = measure(method, dumps[factor], work, args)
            results[method][factor] = r
            print(
                f"{method:8s} {factor:3d}x: {r['articles']:6d} articles {r['chunks']:7d} chunks "
                f"{r['text_bytes'] / 1e6:7.1f} MB text  peak RSS {r['peak_rss_bytes'] / 2**20:7.1f} MiB  "
                f"CPU {r['cpu_s']:6.1f} s  wall {r['wall_s']:6.1f} s  "
                f"{r['text_bytes'] / 1e6 / r['cpu_s']:.2f} MB/s/core"
                + (f"  ({r['shards']} shards, {r['article_files']} article files; CPU ingest "
                   f"{r['ingest_cpu_s']:.1f} s, dedup {r['dedup_cpu_s']:.2f} s, chunk {r['chunk_cpu_s']:.1f} s)"
                   if method == "build" else "")
            )

    n = args.factor
    ratio = {m: results[m][n]["peak_rss_bytes"] / results[m][1]["peak_rss_bytes"] for m in results}
    speed = {m: results[m][n]["text_bytes"] / 1e6 / results[m][n]["cpu_s"] for m in results}
    same = results["build"][n]["chunks"] == results["whole"][n]["chunks"]
    passed = ratio["build"] <= TARGET_RATIO
    print(f"peak RSS {n}x/1x: build {ratio['build']:.3f} (target <= {TARGET_RATIO}) "
          f"{'PASS' if passed else 'FAIL'}; whole-snapshot baseline {ratio['whole']:.3f}")
    print(f"clean text per core at {n}x: build {speed['build']:.2f} MB/s, whole {speed['whole']:.2f} MB/s "
          f"(build/whole {speed['build'] / speed['whole']:.3f}); same chunk count: {same}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} > {os.cpu_count()} cores; CPU-time speeds are steadier than wall")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "rss_ratio": ratio, "mb_per_s_per_core": speed,
                                         "pass": passed}, indent=2, default=str))
    return 0 if passed and same else 1


if __name__ == "__main__":
    sys.exit(main())
