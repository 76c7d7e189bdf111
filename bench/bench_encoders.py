"""Benchmark: ONNX Runtime int8 encoder vs sentence-transformers fp32 on the same real chunks (CUDA: fp16 too).

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_encoders.py [--n-chunks 1000] [--repeats 2] [--threads 2]

Targets: int8 chunks/s >= 2.5x fp32 (wall; the CPU-time ratio is printed beside it) and mean cosine to
fp32 >= 0.99 over the same chunks. The export (torch.onnx.export + quantize_dynamic) is timed on its
own, into a fresh cache folder: it is a one-off per weights digest. Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from lvm_core.data.embedding.encoder import load_encoder  # noqa: E402

SPEED_TARGET = 2.5
AGREEMENT_TARGET = 0.99


def load_texts(n_chunks: int) -> list[str]:
    """The first `n_chunks` chunk texts of the embedded enwiki sample (the real ingest + chunking)."""
    from lvm_core.data.chunking import iter_chunks
    from lvm_core.data.ingest.sources import read_articles

    return [str(row["text"]) for row in islice(iter_chunks(read_articles("sample")), n_chunks)]


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds over all threads, result) of `fn()`."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)
    return {"mean": float(cos.mean()), "median": float(np.median(cos)), "min": float(cos.min())}


def compare(name: str, fast, reference, texts: list[str], repeats: int, batch_size: int) -> dict:
    """Alternate reference and fast encodes `repeats` times (min kept) and compare their vectors."""
    for enc in (reference, fast):
        enc.encode(texts[:32], batch_size=batch_size)  # warm-up: allocation, kernel choice
    runs: dict[str, list[tuple[float, float]]] = {"reference": [], name: []}
    vectors = {}
    for r in range(repeats):
        for key, enc in (("reference", reference), (name, fast)):
            wall, cpu, vectors[key] = timed(lambda enc=enc: enc.encode(texts, batch_size=batch_size))
            runs[key].append((wall, cpu))
            print(f"  round {r + 1} {key:>9}: {wall:7.2f} s wall, {cpu:7.2f} s CPU, {len(texts) / wall:6.1f} chunks/s")
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    agree = cosines(vectors[name], vectors["reference"])
    return {
        "n_chunks": len(texts),
        "reference_seconds": best["reference"][0],
        "reference_cpu_seconds": best["reference"][1],
        f"{name}_seconds": best[name][0],
        f"{name}_cpu_seconds": best[name][1],
        "reference_chunks_per_s": len(texts) / best["reference"][0],
        f"{name}_chunks_per_s": len(texts) / best[name][0],
        "speedup_wall": best["reference"][0] / best[name][0],
        "speedup_cpu": best["reference"][1] / best[name][1],
        "cosine": agree,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-chunks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds per encoder, alternated; min is kept")
    ap.add_argument("--batch-size", type=int, default=64, help="fp32/fp16 batch size (int8 runs one text per call)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: OMP_NUM_THREADS or all CPUs)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import onnxruntime
    import torch

    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {onnxruntime.__version__}, {cpus} CPUs, load average {load:.1f}")
    if load > cpus:
        print(f"WARNING: load average {load:.1f} exceeds {cpus} CPUs: wall times are unreliable, "
              "judge by the CPU-time ratio")
    texts = load_texts(args.n_chunks)
    words = [len(t.split()) for t in texts]
    print(f"chunks: {len(texts)} of the embedded enwiki sample, {np.mean(words):.1f} words each on average")
    results: dict = {"load_average_start": load, "cpus": cpus}

    reference = load_encoder("@torch", device="cpu")
    cache = Path(tempfile.mkdtemp(prefix="bench-encoders-"))
    try:
        wall, _, int8 = timed(lambda: load_encoder("@onnx-int8", cache_dir=cache, threads=args.threads))
        export = json.loads(next(cache.glob("onnx-int8-*/export.json")).read_text())
        print(f"int8 export (one-off): torch.onnx.export {export['seconds_export']:.1f} s, with quantisation "
              f"{export['seconds_total']:.1f} s; load incl. export and the 256-chunk agreement check "
              f"{wall:.1f} s wall; threads {int8.threads}")
        print(f"agreement check at load: {int8.agreement}")
        results["export"] = {**export, "load_seconds_incl_export_and_check": wall, "check": int8.agreement}
        print("fp32 (sentence-transformers, CPU) vs onnx-int8:")
        res = compare("int8", int8, reference, texts, args.repeats, args.batch_size)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    results["int8_vs_fp32"] = res
    c = res["cosine"]
    speed_ok = res["speedup_wall"] >= SPEED_TARGET
    agree_ok = c["mean"] >= AGREEMENT_TARGET
    print(f"fp32 {res['reference_chunks_per_s']:.1f} chunks/s, int8 {res['int8_chunks_per_s']:.1f} chunks/s: "
          f"int8/fp32 = {res['speedup_wall']:.2f}x wall ({'PASS' if speed_ok else 'FAIL'}, target >= {SPEED_TARGET}), "
          f"{res['speedup_cpu']:.2f}x CPU time")
    print(f"cosine int8 vs fp32 over {len(texts)} chunks: mean {c['mean']:.5f}, median {c['median']:.5f}, "
          f"min {c['min']:.5f} ({'PASS' if agree_ok else 'FAIL'}, target mean >= {AGREEMENT_TARGET})")

    ok = speed_ok and agree_ok
    if torch.cuda.is_available():
        print("CUDA: fp32 vs fp16 (torch):")
        gpu32 = load_encoder("@torch", device="cuda")
        gpu16 = load_encoder("@torch-fp16", device="cuda")
        gres = compare("fp16", gpu16, gpu32, texts, args.repeats, args.batch_size)
        results["cuda_fp16_vs_fp32"] = gres
        g = gres["cosine"]
        print(f"CUDA fp32 {gres['reference_chunks_per_s']:.1f} chunks/s, fp16 {gres['fp16_chunks_per_s']:.1f} "
              f"chunks/s: {gres['speedup_wall']:.2f}x; cosine mean {g['mean']:.5f}, median {g['median']:.5f}, "
              f"min {g['min']:.5f}")
        ok = ok and g["mean"] >= AGREEMENT_TARGET
    else:
        print("no CUDA device: fp16 not measured")
    results["load_average_end"] = os.getloadavg()[0]
    print(f"load average at the end {results['load_average_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
