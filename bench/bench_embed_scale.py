"""Peak memory of the build's embedding stage on a 1x and an Nx dump, encoder weights excluded.

The stage as a build runs it: `lvm_core.data.build.embed_shard_step` per chunk file (through the shared
embedding cache), then `assemble_step` joining the shards' vectors into one memory-mapped embeddings.npy.
Each factor runs in a fresh subprocess; its stage memory is the process's peak RSS minus its RSS right
after the encoder was loaded (the weights and the runtime's arenas are the same at any snapshot size).
The chunk files come from the sharded ingest + chunking of bench/make_scaled_dump.py dumps (copies of the
embedded sample: throughput and memory only, never quality). Target: stage memory Nx / 1x <= 1.5.

The encoder defaults to the ONNX int8 backend (4x faster than fp32 on CPU, so a 16x run takes minutes);
its export and agreement check run once before the measured processes.

    .venv/bin/python bench/bench_embed_scale.py [--factor 16] [--encoder all-MiniLM-L6-v2@onnx-int8] [--work DIR]
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

TARGET_RATIO = 1.5
DEFAULT_ENCODER = "all-MiniLM-L6-v2@onnx-int8"


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(args: argparse.Namespace) -> int:
    """Embed every chunk file of `--chunks-dir` and assemble the vectors, in this process."""
    from lvm_core.contracts.build_options import BuildConfig, BuildOptions
    from lvm_core.data.build.assemble import assemble_step
    from lvm_core.data.build.embed import embed_shard_step, sum_embed_stats
    from lvm_core.data.build.records import ChunkedShard, KeptArticles
    from lvm_core.data.embedding.encoder import load_encoder
    from lvm_core.data.embedding.onnx import encoder_cache_dir
    from lvm_core.data.ingest.duplicates import DuplicateReport

    data_dir = Path(args.data_dir)
    config = BuildConfig.from_parts("sample", str(data_dir), None, None, BuildOptions(encoder=args.encoder))
    load_encoder(args.encoder, cache_dir=encoder_cache_dir(data_dir))  # the weights: not the stage's memory
    after_load = _rss_bytes()
    started = time.perf_counter()
    chunk_files = sorted(Path(args.chunks_dir).glob("*.parquet"))
    article_files = sorted(Path(args.articles_dir).glob("*.parquet"))
    embedded, chunked = [], []
    for i, f in enumerate(chunk_files):
        rec = embed_shard_step(str(f), config, data_dir / "embed" / f"{i:05d}", data_dir)
        embedded.append(rec)
        chunked.append(ChunkedShard(file=str(f), articles=0, chunks=rec.chunks, bytes=0, seconds=0.0))
    articles = KeptArticles(files=tuple(str(p) for p in article_files), articles=0, read=0, stats=DuplicateReport())
    assemble_step(articles, chunked, embedded, config, data_dir / "assembled")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = sum_embed_stats([e.stats for e in embedded])
    print(json.dumps({
        "chunk_files": len(chunk_files), "chunks": stats["n_total"], "encoded": stats["n_encoded"],
        "after_load_rss_bytes": after_load, "peak_rss_bytes": usage.ru_maxrss * 1024,
        "stage_bytes": usage.ru_maxrss * 1024 - after_load,
        "wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
    }))
    return 0


def _chunk_files(dump: Path, out: Path) -> tuple[Path, Path]:
    """Article and chunk files of the dump, as the sharded build writes them (made once, kept in `out`)."""
    from bench_ingest_scale import run_sharded

    if not (out / "chunks").is_dir():
        run_sharded(dump, out, target_bytes=1 << 20, max_articles=100)
    return out / "articles", out / "chunks"


def measure(factor: int, articles: Path, chunks: Path, work: Path, encoder: str, warm_cache: Path) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix=f"embed-x{factor}-", dir=work))
    (data_dir / "cache").mkdir(parents=True)
    os.symlink(warm_cache, data_dir / "cache" / "encoders")  # the export, made once
    cmd = [sys.executable, __file__, "--child", "--chunks-dir", str(chunks), "--articles-dir", str(articles),
           "--data-dir", str(data_dir), "--encoder", encoder]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "LVM_NO_PROGRESS": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"embedding stage at {factor}x failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=16)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="encoder spec (model@backend)")
    parser.add_argument("--work", type=Path, default=None, help="folder for dumps and chunk files (kept, reused)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunks-dir", help=argparse.SUPPRESS)
    parser.add_argument("--articles-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from make_scaled_dump import make_scaled_dump

    from lvm_core.data.embedding.encoder import load_encoder

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-embed-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    warm_cache = work / "encoders"
    started = time.perf_counter()
    load_encoder(args.encoder, cache_dir=warm_cache)  # export + agreement check once, outside the measurement
    print(f"encoder {args.encoder} ready in {time.perf_counter() - started:.0f} s (export and check, once)")
    results = {}
    for factor in (1, args.factor):
        folder = work / f"x{factor}"
        dump = folder / "enwiki-20260101-pages-articles-multistream.xml.bz2"
        if not dump.exists():
            make_scaled_dump(folder, factor)
        articles, chunks = _chunk_files(dump, folder / "sharded")
        r = results[factor] = measure(factor, articles, chunks, work, args.encoder, warm_cache)
        print(f"{factor:3d}x: {r['chunks']:7d} chunks in {r['chunk_files']} files, {r['encoded']} encoded; "
              f"RSS after encoder load {r['after_load_rss_bytes'] / 2**20:.0f} MiB, peak {r['peak_rss_bytes'] / 2**20:.0f} MiB, "
              f"stage {r['stage_bytes'] / 2**20:.1f} MiB; {r['chunks'] / r['wall_s']:.0f} chunks/s, CPU {r['cpu_s']:.0f} s")
    n = args.factor
    ratio = results[n]["stage_bytes"] / max(results[1]["stage_bytes"], 1)
    vectors_mib = results[n]["chunks"] * 384 * 4 / 2**20
    passed = ratio <= TARGET_RATIO
    print(f"embedding-stage memory {n}x/1x: {ratio:.3f} (target <= {TARGET_RATIO}) {'PASS' if passed else 'FAIL'}; "
          f"the {n}x vectors alone are {vectors_mib:.0f} MiB as float32")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} > {os.cpu_count()} cores (memory figures are unaffected)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratio": ratio, "pass": passed}, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
