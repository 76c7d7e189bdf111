"""Benchmark: dataset analysis on a memory-mapped vector bank vs the exact in-memory path.

Run from the repository root:

    .venv/bin/python bench/bench_analysis_scale.py [--n-vectors 1000000] [--compare-n 200000] [--dim 384]
        [--dtypes float16,float32] [--queries 1000] [--eval-fraction 0.005] [--json out.json]

A synthetic chunk table (articles of 5..60 chunks, unit vectors drifting around a topic per article,
split by article into train / val; a few val rows planted as copies of train rows) is written once per
dtype as `embeddings.npy` + `encoder.json` through a memory map. The analysis, each in a fresh child
process, is:

1. `vector_files.load_embeddings` (contract check, streamed);
2. `coherence.article_coherence`;
3. `leakage.scan_leakage` (text-hash check + near-duplicate scan of every val row against all train rows);
4. `retrieval.ChunkBank.search` of `--queries` queries, k = 10.

Modes: **memmap** — the file stays on disk, the functions stream it block by block and pick their backend
by size (exact below `retrieval.FAISS_AUTO_THRESHOLD` rows, blockwise FAISS above); **in-memory** — the
baseline: the whole file read into one float32 array, then the same functions forced to the exact numpy
path. Both run at `--compare-n` (where both fit) and the memmap mode alone at `--n-vectors`.

Peak memory is sampled from /proc/self/status every 5 ms: RssAnon (private memory) above its value after
the imports is what the analysis allocates ("analysis RssAnon"); VmHWM is printed too (it also counts
clean page-cache pages of the mapped file, which the OS can drop). Printed: time and analysis-RssAnon
ratios memmap / in-memory at the comparison size. Targets: analysis RssAnon memmap / in-memory <= 0.5;
memmap agrees with in-memory (same leak flags, coherence within float16 rounding, same top-1 rows for
>= 99 % of queries). Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MEMORY_TARGET = 0.5
TOP1_AGREEMENT_TARGET = 0.99


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """Max of RssAnon over the life of the context (sampled), and VmHWM at its end."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak_anon_kib, self._stop = every_s, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kib = max(self.peak_anon_kib, _status_kib("RssAnon"))
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self.base_anon_kib = _status_kib("RssAnon")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kib = max(self.peak_anon_kib, _status_kib("RssAnon"))
        self.hwm_kib = _status_kib("VmHWM")


