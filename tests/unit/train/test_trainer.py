"""Training loop: learning, checkpoints (weights_only), early stopping, divergence, resume after SIGKILL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lvm_core.contracts.layout import CHECKPOINT_META_FILE, CHECKPOINT_STATE_FILE
from lvm_core.data.windows import SequenceSet
from lvm_core.models.baselines.recency import RecencyWeightedMean
from lvm_core.models.baselines.simple import CopyLast
from lvm_core.models.config import ModelConfig
from lvm_core.models.loader import CONFIG_FILE, ENCODER_FILE, WEIGHTS_FILE
from lvm_core.models.predict import mean_cosine, predict_contexts, predict_windows
from lvm_core.train.baselines import fit_anchor
from lvm_core.train.batches import WindowDataset, make_loader
from lvm_core.train.checkpoint import (
    CheckpointExistsError,
    CheckpointMismatchError,
    load_checkpoint,
    load_training_state,
)
from lvm_core.train.config import EpochMetrics, TrainConfig
from lvm_core.train.epoch import evaluate_cosine
from lvm_core.train.trainer import train
from tests.fixtures.training import CTX, DIM, FAST, MODEL, training_data


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, SequenceSet, SequenceSet]:
    return training_data()


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_window_dataset_gathers_without_copying_vectors(data) -> None:
    vectors, train_seqs, _ = data
    ds = WindowDataset.from_arrays(vectors, train_seqs)
    assert ds.vectors.data_ptr() == vectors.ctypes.data  # shared, not copied
    ctx, tgt = ds[torch.tensor([5, 0, 17])]
    np.testing.assert_array_equal(ctx.numpy(), vectors[train_seqs.context_rows[[5, 0, 17]]])
    np.testing.assert_array_equal(tgt.numpy(), vectors[train_seqs.target_rows[[5, 0, 17]]])
    one_ctx, one_tgt = ds[3]
    assert one_ctx.shape == (CTX, DIM) and one_tgt.shape == (DIM,)
    batches = list(make_loader(ds, 64, shuffle=True, seed=1))
    assert [b[0].shape[0] for b in batches[:-1]] == [64] * (len(batches) - 1)
    assert sum(b[0].shape[0] for b in batches) == len(ds)
    again = list(make_loader(ds, 64, shuffle=True, seed=1))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))  # order depends on the seed only


@pytest.mark.slow
def test_training_improves_val_cosine_and_checkpoints_load(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    seen: list[EpochMetrics] = []
    result = train(MODEL, FAST, vectors, train_seqs, val_seqs, tmp_path / "ckpt", on_epoch_end=seen.append)
    assert result.status == "completed" and result.ok
    assert [m.epoch for m in seen] == [1, 2, 3, 4] == [m.epoch for m in result.history]
    assert all(np.isfinite(m.train_loss) and m.grad_norm > 0 and m.epoch_seconds > 0 for m in seen)
    assert seen[0].lr > seen[-2].lr > seen[-1].lr > 0  # cosine decay after warm-up
    # Untrained = the recency-weighted mean fitted on train; training must clearly beat it and copy-last.
    recency = RecencyWeightedMean().fit(vectors, train_seqs)
    assert result.initial_val_cosine == pytest.approx(mean_cosine(recency, vectors, val_seqs), abs=1e-6)
    assert result.best_val_cosine > result.initial_val_cosine + 0.08
    assert result.best_val_cosine > mean_cosine(CopyLast(), vectors, val_seqs) + 0.05
    assert evaluate_cosine(result.model, vectors, val_seqs) == pytest.approx(result.best_val_cosine, abs=1e-6)

    # Best checkpoint: rebuilt from meta.json through build_model, weights from safetensors.
    model, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["arch"] == "amn" and meta["dim"] == DIM and meta["epoch"] == result.best_epoch
    assert ModelConfig.model_validate(meta["model_config"]) == MODEL
    assert TrainConfig.model_validate(meta["train_config"]) == FAST
    preds = predict_windows(model, vectors, val_seqs, batch_size=7)
    np.testing.assert_allclose(preds, predict_windows(result.model, vectors, val_seqs), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(preds, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_contexts(model, vectors[val_seqs.context_rows[:9]]), preds[:9], atol=1e-6)

    last = tmp_path / "ckpt" / "last"
    # a model folder (weights, config, encoder) plus the training state beside it
    assert {p.name for p in last.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, ENCODER_FILE, CHECKPOINT_STATE_FILE, CHECKPOINT_META_FILE}
    state = torch.load(last / CHECKPOINT_STATE_FILE, map_location="cpu", weights_only=True)
    assert state["loop"]["epoch"] == 4 and state["loop"]["status"] == "completed"
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    assert state["rng"]["numpy"]["keys"].shape == (624,)
    assert len(state["optimizer"]["state"]) > 0
    assert not list((tmp_path / "ckpt").glob(".*"))  # no staging leftovers


@pytest.mark.parametrize(
    "schedule,loss", [("cosine", "cosine"), ("constant", "infonce"), ("onecycle", "mse+infonce")]
)
def test_every_schedule_and_loss_checkpoints_with_weights_only(data, tmp_path, schedule, loss) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=2, lr=1e-3, num_threads=1, schedule=schedule, loss=loss, batch_size=128)
    result = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path)
    assert result.status == "completed"
    state = load_training_state(tmp_path)  # torch.load(..., weights_only=True) inside
    assert state["scheduler"]["last_epoch"] == result.history[-1].steps * 2
    assert np.isfinite(result.history[-1].train_loss)


def _scrambled_after_first_epoch(epoch: int, step: int, ctx: torch.Tensor, tgt: torch.Tensor):
    """Epoch 1 learns the real task; later epochs train on another window's target (the model unlearns)."""
    return None if epoch < 2 else (ctx, tgt.roll(1, dims=0))


