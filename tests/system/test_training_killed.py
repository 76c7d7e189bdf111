"""Training killed with SIGKILL in a subprocess (the trainer alone, then `lvm train`) resumes from its last
checkpoint to the same end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lvm_core.contracts.layout import CHECKPOINT_META_FILE
from lvm_core.data.windows import SequenceSet
from lvm_core.train.trainer import train
from tests.fixtures.paths import REPO as REPO_ROOT
from tests.fixtures.training import FAST, MODEL, training_data


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, SequenceSet, SequenceSet]:
    return training_data()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from lvm_core.data.windows import SequenceSet
    from lvm_core.models.config import ModelConfig
    from lvm_core.train.config import TrainConfig
    from lvm_core.train.trainer import train

    d = Path(sys.argv[1])
    z = np.load(d / "seqs.npz", allow_pickle=False)
    split = lambda s: SequenceSet(*(z[f"{s}_{k}"] for k in ("context_rows", "target_rows", "article_ids", "target_chunk_index")))
    def slow(epoch, step, ctx, tgt):
        # Epoch 3 crawls, so the parent's SIGKILL lands after the epoch-2 checkpoint and before epoch 3's.
        time.sleep(0.5 if epoch >= 3 else 0.0)
    train(ModelConfig.model_validate_json((d / "model.json").read_text()),
          TrainConfig.model_validate_json((d / "train.json").read_text()),
          np.load(d / "vectors.npy"), split("train"), split("val"), d / "ckpt", fault_hook=slow)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = FAST.model_copy(update={"epochs": 5})
    np.save(tmp_path / "vectors.npy", vectors)
    arrays = {}
    for split, s in (("train", train_seqs), ("val", val_seqs)):
        for k in ("context_rows", "target_rows", "article_ids", "target_chunk_index"):
            arrays[f"{split}_{k}"] = getattr(s, k)
    np.savez(tmp_path / "seqs.npz", **arrays)
    (tmp_path / "model.json").write_text(MODEL.model_dump_json())
    (tmp_path / "train.json").write_text(cfg.model_dump_json())

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LVM_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    meta_path = tmp_path / "ckpt" / "last" / CHECKPOINT_META_FILE
    deadline = time.monotonic() + 120
    try:
        while True:
            if meta_path.is_file() and json.loads(meta_path.read_text())["epoch"] >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"training subprocess exited early: {proc.communicate()[1].decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no epoch-2 checkpoint within 120 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(meta_path.read_text())["epoch"] == 2

    seen: list[int] = []
    resumed = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "ckpt", resume=True,
                    on_epoch_end=lambda m: seen.append(m.epoch))
    assert seen == [3, 4, 5]
    assert resumed.status == "completed" and resumed.resumed_from_epoch == 2
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4, 5]
    assert json.loads(meta_path.read_text())["epoch"] == 5
    # Same trajectory as a run that was never killed.
    reference = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "reference")
    for a, b in zip(reference.history, resumed.history):
        assert a.val_cosine == pytest.approx(b.val_cosine, abs=1e-5)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)


# Killed once its second epoch is checkpointed: the epochs after it are what the resume must finish.
EPOCHS = 5


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(small_dataset: Path, tmp_path: Path, prefect_harness):
    """Kill `lvm train` mid-run (SIGKILL, as a lost worker would), then `--resume` finishes the same run."""
    from flows.train_model import train_model
    from lvm_core.train.checkpoint import read_checkpoint_meta

    data_dir = tmp_path / "data"
    args = ["--data", str(small_dataset), "--epochs", str(EPOCHS), "--patience", "50", "--data-dir", str(data_dir)]
    log = tmp_path / "train.log"
    # its temporary Prefect API may take long to start while the other test workers keep both cores busy
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "train", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    killed_after = None
    try:
        while time.time() < deadline and proc.poll() is None:
            metas = list((data_dir / "models" / "checkpoints").glob("*/last/meta.json"))
            if metas:
                epoch = json.loads(metas[0].read_text())["epoch"]
                if epoch >= 2:
                    proc.send_signal(signal.SIGKILL)
                    killed_after = epoch
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_after is not None, (f"training finished or never checkpointed before it could be killed "
                                      f"(exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    ckpt = next((data_dir / "models" / "checkpoints").glob("*/last")).parent
    done = read_checkpoint_meta(ckpt / "last")["epoch"]
    assert 2 <= done < EPOCHS

    out = train_model(data=str(small_dataset), epochs=EPOCHS, resume=True, data_dir=str(data_dir),
                      train_options=__import__("lvm_core.train.config", fromlist=["TrainConfig"]).TrainConfig(patience=50))
    assert out["epochs_run"] == EPOCHS and out["checkpoint_dir"] == str(ckpt)
    history = read_checkpoint_meta(ckpt / "last")["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