def layout(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """article_ids, chunk_index, per-article topic index for n rows (articles of 5..60 chunks)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 61, size=n // 5 + 1)
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, n)) + 1
    lengths = lengths[:k].copy()
    lengths[-1] -= int(ends[k - 1] - n)
    aids = np.repeat(np.arange(k, dtype=np.int64) + 1, lengths)
    cidx = (np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.int32)
    return aids, cidx, np.repeat(np.arange(k), lengths)


def row_split(aids: np.ndarray, eval_fraction: float, seed: int = 1) -> np.ndarray:
    arts = np.unique(aids)
    is_eval = np.random.default_rng(seed).random(arts.size) < eval_fraction
    return np.where(is_eval[np.searchsorted(arts, aids)], "val", "train")


def planted(split: np.ndarray, n_plant: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(val rows, train rows) pairs: each val row gets a copy of its train row's vector and text hash."""
    ev, tr = np.flatnonzero(split == "val"), np.flatnonzero(split == "train")
    m = min(n_plant, ev.size, tr.size)
    return ev[np.linspace(0, ev.size - 1, m).astype(int)], tr[np.linspace(0, tr.size - 1, m).astype(int)]


def text_hashes(n: int, split: np.ndarray) -> object:
    import polars as pl

    codes = np.arange(n, dtype=np.int64)
    ev, tr = planted(split)
    codes[ev] = codes[tr]
    return pl.Series("text_hash", codes).cast(pl.Utf8)


def fingerprint(dim: int):
    from lvm_core.data.embedding.fingerprint import EncoderFingerprint

    return EncoderFingerprint(model_name="bench/synthetic", weights_digest="cd" * 32, dim=dim)


def write_bank(folder: Path, n: int, dim: int, dtype: str, eval_fraction: float, block: int = 1 << 15) -> None:
    """embeddings.npy (+ encoder.json) of n unit rows, written block by block through a memory map."""
    from lvm_core.contracts.layout import EMBEDDINGS_FILE, ENCODER_FILE, VECTOR_DTYPE_KEY
    from lvm_core.io import storage

    folder.mkdir(parents=True, exist_ok=True)
    aids, _, topic_of_row = layout(n)
    rng = np.random.default_rng(7)
    topics = rng.standard_normal((int(topic_of_row.max()) + 1, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(folder / EMBEDDINGS_FILE, mode="w+", dtype=np.dtype(dtype), shape=(n, dim))
    for s in range(0, n, block):
        e = min(n, s + block)
        x = topics[topic_of_row[s:e]] + 1.5 * rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    ev, tr = planted(row_split(aids, eval_fraction))
    out[ev] = out[tr]
    out.flush()
    del out
    storage.write_json(folder / ENCODER_FILE, {**fingerprint(dim).to_dict(), VECTOR_DTYPE_KEY: dtype})


def analyse(folder: Path, mode: str, n_queries: int, eval_fraction: float) -> dict:
    """One analysis run (in this process); returns timings, peaks and the results to compare."""
    from lvm_core.data import coherence, leakage
    from lvm_core.data.retrieval.bank import ChunkBank
    from lvm_core.data.vector_files import load_embeddings

    out: dict = {"mode": mode}
    with PeakSampler() as peak:
        t0 = time.perf_counter()
        vectors, _ = load_embeddings(folder, mmap=(mode == "memmap"))
        if mode == "in-memory":
            vectors = np.asarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        aids, cidx, _ = layout(n)
        split = row_split(aids, eval_fraction)
        hashes = text_hashes(n, split)
        out["load_s"] = time.perf_counter() - t0
        exact = mode == "in-memory"

        t = time.perf_counter()
        coh = coherence.article_coherence(vectors, aids, cidx)
        out["coherence_s"] = time.perf_counter() - t

        t = time.perf_counter()
        scan = leakage.scan_leakage(aids, hashes, vectors, split, use_faiss=False if exact else None)
        out["leakage_s"] = time.perf_counter() - t

        t = time.perf_counter()
        bank = ChunkBank(vectors, use_faiss=False if exact else None)
        q_rows = np.random.default_rng(3).choice(n, size=n_queries, replace=False)
        noise = np.random.default_rng(4).standard_normal((n_queries, dim), dtype=np.float32) * 0.05
        queries = np.asarray(vectors[np.sort(q_rows)], dtype=np.float32) + noise
        _, rows = bank.search(queries, 10)
        out["retrieval_s"] = time.perf_counter() - t
        out["total_s"] = time.perf_counter() - t0
    out.update(
        n=int(n), dim=int(dim), dtype=str(vectors.dtype), peak_rss_anon_mib=peak.peak_anon_kib / 1024,
        analysis_anon_mib=(peak.peak_anon_kib - peak.base_anon_kib) / 1024,
        vm_hwm_mib=peak.hwm_kib / 1024, leakage_backend=scan.backend, bank_backend=bank.backend,
        n_eval=int((split == "val").sum()), near_leaks=int(scan.near_leak.sum()), text_leaks=int(scan.text_leak.sum()),
    )
    out["_coherence"] = coh["coherence"].fill_null(np.nan).to_numpy().tolist()
    out["_near_leak_rows"] = np.flatnonzero(scan.near_leak).tolist()
    out["_top1"] = rows[:, 0].tolist()
    return out


def run_child(folder: Path, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), "--child-mode", mode,
           "--queries", str(args.queries), "--eval-fraction", str(args.eval_fraction)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} on {folder} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-vectors", type=int, default=1_000_000)
    p.add_argument("--compare-n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--dtypes", default="float16,float32")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--eval-fraction", type=float, default=0.005)
    p.add_argument("--workdir", default=None, help="where to write the banks (default: a temp folder, removed)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(analyse(Path(args.child), args.child_mode, args.queries, args.eval_fraction)))
        return 0

    import shutil

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-analysis-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    results: list[dict] = []
    ok = True
    try:
        for dtype in dtypes:
            small = root / f"{args.compare_n}-{dtype}"
            write_bank(small, args.compare_n, args.dim, dtype, args.eval_fraction)
            base = run_child(small, "in-memory", args)
            mm = run_child(small, "memmap", args)
            coh_diff = float(np.nanmax(np.abs(np.asarray(mm["_coherence"]) - np.asarray(base["_coherence"]))))
            same_leaks = mm["_near_leak_rows"] == base["_near_leak_rows"]
            top1 = float(np.mean(np.asarray(mm["_top1"]) == np.asarray(base["_top1"])))
            mem_ratio = mm["analysis_anon_mib"] / base["analysis_anon_mib"]
            time_ratio = mm["total_s"] / base["total_s"]
            passed = mem_ratio <= MEMORY_TARGET and same_leaks and top1 >= TOP1_AGREEMENT_TARGET and coh_diff < 1e-5
            ok &= passed
            results += [base, mm]
            print(f"\n== {args.compare_n:,} x {args.dim} {dtype} on disk: memmap vs in-memory (float32, exact) ==")
            for r in (base, mm):
                _print_row(r)
            print(f"ratios memmap / in-memory: time {time_ratio:.3f}, analysis RssAnon {mem_ratio:.3f} "
                  f"(target <= {MEMORY_TARGET}); same near-duplicate rows: {same_leaks}; top-1 agreement {top1:.4f}; "
                  f"max |coherence diff| {coh_diff:.2e} -> {'PASS' if passed else 'FAIL'}")
            shutil.rmtree(small, ignore_errors=True)
            if args.n_vectors > args.compare_n:
                big = root / f"{args.n_vectors}-{dtype}"
                write_bank(big, args.n_vectors, args.dim, dtype, args.eval_fraction)
                r = run_child(big, "memmap", args)
                results.append(r)
                file_mib = args.n_vectors * args.dim * np.dtype(dtype).itemsize / 2**20
                print(f"\n== {args.n_vectors:,} x {args.dim} {dtype} on disk ({file_mib:,.0f} MiB), memmap only ==")
                _print_row(r)
                f32_mib = args.n_vectors * args.dim * 4 / 2**20
                print(f"analysis RssAnon / float32 matrix ({f32_mib:,.0f} MiB) = {r['analysis_anon_mib'] / f32_mib:.3f}")
                shutil.rmtree(big, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in results], indent=2))
    print("\nOVERALL", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def _print_row(r: dict) -> None:
    print(f"  {r['mode']:9s} {r['dtype']:7s} load {r['load_s']:6.2f}s  coherence {r['coherence_s']:6.2f}s  "
          f"leakage {r['leakage_s']:7.2f}s ({r['leakage_backend']}, {r['n_eval']} val rows, {r['near_leaks']} near / "
          f"{r['text_leaks']} text leaks)  retrieval {r['retrieval_s']:6.2f}s ({r['bank_backend']})  "
          f"total {r['total_s']:7.2f}s  analysis RssAnon +{r['analysis_anon_mib']:.1f} MiB (peak {r['peak_rss_anon_mib']:.1f})  "
          f"VmHWM {r['vm_hwm_mib']:.1f} MiB")


if __name__ == "__main__":
    raise SystemExit(main())