def test_early_stopping_restores_best_weights(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    # Epoch 1 learns; later epochs train on scrambled targets and cannot gain min_delta on val.
    cfg = TrainConfig(epochs=10, lr=3e-3, schedule="constant", warmup_fraction=0.0, patience=2, min_delta=0.01,
                      num_threads=1, loss_blowup_factor=1e6)
    result = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, fault_hook=_scrambled_after_first_epoch)
    assert result.status == "early_stopped"
    assert [m.epoch for m in result.history] == [1, 2, 3]
    assert result.best_epoch == 1 and [m.is_best for m in result.history] == [True, False, False]
    assert evaluate_cosine(result.model, vectors, val_seqs) == pytest.approx(result.history[0].val_cosine, abs=1e-7)
    assert result.history[0].val_cosine > result.initial_val_cosine + cfg.min_delta
    # Resuming a finished run changes nothing.
    again = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True)
    assert again.status == "early_stopped" and len(again.history) == 3 and again.best_epoch == 1


def _away_from_target(epoch: int, step: int, ctx: torch.Tensor, tgt: torch.Tensor):
    """Every step trains towards the opposite of the target: every epoch is worse than the untrained model."""
    return ctx, -tgt


def test_epoch_zero_ships_when_no_epoch_beats_the_untrained_model(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=3, lr=3e-3, num_threads=1, patience=5, loss_blowup_factor=1e6)
    torch.manual_seed(cfg.seed)
    from lvm_core.models.builder import build_model

    untrained = build_model(MODEL).eval()  # what train() starts from: same seed, same init, same anchor
    fit_anchor(untrained, vectors, train_seqs, seed=cfg.seed)
    result = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, fault_hook=_away_from_target)
    assert result.status == "completed" and [m.epoch for m in result.history] == [1, 2, 3]
    assert all(m.val_cosine < result.initial_val_cosine for m in result.history)
    assert not any(m.is_best for m in result.history)
    assert result.best_epoch == 0 and result.best_val_cosine == result.initial_val_cosine
    # the returned (registered) model predicts exactly like the untrained one
    want = predict_windows(untrained, vectors, val_seqs)
    np.testing.assert_array_equal(predict_windows(result.model, vectors, val_seqs), want)
    assert evaluate_cosine(result.model, vectors, val_seqs) == pytest.approx(result.initial_val_cosine, abs=1e-7)
    # best/ holds the epoch-0 weights; last/ the trained epoch 3 for resuming
    model, meta = load_checkpoint(tmp_path)
    assert meta["checkpoint"] == "best" and meta["epoch"] == 0 and meta["best_epoch"] == 0
    np.testing.assert_array_equal(predict_windows(model, vectors, val_seqs), want)
    last = load_training_state(tmp_path)
    assert last["loop"]["epoch"] == 3 and last["loop"]["best_epoch"] == 0
    # resuming the finished run still ships epoch 0
    again = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True, fault_hook=_away_from_target)
    assert again.best_epoch == 0
    np.testing.assert_array_equal(predict_windows(again.model, vectors, val_seqs), want)


def test_resume_keeps_epoch_zero_as_the_best_so_far(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=3, lr=3e-3, num_threads=1, patience=5, loss_blowup_factor=1e6)
    reference = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "ref", fault_hook=_away_from_target)

    def stop_after_one(m: EpochMetrics) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "run", on_epoch_end=stop_after_one,
              fault_hook=_away_from_target)
    resumed = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "run", resume=True,
                    fault_hook=_away_from_target)
    assert resumed.resumed_from_epoch == 1 and resumed.best_epoch == 0
    assert resumed.initial_val_cosine == reference.initial_val_cosine
    np.testing.assert_array_equal(predict_windows(resumed.model, vectors, val_seqs), predict_windows(reference.model, vectors, val_seqs))


class _Stop(Exception):
    pass


