"""Benchmark: cost of the row-index data path in training, and wall time of a sample-sized AMN run.

Run from the repository root:

    .venv/bin/python bench/bench_training.py [--threads 2] [--steps 300] [--rounds 5] [--epochs 20]

Synthetic data shaped like the embedded sample (MiniLM, ctx 5): ~11k unit vectors of 384 dims in ~106
articles (each chunk = normalised mix of the article's topic, the previous chunk and noise), windows built
per article with stride 1, split by article into ~8k train / ~1k val windows.

1. Data path: time per training step (gather + AMN forward/backward + clip + AdamW + schedule) with the
   row-index loader (`lvm_core.train.WindowDataset` + `make_loader`, `index_select` per batch) vs the
   same batches drawn from contexts pre-materialised as one `(n, ctx, D)` tensor. Batch 64, same model,
   same permutation; the two alternate for --rounds rounds of --steps steps and the minimum per-step time
   of each is kept. Target: loader / materialised <= 1.10.
2. Wall time of `lvm_core.train.train` for --epochs AMN epochs (D=384, h=256, m=512, batch 64,
   checkpoints written every epoch, patience high enough that all epochs run). Target: <= 300 s.

Threads: with `--threads 2` on two cores that other jobs also use, torch's OpenMP workers spin at the
barriers and a step can get 30-50x slower; the script warns when the load average exceeds the core
count, and `--threads 1` then gives the meaningful (and conservative, one-core) figure.

Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lvm_core.data.windows import SequenceSet  # noqa: E402
from lvm_core.models.builder import build_model, count_parameters  # noqa: E402
from lvm_core.models.config import ModelConfig
from lvm_core.train.batches import WindowDataset, as_vector_tensor, make_loader
from lvm_core.train.config import TrainConfig
from lvm_core.train.losses import compute_loss
from lvm_core.train.optim import make_optimizer, make_scheduler
from lvm_core.train.trainer import train

DATA_PATH_TARGET = 1.10
EPOCHS_TARGET_S = 300.0


def synthetic_sample(
    n_articles: int = 106, dim: int = 384, ctx: int = 5, seed: int = 0
) -> tuple[np.ndarray, SequenceSet, SequenceSet]:
    """~11k vectors in articles of 20..190 chunks; train/val windows split by article (85/11 articles)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 191, size=n_articles)
    blocks, art_of_row, pos_of_row = [], [], []
    for a, length in enumerate(lengths):
        topic = rng.standard_normal(dim)
        topic /= np.linalg.norm(topic)
        prev = topic
        rows = np.empty((length, dim), dtype=np.float32)
        for i in range(length):
            v = 0.5 * topic + 0.5 * prev + rng.standard_normal(dim) * (0.9 / math.sqrt(dim))
            prev = v / np.linalg.norm(v)
            rows[i] = prev
        blocks.append(rows)
        art_of_row.append(np.full(length, a))
        pos_of_row.append(np.arange(length))
    vectors = np.concatenate(blocks)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    order = rng.permutation(n_articles)
    split = {"train": order[:85], "val": order[85:96]}
    out = {}
    for name, arts in split.items():
        cr, tr, aid, tci = [], [], [], []
        for a in sorted(arts):
            for i in range(lengths[a] - ctx):
                cr.append(np.arange(starts[a] + i, starts[a] + i + ctx))
                tr.append(starts[a] + i + ctx)
                aid.append(a)
                tci.append(i + ctx)
        out[name] = SequenceSet(np.asarray(cr), np.asarray(tr), np.asarray(aid), np.asarray(tci))
    return vectors, out["train"], out["val"]


