"""An incremental month against a cold build of the same month: cost, same dataset, splits that stay.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_incremental.py [--factor 10] [--work DIR]

Two consecutive synthetic snapshots from `make_scaled_dump.py` (month 1: `--factor` copies of the enwiki
sample, ~10,000 chunks each, every line of a copy marked so no chunk text repeats, dated 2026-01-01;
month 2: `--next-of` it, ~5 % of articles edited, ~2 % added, ~1 % removed, dated 2026-02-01). All
builds are `lvm build` subprocesses with the hash test encoder (`--encoder hash-test`), so encoding is
not the cost:

1. month 1 into data folder A; A is then copied to B and C (same published month 1, so the same split
   registry), and B's embedding cache is emptied (a cold build rebuilds every step but still reads the
   cache; the cost baseline here is the full cost);
2. month 2 into A: incremental (the build finds month 1 by itself);
3. month 2 into B with `--cold`: the cost baseline;
4. month 2 into C with `--cold` over month 1's embedding cache: the dataset the incremental one must equal.

Targets: flow wall time incremental/cold <= 0.15 (moonshot <= 0.10); the incremental dataset has the
`content_hash` of the cold build over the same cache (lineage is run-only, outside the hash); every
article present in both months keeps its split (splits.parquet of month 1 vs month 2); the cold builds take
nothing from the previous dataset. With the hash test encoder the empty-cache cold build has that hash
too; a real encoder's vectors differ in their last bits with the batches they were encoded in (torch
kernels follow the padded batch shape), so from an empty cache the vectors differ by ~1e-7 and the
benchmark prints which files differ (splits.parquet holds each article's coherence, computed from the
vectors) and by how much the vectors do, beside the hash. The
manifests must record `lineage["reuse"]` and
`lineage["split_registry"]`; a build without them fails the run with a message saying so. The real
encoder's rate is measured separately on a few chunks (`--real-chunks`, 0 to skip), so a reader can
project what encoding would add to each build. Exit status 1 when a target or a check fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.buildrun import BuildRun, build_env, print_stages, run_build  # noqa: E402
from bench.make_scaled_dump import DEFAULT_NAME, make_next_snapshot, make_scaled_dump  # noqa: E402
from lvm_core.contracts.layout import embedding_cache_dir  # noqa: E402

TARGET, MOONSHOT = 0.15, 0.10


def _snapshots(work: Path, factor: int, seed: int) -> tuple[Path, Path, dict[str, Any]]:
    """Month 1 and month 2 dumps (reused when present) and month 2's recorded changes."""
    folder = work / f"dumps-x{factor}-seed{seed}"
    first = folder / f"{DEFAULT_NAME}.xml.bz2"
    if not first.exists():
        make_scaled_dump(folder, factor, distinct=True)
    second, _, changes = make_next_snapshot(first, folder, seed=seed)
    print(f"month 2: {len(changes['edited'])} edited, {len(changes['added'])} added, "
          f"{len(changes['removed'])} removed pages ({second.name})", flush=True)
    return first, second, changes