def test_resume_equals_uninterrupted_run(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    reference = train(MODEL, FAST, vectors, train_seqs, val_seqs, tmp_path / "ref")

    def crash_after_two(m: EpochMetrics) -> None:
        if m.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(MODEL, FAST, vectors, train_seqs, val_seqs, tmp_path / "run", on_epoch_end=crash_after_two)
    # A different torch RNG state in the resuming process must not matter (dropout RNG comes from state.pt).
    torch.manual_seed(12345)
    seen: list[int] = []
    resumed = train(MODEL, FAST, vectors, train_seqs, val_seqs, tmp_path / "run", resume=True,
                    on_epoch_end=lambda m: seen.append(m.epoch))
    assert seen == [3, 4] and resumed.resumed_from_epoch == 2
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(reference.history, resumed.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_cosine == pytest.approx(b.val_cosine, abs=1e-6)
    assert resumed.best_val_cosine == pytest.approx(reference.best_val_cosine, abs=1e-6)


def test_mismatched_checkpoint_is_refused(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=1, num_threads=1)
    train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path)
    gru = ModelConfig(arch="gru", dim=DIM, context_len=CTX, hidden=32)
    with pytest.raises(CheckpointMismatchError, match="arch 'amn' != requested 'gru'"):
        train(gru, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True)
    wider = MODEL.model_copy(update={"hidden": 64})
    with pytest.raises(CheckpointMismatchError, match="model_config.hidden 32 != requested 64"):
        train(wider, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True)
    with pytest.raises(CheckpointMismatchError, match="train_config.lr"):
        train(MODEL, cfg.model_copy(update={"lr": 0.1}), vectors, train_seqs, val_seqs, tmp_path, resume=True)
    with pytest.raises(CheckpointExistsError, match="already holds a checkpoint"):
        train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path)
    # Other-dim vectors are refused before any checkpoint is read.
    with pytest.raises(ValueError, match="vectors have dim 8 but model_config.dim is 16"):
        train(MODEL, cfg, vectors[:, :8].copy(), train_seqs, val_seqs, tmp_path, resume=True)


@pytest.mark.parametrize("hook_kind,reason", [("nan", "non-finite loss"), ("flip", "loss blow-up")])
def test_divergence_keeps_last_good_checkpoint(data, tmp_path, hook_kind, reason) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=4, lr=3e-3, num_threads=1, loss_blowup_factor=2.0)
    digests: dict[str, str] = {}

    def hook(epoch: int, step: int, ctx: torch.Tensor, tgt: torch.Tensor):
        if epoch < 2:
            return None
        if hook_kind == "nan" and step == 3:
            ctx = ctx.clone()
            ctx[0, 0, 0] = float("nan")
        elif hook_kind == "flip":
            tgt = -tgt  # targets turn into their opposites: the loss jumps and stays high
        return ctx, tgt

    def remember(m: EpochMetrics) -> None:
        digests.update(tree_digest(tmp_path / "last"))

    result = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, on_epoch_end=remember, fault_hook=hook)
    assert result.status == "diverged" and not result.ok
    assert reason in result.reason and "epoch 2" in result.reason
    assert [m.epoch for m in result.history] == [1]
    assert tree_digest(tmp_path / "last") == digests  # untouched
    model, meta = load_checkpoint(tmp_path / "last")
    assert meta["epoch"] == 1
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()
    assert np.isfinite(evaluate_cosine(result.model, vectors, val_seqs))


def test_gradient_explosion_diverges_and_guards_can_change_on_resume(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=3, lr=3e-3, num_threads=1)

    def stop_after_one(m: EpochMetrics) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, on_epoch_end=stop_after_one)
    before = tree_digest(tmp_path / "last")
    strict = cfg.model_copy(update={"max_grad_norm_explode": 1e-9})
    result = train(MODEL, strict, vectors, train_seqs, val_seqs, tmp_path, resume=True)
    assert result.status == "diverged"
    assert "gradient norm explosion" in result.reason and "epoch 2 step 0" in result.reason
    assert tree_digest(tmp_path / "last") == before
    assert result.model is not None and result.best_epoch == 1
    # With the default guard the same checkpoint resumes and finishes.
    done = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True)
    assert done.status == "completed" and [m.epoch for m in done.history] == [1, 2, 3]


def test_non_finite_vectors_are_refused(data, tmp_path) -> None:
    vectors, train_seqs, val_seqs = data
    bad = vectors.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in 1 row\(s\), first rows \[7\]"):
        train(MODEL, FAST, bad, train_seqs, val_seqs, tmp_path)


def test_resume_recovers_from_a_crash_inside_the_folder_swap(data, tmp_path) -> None:
    """A kill between atomic_dir's two renames leaves `.last.old.<pid>` and no `last`; resume puts it back."""
    vectors, train_seqs, val_seqs = data
    cfg = TrainConfig(epochs=2, lr=3e-3, num_threads=1)

    def stop(m: EpochMetrics) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, on_epoch_end=stop)
    (tmp_path / "last").rename(tmp_path / ".last.old.4242")
    (tmp_path / ".last.staging.abc").mkdir()
    (tmp_path / ".last.staging.abc" / "model.safetensors").write_bytes(b"partial")
    seen: list[int] = []
    result = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path, resume=True, on_epoch_end=lambda m: seen.append(m.epoch))
    assert seen == [2] and result.status == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]


def test_train_config_validation() -> None:
    with pytest.raises(ValueError):
        TrainConfig(loss="l1")
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(patience=0)
    assert TrainConfig().model_dump()["lr"] == 5e-4