def bench_data_path(vectors: np.ndarray, seqs: SequenceSet, steps: int, rounds: int) -> dict[str, float]:
    """Min per-step seconds: row-index loader vs pre-materialised (n, ctx, D) tensor, same batches."""
    mc = ModelConfig(arch="amn", dim=vectors.shape[1], context_len=seqs.context_rows.shape[1])
    tc = TrainConfig(batch_size=64)
    torch.manual_seed(0)
    model = build_model(mc).train()
    optimizer = make_optimizer(model, tc)
    scheduler = make_scheduler(optimizer, tc, 10 * rounds * steps * 2 + 100)
    params = list(model.parameters())

    ds = WindowDataset.from_arrays(as_vector_tensor(vectors), seqs)
    ctx_all = torch.from_numpy(vectors[seqs.context_rows])  # the copy the row-index path avoids
    tgt_all = torch.from_numpy(vectors[seqs.target_rows])

    def step(ctx: torch.Tensor, tgt: torch.Tensor) -> None:
        loss = compute_loss(model(ctx), tgt, tc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()

    cpu: dict[str, list[float]] = {"loader": [], "materialised": []}

    def run_loader(seed: int) -> float:
        it = iter(make_loader(ds, 64, shuffle=True, seed=seed))
        done = 0
        c0, t0 = time.process_time(), time.perf_counter()
        while done < steps:
            try:
                ctx, tgt = next(it)
            except StopIteration:
                it = iter(make_loader(ds, 64, shuffle=True, seed=seed + 1000 + done))
                continue
            step(ctx, tgt)
            done += 1
        cpu["loader"].append((time.process_time() - c0) / steps)
        return (time.perf_counter() - t0) / steps

    def run_materialised(seed: int) -> float:
        # Same sampler => same permutation and batches as run_loader(seed).
        def batches(s: int):
            perm = torch.tensor(list(iter(make_loader(ds, 64, shuffle=True, seed=s).sampler)))
            for i in range(0, perm.shape[0], 64):
                yield perm[i : i + 64]

        it = batches(seed)
        done = 0
        c0, t0 = time.process_time(), time.perf_counter()
        while done < steps:
            try:
                idx = next(it)
            except StopIteration:
                it = batches(seed + 1000 + done)
                continue
            step(ctx_all[idx], tgt_all[idx])
            done += 1
        cpu["materialised"].append((time.process_time() - c0) / steps)
        return (time.perf_counter() - t0) / steps

    run_loader(999)  # warm-up (allocator, oneDNN kernels)
    run_materialised(999)
    cpu = {"loader": [], "materialised": []}
    loader_t, mat_t = [], []
    for r in range(rounds):
        if r % 2 == 0:
            loader_t.append(run_loader(r))
            mat_t.append(run_materialised(r))
        else:
            mat_t.append(run_materialised(r))
            loader_t.append(run_loader(r))
    return {
        "loader_step_s": min(loader_t),
        "materialised_step_s": min(mat_t),
        "ratio": min(loader_t) / min(mat_t),
        "loader_cpu_step_s": min(cpu["loader"]),
        "materialised_cpu_step_s": min(cpu["materialised"]),
        "cpu_ratio": min(cpu["loader"]) / min(cpu["materialised"]),
        "loader_all_s": loader_t,
        "materialised_all_s": mat_t,
        "materialised_bytes": int(ctx_all.numel() * 4),
        "vectors_bytes": int(vectors.nbytes),
    }


def bench_epochs(vectors: np.ndarray, train_seqs: SequenceSet, val_seqs: SequenceSet, epochs: int, threads: int) -> dict:
    mc = ModelConfig(arch="amn", dim=vectors.shape[1], context_len=train_seqs.context_rows.shape[1])
    tc = TrainConfig(epochs=epochs, batch_size=64, patience=epochs + 1, num_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(mc, tc, vectors, train_seqs, val_seqs, Path(tmp) / "ckpt")
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "epochs_run": len(result.history),
        "status": result.status,
        "n_parameters": result.n_parameters,
        "epoch_seconds": [round(m.epoch_seconds, 2) for m in result.history],
        "val_cosine": [round(m.val_cosine, 4) for m in result.history],
        "initial_val_cosine": result.initial_val_cosine,
        "best_val_cosine": result.best_val_cosine,
        "best_epoch": result.best_epoch,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target is for 2 cores)")
    ap.add_argument("--steps", type=int, default=300, help="training steps per timed round (data path)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per data path")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--skip-epochs", action="store_true", help="only the data-path measurement")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        print(f"WARNING: load average {load:.1f} > {cores} cores: timings are inflated"
              + ("; with several threads use --threads 1" if args.threads > 1 else ""))
    vectors, train_seqs, val_seqs = synthetic_sample()
    print(
        f"data: {vectors.shape[0]} vectors x {vectors.shape[1]}, {len(train_seqs)} train / {len(val_seqs)} val windows; "
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    mc = ModelConfig(arch="amn", dim=vectors.shape[1])
    print(f"AMN parameters at D={vectors.shape[1]}: {count_parameters(build_model(mc)):,}")
    report: dict = {
        "threads": args.threads,
        "load_average": load,
        "n_vectors": int(vectors.shape[0]),
        "n_train": len(train_seqs),
        "n_val": len(val_seqs),
    }

    dp = bench_data_path(vectors, train_seqs, args.steps, args.rounds)
    report["data_path"] = dp
    ok_dp = dp["ratio"] <= DATA_PATH_TARGET
    print(
        f"(a) per step, min of {args.rounds} x {args.steps}: row-index loader {dp['loader_step_s'] * 1e3:.2f} ms, "
        f"pre-materialised {dp['materialised_step_s'] * 1e3:.2f} ms -> ratio {dp['ratio']:.3f} "
        f"(target <= {DATA_PATH_TARGET}) {'PASS' if ok_dp else 'FAIL'}"
    )
    print(
        f"    process CPU per step (all threads): loader {dp['loader_cpu_step_s'] * 1e3:.2f} ms, "
        f"pre-materialised {dp['materialised_cpu_step_s'] * 1e3:.2f} ms -> ratio {dp['cpu_ratio']:.3f}"
    )
    print(
        f"    memory: pre-materialised contexts {dp['materialised_bytes'] / 2**20:.1f} MiB vs vectors "
        f"{dp['vectors_bytes'] / 2**20:.1f} MiB shared by the loader"
    )
    ok_ep = True
    if not args.skip_epochs:
        ep = bench_epochs(vectors, train_seqs, val_seqs, args.epochs, args.threads)
        report["epochs"] = ep
        ok_ep = ep["wall_s"] <= EPOCHS_TARGET_S and ep["epochs_run"] == args.epochs
        print(
            f"(b) {ep['epochs_run']} AMN epochs (batch 64, checkpoint each epoch): {ep['wall_s']:.1f} s "
            f"(target <= {EPOCHS_TARGET_S:.0f} s) {'PASS' if ok_ep else 'FAIL'}; "
            f"per epoch {min(ep['epoch_seconds']):.2f}..{max(ep['epoch_seconds']):.2f} s; "
            f"val cosine {ep['initial_val_cosine']:.4f} untrained -> {ep['best_val_cosine']:.4f} best (epoch {ep['best_epoch']})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok_dp and ok_ep else 1


if __name__ == "__main__":
    sys.exit(main())
