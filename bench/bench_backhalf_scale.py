"""The whole build at two sizes: coordinator memory and time per chunk from ingest to publish.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_backhalf_scale.py [--small 100000] [--large 1000000]

Two dumps of about `--small` and `--large` chunks are written by `make_scaled_dump.py --distinct` (copies
of the enwiki sample, ~10,000 chunks each, every line marked so that no chunk text repeats: repeated
texts would fail the leakage gates and flatter the cache), and each is built from scratch by `lvm build` in a data folder of its
own, with the hash test encoder (`--encoder hash-test`: unit vectors from a seeded hash of the text, so
encoding costs microseconds and what is measured is the platform; the real encoder's rate is measured by
bench_encoders.py and bench_incremental.py). The `lvm build` process is the coordinator (the flow and,
with the default runner, its tasks run in it): its peak RSS (VmHWM) and the flow's wall time are measured.

Targets: peak RSS large/small <= 1.3; flow wall time per chunk large/small <= 1.2. The per-chunk slopes
are projected linearly to 6.6e7 chunks (a full enwiki); the projection is an assumption, the two builds
are the measurements. A per-stage breakdown from the Prefect log follows. Exit status 1 when a target fails.
A quick check: --small 10000 --large 100000.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.buildrun import BuildRun, print_stages, run_build  # noqa: E402
from bench.make_scaled_dump import DEFAULT_NAME, make_scaled_dump  # noqa: E402

CHUNKS_PER_COPY = 10_000  # chunks per marked copy of the sample (the sample itself has 9,150)
FULL_ENWIKI_CHUNKS = 6.6e7
TARGET_RSS, TARGET_TIME = 1.3, 1.2


def _build(chunks: int, work: Path, encoder: str) -> BuildRun:
    """Write (or reuse) the dump of ~`chunks` chunks and build it in a fresh data folder."""
    factor = max(1, round(chunks / CHUNKS_PER_COPY))
    dump_dir, data_dir = work / f"dump-x{factor}", work / f"data-x{factor}"
    dump = dump_dir / f"{DEFAULT_NAME}.xml.bz2"
    if not dump.exists():
        make_scaled_dump(dump_dir, factor, distinct=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"building {factor}x the sample ({dump.stat().st_size / 2**20:.0f} MiB bz2) ...", flush=True)
    run = run_build(dump, data_dir, work / f"build-x{factor}.log", encoder=encoder)
    print(f"  {run.chunks:,} chunks: flow {run.flow_s:.0f} s, CPU {run.cpu_s:.0f} s, peak RSS {run.peak_rss_mib:.0f} MiB")
    return run


def _report(small: BuildRun, large: BuildRun) -> dict[str, float]:
    """Print the sizes, the two ratios against their targets and the projection; return the figures."""
    print(f"\n{'':<26}{'small':>14}{'large':>14}")
    for label, get in (("chunks", lambda r: f"{r.chunks:,}"), ("articles", lambda r: f"{r.manifest['counts']['articles']:,}"),
                       ("process wall s", lambda r: f"{r.wall_s:.1f}"), ("flow wall s", lambda r: f"{r.flow_s:.1f}"),
                       ("CPU s (process tree)", lambda r: f"{r.cpu_s:.1f}"),
                       ("coordinator peak RSS MiB", lambda r: f"{r.peak_rss_mib:.0f}"),
                       ("tree ru_maxrss MiB", lambda r: f"{r.tree_maxrss_mib:.0f}")):
        print(f"{label:<26}{get(small):>14}{get(large):>14}")
    print()
    print_stages({"small": small, "large": large})
    rss = large.peak_rss_mib / small.peak_rss_mib
    per_chunk = (large.flow_s / large.chunks) / (small.flow_s / small.chunks)
    cpu_per_chunk = (large.cpu_s / large.chunks) / (small.cpu_s / small.chunks)
    d_chunks = large.chunks - small.chunks
    rss_slope_kib = (large.peak_rss_mib - small.peak_rss_mib) * 1024 / d_chunks
    time_slope_ms = (large.flow_s - small.flow_s) * 1000 / d_chunks
    extra = FULL_ENWIKI_CHUNKS - large.chunks
    rss_full_gib = (large.peak_rss_mib + rss_slope_kib * extra / 1024) / 1024
    time_full_h = (large.flow_s + time_slope_ms * extra / 1000) / 3600
    print(f"\nmeasured: peak RSS large/small = {rss:.3f} (target <= {TARGET_RSS}) "
          f"{'PASS' if rss <= TARGET_RSS else 'FAIL'}")
    print(f"measured: flow wall per chunk large/small = {per_chunk:.3f} (target <= {TARGET_TIME}) "
          f"{'PASS' if per_chunk <= TARGET_TIME else 'FAIL'}; CPU per chunk {cpu_per_chunk:.3f}")
    print(f"measured slopes: {rss_slope_kib:+.3f} KiB peak RSS and {time_slope_ms:.3f} ms flow wall per added chunk")
    print(f"assumed (linear in chunks, one coordinator, hash encoder): at {FULL_ENWIKI_CHUNKS:.1e} chunks "
          f"peak RSS ~ {rss_full_gib:.1f} GiB, flow ~ {time_full_h:.1f} h before real encoding")
    return {"rss_ratio": rss, "time_per_chunk_ratio": per_chunk, "cpu_per_chunk_ratio": cpu_per_chunk,
            "rss_slope_kib_per_chunk": rss_slope_kib, "time_slope_ms_per_chunk": time_slope_ms,
            "projected_rss_gib": rss_full_gib, "projected_flow_h": time_full_h}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000, help="chunks of the small build (default 1e5)")
    parser.add_argument("--large", type=int, default=1_000_000, help="chunks of the large build (default 1e6)")
    parser.add_argument("--work", type=Path, help="folder for dumps, data folders and logs (kept; dumps reused)")
    parser.add_argument("--encoder", default="hash-test", help="encoder spec (default: the hash test encoder)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-backhalf-"))
    work.mkdir(parents=True, exist_ok=True)
    small, large = _build(args.small, work, args.encoder), _build(args.large, work, args.encoder)
    figures = _report(small, large)
    if args.json:
        keys = ("chunks", "wall_s", "flow_s", "cpu_s", "peak_rss_mib", "stages", "stage_peak_rss_mib")
        runs = {name: {k: getattr(r, k) for k in keys} for name, r in (("small", small), ("large", large))}
        args.json.write_text(json.dumps({"runs": runs, **figures}, indent=1))
    ok = figures["rss_ratio"] <= TARGET_RSS and figures["time_per_chunk_ratio"] <= TARGET_TIME
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
