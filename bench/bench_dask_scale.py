"""Scale-out of the CPU-bound build stages: ingest + chunk of an N× multistream dump on a local Dask
cluster of 2 single-threaded workers vs 1 (the build's own shard steps, `lvm_core.data.build`).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_dask_scale.py [--factor 16] [--shard-mib 1]

Each round builds the shards from scratch in a fresh work folder: `ingest_shard_step` per source shard
(byte ranges via the dump's index), then `chunk_shard_step` per article file, mapped on the cluster.
Wall time decides the target (speed-up >= 1.6× with 2 workers on a 2-core machine); the CPU seconds
the workers spent in the steps are printed beside it, with the cores they kept busy (CPU / wall): with 2
workers well under 2, the machine did not give them two cores and the speed-up measures the neighbours.
Both rounds must produce the same chunk rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.6


def _ingest_and_chunk(shard, source, config) -> dict:
    """One source shard → article files → chunk files; runs on a worker, returns counts and CPU seconds."""
    from lvm_core.data.build.chunk import chunk_shard_step, chunk_shard_work_dir
    from lvm_core.data.build.ingest import ingest_shard_step, ingest_shard_work_dir
    from lvm_core.io.storage import file_digest

    cpu = time.process_time()
    ingested = ingest_shard_step(shard, source, config, ingest_shard_work_dir(shard, source, config))
    chunks = 0
    digests = []
    for f in ingested.files:
        rec = chunk_shard_step(f, source, config, chunk_shard_work_dir(f, source, config))
        chunks += rec.chunks
        digests.append(file_digest(Path(rec.file)))
    return {"articles": ingested.articles, "chunks": chunks, "cpu": time.process_time() - cpu, "digests": digests}


def _round(n_workers: int, plan, source, config) -> dict:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        # imports are not what is measured
        client.run(lambda: (__import__("lvm_core.data.build.ingest"), __import__("lvm_core.data.build.chunk")))
        t0 = time.perf_counter()
        results = client.gather(client.map(_ingest_and_chunk, plan, source=source, config=config, pure=False))
        wall = time.perf_counter() - t0
    return {
        "wall": wall, "cpu": sum(r["cpu"] for r in results), "articles": sum(r["articles"] for r in results),
        "chunks": sum(r["chunks"] for r in results), "digests": [d for r in results for d in r["digests"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=16, help="copies of the sample in the dump")
    parser.add_argument("--shard-mib", type=float, default=1.0, help="compressed MiB per source shard")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the dump (reused when present)")
    args = parser.parse_args(argv)

    from bench.make_scaled_dump import DEFAULT_NAME, make_scaled_dump
    from lvm_core.contracts.build_options import BuildConfig, BuildOptions
    from lvm_core.data.build.ingest import plan_shards
    from lvm_core.data.build.source import resolve_source

    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    dump_dir = args.keep or tmp / "dump"
    dump = dump_dir / f"{DEFAULT_NAME}.xml.bz2"
    if not dump.exists():
        t0 = time.perf_counter()
        make_scaled_dump(dump_dir, args.factor)
        print(f"dump: {dump} ({dump.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.0f} s to write)")
    rounds = {}
    for n in (1, 2):
        options = BuildOptions(shard_bytes=int(args.shard_mib * 2**20), shard_articles=200)
        config = BuildConfig.from_parts(str(dump), str(tmp / f"data-{n}"), None, None, options)
        source = resolve_source(config)
        plan = plan_shards(source, config)
        rounds[n] = r = _round(n, plan, source, config)
        print(f"{n} worker(s): {len(plan)} source shards, {r['articles']:,} articles, {r['chunks']:,} chunks; "
              f"wall {r['wall']:.1f} s, worker CPU {r['cpu']:.1f} s (cores busy {r['cpu'] / r['wall']:.2f})")
    same = rounds[1]["digests"] == rounds[2]["digests"]
    speedup = rounds[1]["wall"] / rounds[2]["wall"]
    cpu_ratio = rounds[2]["cpu"] / rounds[1]["cpu"]
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}× wall (target >= {TARGET}×); CPU 2/1 = {cpu_ratio:.2f} "
          f"(1.0 = no overhead); load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"same chunk files in both rounds: {same}")
    ok = same and speedup >= TARGET
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
