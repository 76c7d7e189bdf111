"""Writes tests/data/legacy/ with the code of commit 6529d6c (before checkpoints became model folders).

Run with that commit's checkout on the path: `python make_legacy.py OUT_DIR`. It writes
- vectors.npy, windows.npz: 4 random articles of 12 unit vectors (dim 8), windows of 3 chunks
- checkpoint/{best,last}: a tiny AMN stopped after epoch 1 of 3 (format lvm-checkpoint/1)
- model/: the registry model folder (weights.safetensors, config.json, encoder.json)
- mlflow_model/: the same model as MLflow logged it into the registry (MLmodel + pyfunc_model.py + artifacts)
- expected.json: what that code predicted from each of them, and the history of the uninterrupted run
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from lvm_core.embedding import EncoderFingerprint
from lvm_core.models import ModelConfig
from lvm_core.registry import configure_tracking, load_model_dir, log_and_register_model, save_model_dir
from lvm_core.sequences import SequenceSet
from lvm_core.training import TrainConfig, load_checkpoint, train

DIM, CTX = 8, 3
MODEL = ModelConfig(arch="amn", dim=DIM, context_len=CTX, hidden=8, mlp_hidden=8, dropout=0.1)
TRAIN = TrainConfig(epochs=3, batch_size=8, lr=3e-3, num_threads=1, patience=5)
FP = EncoderFingerprint(model_name="legacy-fixture-encoder", weights_digest="0" * 16, dim=DIM)


def windows(first_article: int, n_articles: int, length: int, row0: int) -> SequenceSet:
    ctx, tgt, art, tci = [], [], [], []
    for a in range(n_articles):
        base = row0 + a * length
        for i in range(length - CTX):
            ctx.append(np.arange(base + i, base + i + CTX))
            tgt.append(base + i + CTX)
            art.append(first_article + a)
            tci.append(i + CTX)
    return SequenceSet(np.asarray(ctx, dtype=np.int64), np.asarray(tgt, dtype=np.int64),
                       np.asarray(art, dtype=np.int64), np.asarray(tci, dtype=np.int64))


class Stop(Exception):
    pass


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((48, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    train_seqs, val_seqs = windows(0, 3, 12, 0), windows(3, 1, 12, 36)
    np.save(out / "vectors.npy", vectors)
    np.savez(out / "windows.npz", **{f"{s}_{k}": getattr(q, k) for s, q in (("train", train_seqs), ("val", val_seqs))
                                     for k in ("context_rows", "target_rows", "article_ids", "target_chunk_index")})
    contexts = vectors[val_seqs.context_rows]

    with tempfile.TemporaryDirectory() as tmp:
        reference = train(MODEL, TRAIN, vectors, train_seqs, val_seqs, Path(tmp) / "ref")

        def stop(m):
            raise Stop

        try:
            train(MODEL, TRAIN, vectors, train_seqs, val_seqs, Path(tmp) / "run", on_epoch_end=stop)
        except Stop:
            pass
        shutil.copytree(Path(tmp) / "run", out / "checkpoint")
    ckpt_model, meta = load_checkpoint(out / "checkpoint" / "last")
    import torch

    with torch.no_grad():
        ckpt_pred = ckpt_model.eval()(torch.from_numpy(contexts)).numpy()

    save_model_dir(reference.model, MODEL, FP, out / "model")
    model_pred = load_model_dir(out / "model").predict(contexts)

    with tempfile.TemporaryDirectory() as tmp:
        configure_tracking(Path(tmp))
        with mlflow.start_run() as run:
            info = log_and_register_model(reference.model, MODEL, FP, "lvm-legacy", run_id=run.info.run_id)
        local = mlflow.artifacts.download_artifacts(artifact_uri=info.uri, dst_path=str(Path(tmp) / "dl"))
        pyfunc_pred = np.asarray(mlflow.pyfunc.load_model(local).predict(contexts))
        shutil.copytree(local, out / "mlflow_model")

    expected = {
        "written_by": "lvm_core at commit 6529d6c",
        "checkpoint_epoch": meta["epoch"],
        "checkpoint_last_predictions": ckpt_pred.tolist(),
        "model_predictions": model_pred.tolist(),
        "mlflow_model_predictions": pyfunc_pred.tolist(),
        "uninterrupted_history": [m.to_dict() for m in reference.history],
        "uninterrupted_best_epoch": reference.best_epoch,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
