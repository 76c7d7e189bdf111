"""One model folder format: checkpoints are model folders plus training state, and old folders still load.

tests/data/legacy/ was written by the code before checkpoints became model folders (commit 6529d6c,
`make_legacy.py` there): a checkpoint stopped after epoch 1 of 3, a registry model folder, the same model
as MLflow logged it (with that time's pyfunc entry point), and what that code predicted from each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lvm_core.contracts.layout import CHECKPOINT_META_FILE, CHECKPOINT_STATE_FILE
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.windows import SequenceSet
from lvm_core.models.config import ModelConfig
from lvm_core.models.loader import (
    CONFIG_FILE,
    ENCODER_FILE,
    LEGACY_CHECKPOINT_FORMAT,
    WEIGHTS_FILE,
    load_model_dir,
    save_model_dir,
    unrecorded_encoder,
)
from lvm_core.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointMismatchError,
    load_checkpoint,
    read_checkpoint_meta,
)
from lvm_core.train.config import TrainConfig
from lvm_core.train.trainer import train
from tests.fixtures.model_records import DIM, tiny_model
from tests.fixtures.paths import TEST_DATA

LEGACY = TEST_DATA / "legacy"
FP = EncoderFingerprint(model_name="legacy-fixture-encoder", weights_digest="0" * 16, dim=8)


@pytest.fixture(scope="module")
def legacy() -> dict:
    vectors = np.load(LEGACY / "vectors.npy")
    z = np.load(LEGACY / "windows.npz")
    keys = ("context_rows", "target_rows", "article_ids", "target_chunk_index")
    train_seqs, val_seqs = (SequenceSet(*(z[f"{s}_{k}"] for k in keys)) for s in ("train", "val"))
    meta = read_checkpoint_meta(LEGACY / "checkpoint" / "last")
    return {
        "vectors": vectors,
        "train": train_seqs,
        "val": val_seqs,
        "contexts": vectors[val_seqs.context_rows],
        "expected": json.loads((LEGACY / "expected.json").read_text()),
        "model_config": ModelConfig.model_validate(meta["model_config"]),
        "train_config": TrainConfig.model_validate(meta["train_config"]),
    }


def _predict(module, contexts: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module.eval()(torch.from_numpy(contexts)).numpy()


def test_old_checkpoint_loads_and_predicts_as_the_old_code_did(legacy) -> None:
    model, meta = load_checkpoint(LEGACY / "checkpoint" / "last")
    assert meta["format"] == LEGACY_CHECKPOINT_FORMAT and meta["epoch"] == legacy["expected"]["checkpoint_epoch"] == 1
    np.testing.assert_allclose(_predict(model, legacy["contexts"]),
                               legacy["expected"]["checkpoint_last_predictions"], atol=1e-6)
    loaded = load_model_dir(LEGACY / "checkpoint" / "best")  # the one loader reads the old layout
    assert loaded.config == legacy["model_config"]
    assert loaded.fingerprint == unrecorded_encoder(8) != FP  # no encoder was recorded: never taken for FP's


def test_resume_from_an_old_checkpoint_continues_the_old_run(legacy, tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(LEGACY / "checkpoint", ckpt)
    result = train(legacy["model_config"], legacy["train_config"], legacy["vectors"], legacy["train"], legacy["val"],
                   ckpt, resume=True, fingerprint=FP)
    assert result.status == "completed" and result.resumed_from_epoch == 1
    old = legacy["expected"]["uninterrupted_history"]
    assert [m.epoch for m in result.history] == [h["epoch"] for h in old] == [1, 2, 3]
    for new, before in zip(result.history, old):  # the same epochs the old code ran without interruption
        assert new.val_cosine == pytest.approx(before["val_cosine"], abs=1e-6)
        assert new.train_loss == pytest.approx(before["train_loss"], rel=1e-5)
    assert result.best_epoch == legacy["expected"]["uninterrupted_best_epoch"]
    # the checkpoints written since are model folders of the new format, with the encoder recorded
    last = ckpt / "last"
    assert {p.name for p in last.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, ENCODER_FILE, CHECKPOINT_META_FILE,
                                                CHECKPOINT_STATE_FILE}
    assert read_checkpoint_meta(last)["format"] == CHECKPOINT_FORMAT
    best = load_model_dir(ckpt / "best")
    assert best.fingerprint == FP
    np.testing.assert_allclose(best.predict(legacy["contexts"]), legacy["expected"]["model_predictions"], atol=1e-5)


def test_old_registry_model_folder_loads(legacy) -> None:
    loaded = load_model_dir(LEGACY / "model")
    assert loaded.fingerprint == FP and loaded.config == legacy["model_config"]
    np.testing.assert_allclose(loaded.predict(legacy["contexts"]), legacy["expected"]["model_predictions"], atol=1e-6)


def test_old_registered_mlflow_model_loads_through_its_own_pyfunc_copy(legacy, tmp_path) -> None:
    """The logged copy of the old pyfunc entry point imports `lvm_core.registry.load_model_dir`."""
    import mlflow

    model_dir = shutil.copytree(LEGACY / "mlflow_model", tmp_path / "model")
    assert "from lvm_core.registry import load_model_dir" in (model_dir / "pyfunc_model.py").read_text()
    pyfunc = mlflow.pyfunc.load_model(str(model_dir))
    np.testing.assert_allclose(np.asarray(pyfunc.predict(legacy["contexts"])),
                               legacy["expected"]["mlflow_model_predictions"], atol=1e-6)
    np.testing.assert_allclose(load_model_dir(model_dir).predict(legacy["contexts"]),
                               legacy["expected"]["mlflow_model_predictions"], atol=1e-6)


def test_a_checkpoint_is_a_model_folder_and_resume_checks_its_encoder(legacy, tmp_path) -> None:
    mc, vectors = legacy["model_config"], legacy["vectors"]
    tc = TrainConfig(epochs=2, batch_size=16, num_threads=1)
    result = train(mc, tc, vectors, legacy["train"], legacy["val"], tmp_path, fingerprint=FP)
    model, meta = load_checkpoint(tmp_path)  # best/, rebuilt by load_model_dir
    assert meta["format"] == CHECKPOINT_FORMAT and meta["model_config"] == mc.model_dump() and meta["dim"] == 8
    assert "model_config" not in json.loads((tmp_path / "best" / CHECKPOINT_META_FILE).read_text())  # one place
    np.testing.assert_allclose(_predict(model, legacy["contexts"]), _predict(result.model, legacy["contexts"]), atol=1e-6)
    other = EncoderFingerprint(model_name="another-encoder", weights_digest="1" * 16, dim=8)
    with pytest.raises(CheckpointMismatchError, match="encoder .*another-encoder"):
        train(mc, tc.model_copy(update={"epochs": 2}), vectors, legacy["train"], legacy["val"], tmp_path,
              resume=True, fingerprint=other)
    with pytest.raises(ValueError, match="has dim 4 but model_config.dim is 8"):
        train(mc, tc, vectors, legacy["train"], legacy["val"], tmp_path / "x",
              fingerprint=EncoderFingerprint(model_name="small", weights_digest="2", dim=4))


def test_save_model_dir_refuses_dim_mismatch(tmp_path):
    model, config = tiny_model(0)
    wrong = EncoderFingerprint(model_name="big", weights_digest="2" * 64, dim=DIM * 2)
    with pytest.raises(ValueError, match="does not match the encoder fingerprint dim"):
        save_model_dir(model, config, wrong, tmp_path / "m")