def _splits(run: BuildRun) -> dict[int, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(run.dataset / "splits.parquet", columns=["article_id", "split"])
    return dict(zip(table.column("article_id").to_pylist(), table.column("split").to_pylist()))


def _checks(month1: BuildRun, inc: BuildRun, cold: BuildRun, cached: BuildRun) -> list[str]:
    """What must hold besides the cost; each failure as one line."""
    problems = []
    for name, run in (("incremental", inc), ("cold", cold), ("cold over the cache", cached)):
        lineage = run.manifest.get("lineage") or {}
        for key in ("reuse", "split_registry"):
            if key not in lineage:
                problems.append(f"{name} month-2 manifest has no lineage[{key!r}] ({run.dataset}/manifest.json): "
                                "the build lacks incremental months / the split registry this benchmark measures")
    for name, run in (("cold", cold), ("cold over the cache", cached)):
        reuse = (run.manifest.get("lineage") or {}).get("reuse") or {}
        copied = int(reuse.get("vectors_copied") or 0) + int(reuse.get("articles_reused") or 0)
        if copied:
            problems.append(f"the {name} build took {copied:,} articles/vectors from the previous dataset; it must take none")
        if (run.manifest.get("lineage") or {}).get("cold") is False:
            problems.append(f"lineage['cold'] of the {name} build does not say it was cold")
    if (inc.manifest.get("lineage") or {}).get("cold"):
        problems.append("lineage['cold'] of the incremental build says it was cold")
    # the dataset: equal to a --cold build over the same embedding cache (a vector is a function of its text
    # and the encoder fingerprint only through the cache: a real encoder's last bits follow its batches)
    if inc.manifest["content_hash"] != cached.manifest["content_hash"]:
        problems.append(f"content_hash differs: incremental {inc.manifest['content_hash'][:16]} vs cold over the "
                        f"same cache {cached.manifest['content_hash'][:16]}")
    same = inc.manifest["content_hash"] == cold.manifest["content_hash"]
    print(f"content_hash: incremental {inc.manifest['content_hash'][:16]}, cold over the cache "
          f"{cached.manifest['content_hash'][:16]}, cold from an empty cache {cold.manifest['content_hash'][:16]}"
          + ("" if same else f" ({_vector_difference(inc, cold)})"))
    before, after = _splits(month1), _splits(inc)
    moved = [a for a in before.keys() & after.keys() if before[a] != after[a]]
    print(f"splits: {len(before.keys() & after.keys()):,} articles in both months, {len(moved):,} moved")
    if moved:
        problems.append(f"{len(moved)} article(s) changed split from month 1 to month 2, e.g. {sorted(moved)[:5]}")
    for name, run in (("cold", cold), ("cold over the cache", cached)):
        if _splits(run) != after:
            problems.append(f"the {name} and incremental month-2 builds assign different splits")
    return problems


def _vector_difference(a: BuildRun, b: BuildRun) -> str:
    """Which data files of two builds differ, and by how much their vectors do (max |difference|)."""
    import numpy as np

    from lvm_core.contracts.layout import DatasetPaths
    from lvm_core.io.storage import file_digest

    pa_, pb = DatasetPaths(a.dataset), DatasetPaths(b.dataset)
    names = ("articles", "chunks", "embeddings", "splits", "split_registry", "sequences")
    try:
        differ = [n for n in names if file_digest(getattr(pa_, n)) != file_digest(getattr(pb, n))]
        va, vb = np.load(pa_.embeddings, mmap_mode="r"), np.load(pb.embeddings, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"files not compared: {exc}"
    worst = max((float(np.abs(va[s:s + 65536].astype(np.float32) - vb[s:s + 65536].astype(np.float32)).max())
                 for s in range(0, va.shape[0], 65536)), default=0.0) if va.shape == vb.shape else float("nan")
    return f"files that differ: {', '.join(differ) or 'none'}; vectors max |difference| {worst:.2e}"


def _real_encoder_rate(chunks_file: Path, n: int, spec: str | None) -> float | None:
    """Chunks/s of the real encoder on the first `n` chunk texts (after a warm-up), or None when n is 0."""
    if n <= 0:
        return None
    import os

    import pyarrow.parquet as pq

    os.environ.update({k: v for k, v in build_env().items() if k.startswith(("HF_", "PREFECT_"))})
    from lvm_core.data.embedding.encoder import load_encoder

    texts = pq.read_table(chunks_file, columns=["text"]).column("text").to_pylist()[:n]
    encoder = load_encoder(spec)
    encoder.encode(texts[:16])
    started = time.perf_counter()
    encoder.encode(texts)
    rate = len(texts) / (time.perf_counter() - started)
    print(f"real encoder {encoder.fingerprint.describe()}: {rate:.1f} chunks/s on {len(texts)} chunks (measured)")
    return rate


def _report(month1: BuildRun, inc: BuildRun, cold: BuildRun, rate: float | None) -> float:
    """Print costs, reuse and the ratio against its target; return the ratio (flow wall time)."""
    print(f"\n{'':<24}{'month 1':>12}{'incremental':>14}{'cold':>12}")
    runs = {"month 1": month1, "incremental": inc, "cold": cold}
    for label, get in (("chunks", lambda r: f"{r.chunks:,}"), ("flow wall s", lambda r: f"{r.flow_s:.1f}"),
                       ("CPU s (process tree)", lambda r: f"{r.cpu_s:.1f}"),
                       ("chunks encoded", lambda r: f"{(r.manifest.get('embedding') or {}).get('n_encoded', '?')}"),
                       ("peak RSS MiB", lambda r: f"{r.peak_rss_mib:.0f}")):
        print(f"{label:<24}" + "".join(f"{get(r):>{w}}" for r, w in zip(runs.values(), (12, 14, 12))))
    print()
    print_stages(runs)
    print(f"\nincremental lineage: {json.dumps((inc.manifest.get('lineage') or {}), default=str)[:600]}")
    ratio, cpu_ratio = inc.flow_s / cold.flow_s, inc.cpu_s / cold.cpu_s
    verdict = "PASS (moonshot)" if ratio <= MOONSHOT else "PASS" if ratio <= TARGET else "FAIL"
    print(f"\nmeasured: cost incremental/cold = {ratio:.3f} flow wall (target <= {TARGET}, moonshot <= {MOONSHOT}) "
          f"{verdict}; {cpu_ratio:.3f} by CPU time")
    if rate:
        enc = [int((r.manifest.get("embedding") or {}).get("n_encoded") or 0) for r in (inc, cold)]
        projected = (inc.flow_s + enc[0] / rate) / (cold.flow_s + enc[1] / rate)
        print(f"assumed: with the real encoder at {rate:.1f} chunks/s adding n_encoded/rate seconds, "
              f"incremental/cold ~ {projected:.3f} ({enc[0]:,} vs {enc[1]:,} chunks encoded)")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=10, help="copies of the sample in month 1 (10: ~1e5 chunks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of month 2's edits, additions and removals")
    parser.add_argument("--work", type=Path, help="folder for dumps, data folders and logs (kept; dumps reused)")
    parser.add_argument("--real-chunks", type=int, default=256, help="chunks for the real encoder's rate (0: skip)")
    parser.add_argument("--real-encoder", default=None, help="real encoder spec (default: the packaged default)")
    parser.add_argument("--encoder", default="hash-test",
                        help="encoder of the three builds: 'hash-test' (default: encoding is not the cost), "
                             "'shipped' (no --encoder: the build's default model, ~30 chunks/s on 2 cores, so use "
                             "--factor 1) or any --encoder spec")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    work.mkdir(parents=True, exist_ok=True)
    first, second, _ = _snapshots(work, args.factor, args.seed)
    a, b, c = work / "data-a", work / "data-b", work / "data-c"
    for folder in (a, b, c):
        shutil.rmtree(folder, ignore_errors=True)
    encoder = None if args.encoder == "shipped" else args.encoder
    month1 = run_build(first, a, work / "month1.log", encoder=encoder)
    shutil.copytree(a, b)
    shutil.copytree(a, c)
    # --cold rebuilds every step but reads the embedding cache (exact, keyed by text and fingerprint); the
    # baseline here is a full build, so B's cache goes and the cold month encodes every chunk itself
    shutil.rmtree(embedding_cache_dir(b), ignore_errors=True)
    inc = run_build(second, a, work / "month2-incremental.log", encoder=encoder)
    cold = run_build(second, b, work / "month2-cold.log", "--cold", encoder=encoder)
    # the same month --cold over month 1's embedding cache: what the incremental dataset must equal
    cached = run_build(second, c, work / "month2-cold-cached.log", "--cold", encoder=encoder)
    problems = _checks(month1, inc, cold, cached)
    ratio = _report(month1, inc, cold, _real_encoder_rate(Path(month1.dataset / "chunks.parquet"),
                                                          args.real_chunks, args.real_encoder))
    for problem in problems:
        print(f"FAIL: {problem}")
    return 0 if ratio <= TARGET and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
