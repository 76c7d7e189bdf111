"""Benchmark: the SQLite embedding cache against the previous in-memory shard design, at scale.

Both caches get the same N synthetic float32 vectors (sha1 hex hashes, like chunk hashes) in batches of 512,
as a build flushes them; then a fresh process opens each cache and looks up random batches of 512 keys
(half present, half absent). Each phase runs in its own child process so its peak RSS is its own.

Run from the repository root:

    .venv/bin/python bench/bench_cache.py [--n 1000000] [--dim 384] [--lookups 102400] [--json out.json]

Target: the lookup process's RSS growth (peak minus RSS after imports) is <= 0.10 x the old design's.
Throughput ratios are printed beside it. Exit status 1 when the target fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.io import storage

RSS_TARGET = 0.10
BATCH = 512


class LegacyShardCache:
    """The previous design, kept here only as the baseline: append-only `shard-<ns>-<uuid>.npz` files, all
    loaded into one in-memory matrix + dict index on first use (fingerprint checks left out)."""

    _SHARD_RE = re.compile(r"^shard-[0-9]+-[0-9a-f]{32}\.npz$")

    def __init__(self, root: Path, fingerprint: EncoderFingerprint):
        self.fingerprint = fingerprint
        self.dir = Path(root) / fingerprint.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []
        self._matrix = np.zeros((0, fingerprint.dim), dtype=np.float32)
        self._seen_shards: set[str] = set()

    def _refresh(self) -> None:
        names = sorted(n for n in os.listdir(self.dir) if n not in self._seen_shards and self._SHARD_RE.match(n))
        for name in names:
            with np.load(self.dir / name, allow_pickle=False) as z:
                self._add_block(z["hashes"], z["vectors"])
            self._seen_shards.add(name)

    def _add_block(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        base = self._n_rows
        keep = []
        for i, h in enumerate(hashes.tolist()):
            if h not in self._index:
                self._index[h] = base + len(keep)
                keep.append(i)
        if len(keep) == len(hashes):
            self._blocks.append(vectors)
        elif keep:
            self._blocks.append(vectors[np.asarray(keep)])

    @property
    def _n_rows(self) -> int:
        return self._matrix.shape[0] + sum(b.shape[0] for b in self._blocks)

    def _vectors(self) -> np.ndarray:
        if self._blocks:
            self._matrix = np.concatenate([self._matrix, *self._blocks], axis=0)
            self._blocks = []
        return self._matrix

    def get_many(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._refresh()
            index = self._index
            rows = np.fromiter((index.get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))
            found = rows >= 0
            if len(hashes) and found.all():
                return self._vectors()[rows], found
            out = np.zeros((len(hashes), self.fingerprint.dim), dtype=np.float32)
            if found.any():
                out[found] = self._vectors()[rows[found]]
        return out, found

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> int:
        with self._lock:
            self._refresh()
            seen: set[str] = set()
            keep = []
            for i, h in enumerate(hashes):
                if h not in self._index and h not in seen:
                    seen.add(h)
                    keep.append(i)
            if not keep:
                return 0
            sel = np.asarray(keep)
            new_hashes, new_vectors = np.asarray(hashes, dtype=str)[sel], vectors[sel]
            name = f"shard-{time.time_ns()}-{uuid.uuid4().hex}.npz"
            with storage.atomic_path(self.dir / name) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, hashes=new_hashes, vectors=new_vectors)
            self._add_block(new_hashes, new_vectors)
            self._seen_shards.add(name)
            return len(keep)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)


DESIGNS = {"old": LegacyShardCache, "new": EmbeddingCache}


def _hashes(start: int, stop: int) -> list[str]:
    return [hashlib.sha1(str(i).encode()).hexdigest() for i in range(start, stop)]


def _batch_vectors(start: int, n: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(start).standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _phase(design: str, phase: str, root: str, n: int, dim: int, n_lookups: int, out: str) -> None:
    """One phase in its own process: write N vectors, or open the cache and look keys up."""
    fp = EncoderFingerprint("bench/synthetic", "b" * 64, dim)
    rss0 = psutil.Process().memory_info().rss
    c0, t0 = time.process_time(), time.perf_counter()
    first_s = steady_s = None
    cache = DESIGNS[design](Path(root), fp)
    if phase == "insert":
        added = 0
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            added += cache.put_many(_hashes(start, stop), _batch_vectors(start, stop - start, dim))
        assert added == n, (design, added, n)
        checked = n
    else:
        rng = np.random.default_rng(7)
        hits = 0
        for b in range(n_lookups // BATCH):
            present = rng.integers(0, n, BATCH // 2)
            keys = [hashlib.sha1(str(i).encode()).hexdigest() for i in present.tolist()]
            keys += [f"absent-{b}-{j}" for j in range(BATCH - len(keys))]
            vecs, found = cache.get_many(keys)
            if b == 0:
                first_s = time.perf_counter() - t0  # includes opening the cache
                expect = _batch_vectors(int(present[0]) // BATCH * BATCH, BATCH, dim)[int(present[0]) % BATCH]
                assert np.array_equal(vecs[0], expect), "cached vector differs from the one written"
            hits += int(found.sum())
        assert hits == (n_lookups // BATCH) * (BATCH // 2), (design, hits)
        checked = (n_lookups // BATCH) * BATCH
        steady_s = time.perf_counter() - t0 - first_s
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out).write_text(json.dumps({
        "design": design, "phase": phase, "items": checked, "wall_s": wall, "cpu_s": cpu,
        "per_s": checked / wall, "first_lookup_s": first_s,
        "steady_per_s": (checked - BATCH) / steady_s if steady_s else None, "rss_start": rss0, "rss_peak": peak,
        "rss_growth": peak - rss0,
    }))


def _run_phase(design: str, phase: str, root: Path, args: argparse.Namespace) -> dict:
    out = root / f"{design}-{phase}.json"
    proc = multiprocessing.get_context("spawn").Process(
        target=_phase, args=(design, phase, str(root / design), args.n, args.dim, args.lookups, str(out))
    )
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{design} {phase} failed with exit code {proc.exitcode}")
    return json.loads(out.read_text())


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the cache")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--lookups", type=int, default=200 * BATCH, help="keys looked up (half present)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the caches go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=args.workdir))
    vec_bytes = args.n * args.dim * 4
    print(f"N = {args.n:,} vectors x {args.dim} float32 = {vec_bytes / 2**30:.2f} GiB; lookups {args.lookups:,} "
          f"in batches of {BATCH}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {root}")
    results: dict[str, dict[str, dict]] = {}
    try:
        for design in ("old", "new"):
            results[design] = {ph: _run_phase(design, ph, root, args) for ph in ("insert", "lookup")}
            results[design]["disk_bytes"] = _du(root / design)
            r = results[design]
            print(f"{design}: insert {r['insert']['per_s']:,.0f}/s, lookup {r['lookup']['per_s']:,.0f}/s, "
                  f"first lookup {r['lookup']['first_lookup_s']:.2f} s, lookup RSS growth "
                  f"{r['lookup']['rss_growth'] / 2**20:,.0f} MiB", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    old, new = results["old"], results["new"]
    mib = 2**20
    print(f"\n{'measurement':<44}{'old (in-memory)':>18}{'new (SQLite)':>16}{'new/old':>10}")
    rows = [
        ("insert, vectors/s (wall)", old["insert"]["per_s"], new["insert"]["per_s"], "{:,.0f}"),
        ("insert, process peak RSS MiB", old["insert"]["rss_peak"] / mib, new["insert"]["rss_peak"] / mib, "{:,.0f}"),
        ("open + first lookup of 512 keys, s", old["lookup"]["first_lookup_s"], new["lookup"]["first_lookup_s"],
         "{:.3f}"),
        ("lookup, keys/s after the first batch (wall)", old["lookup"]["steady_per_s"],
         new["lookup"]["steady_per_s"], "{:,.0f}"),
        ("lookup, keys/s incl. open (wall)", old["lookup"]["per_s"], new["lookup"]["per_s"], "{:,.0f}"),
        ("lookup, RSS growth MiB", old["lookup"]["rss_growth"] / mib, new["lookup"]["rss_growth"] / mib, "{:,.1f}"),
        ("lookup, process peak RSS MiB", old["lookup"]["rss_peak"] / mib, new["lookup"]["rss_peak"] / mib, "{:,.0f}"),
        ("on disk, MiB", old["disk_bytes"] / mib, new["disk_bytes"] / mib, "{:,.0f}"),
    ]
    for name, a, b, fmt in rows:
        print(f"{name:<44}{fmt.format(a):>18}{fmt.format(b):>16}{b / a:>10.3f}")
    ratio = new["lookup"]["rss_growth"] / old["lookup"]["rss_growth"]
    ok = ratio <= RSS_TARGET
    print(f"\nlookup RSS growth new/old = {ratio:.4f} (target <= {RSS_TARGET}): {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "dim": args.dim, "lookups": args.lookups, **results,
                                         "rss_ratio": ratio, "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
