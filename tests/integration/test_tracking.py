"""MLflow tracking, registry, loading without pickle, promotion and rollback on a temporary SQLite store."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from lvm_core.contracts.errors import ModelNotFoundError
from lvm_core.contracts.gates import GateReport, GateResult
from lvm_core.data.embedding.fingerprint import FingerprintMismatchError
from lvm_core.evaluation.model_card.card import render_model_card
from lvm_core.io import storage
from lvm_core.models.config import ModelConfig
from lvm_core.models.loader import save_model_dir
from lvm_core.tracking.curves import plot_training_curves
from lvm_core.tracking.model_logging import ModelVersionInfo
from lvm_core.tracking.promotion import PromotionError, promote, record_gate_outcomes, rollback
from lvm_core.tracking.references import current_champion, list_versions, load_registered_model
from lvm_core.tracking.runs import TrainingRun
from lvm_core.tracking.setup import configure_tracking
from lvm_core.tracking.tags import (
    TAG_CHAMPION_HISTORY,
    TAG_DATASET_DIGEST,
    TAG_ENCODER,
    TAG_ENCODER_DIM,
    TAG_ENCODER_MODEL,
    TAG_FAILED_GATES,
    TAG_FAILURE,
    TAG_FORCED,
    TAG_GATES_PASSED,
    TAG_LAST_ROLLBACK,
    TAG_PREVIOUS_CHAMPION,
    TAG_SNAPSHOT,
    TAG_SPLIT_HASH,
    TAG_SPLIT_REGISTRY,
)
from tests.fixtures.model_records import CTX, DIM, FAIL, FP, OTHER_FP, PASS, tiny_model
from tests.fixtures.vectors import random_unit


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry-data")


@pytest.fixture()
def client(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = configure_tracking(data_dir)
    assert uri == f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
    return MlflowClient()


def register(name: str, seed: int, gate_report=None) -> tuple[ModelVersionInfo, torch.nn.Module]:
    model, config = tiny_model(seed)
    with TrainingRun(arch="amn", snapshot_id="snap-1", encoder_fingerprint=FP, split_hash="split-abc") as run:
        run.log_epoch({"val_cosine": 0.5 + seed / 100}, step=0)
        info = run.log_and_register_model(
            model, config, FP, name, tags={"note": "test"}, gate_report=gate_report
        )
    return info, model


def write_manifest(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "snapshot_id": "enwiki-sample-1",
        "dataset_id": "ds-1",
        "counts": {"articles": 14, "chunks": 900, "sequences": {"train": 600, "val": 80, "ood": 70}},
        "splits": {"content_hash": "feedbeef", "registry_hash": "cafe0123"},
    }
    storage.write_json(folder / "manifest.json", manifest)
    return folder / "manifest.json"


# --- runs ------------------------------------------------------------------------------------------


def test_each_data_dir_gets_its_own_registry_in_one_process(tmp_path, monkeypatch):
    """MLflow exports the URIs it is given to MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; neither a later data dir
    nor a subprocess may inherit them, while URIs the user sets are still honoured."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    assert configure_tracking(first) == f"sqlite:///{(first / 'mlflow.db').resolve()}"
    assert configure_tracking(second) == f"sqlite:///{(second / 'mlflow.db').resolve()}"
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == f"sqlite:///{(second / 'mlflow.db').resolve()}"
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    user_uri, user_registry = (f"sqlite:///{(tmp_path / name).resolve()}" for name in ("server.db", "registry.db"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", user_registry)
    assert configure_tracking(first) == user_uri
    assert mlflow.get_registry_uri() == user_registry
    assert os.environ["MLFLOW_TRACKING_URI"] == user_uri


def test_run_records_params_epochs_dataset_gates_and_artifacts(client, tmp_path):
    manifest = write_manifest(tmp_path / "datasets" / "snap")
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_cosine": 0.5 + 0.02 * e, "lr": 1e-3 * 0.5**e} for e in range(3)]
    report = GateReport(stage="model", results=[
        GateResult("val_cosine", True, 0.56, 0.55), GateResult("ood_val_gap", False, 0.07, 0.05),
    ])
    config = ModelConfig(arch="amn", dim=DIM, context_len=CTX)
    with TrainingRun(arch="amn", encoder_fingerprint=FP, run_name="t1") as run:
        logged = run.log_params({"model": config, "train": {"lr": 0.001, "epochs": 3, "milestones": [1, 2]}})
        for h in history:
            run.log_epoch({k: v for k, v in h.items() if k != "epoch"}, step=h["epoch"])
        ds = run.log_dataset_manifest(manifest)
        png = plot_training_curves(history, tmp_path / "curves.png")
        run.log_figure(png, "plots/training_curves.png")
        outcomes = run.log_gate_results(report)
        run.log_model_card(render_model_card({"name": "x", "gates": report}))
        run_id = run.run_id

    assert logged["model.arch"] == "amn" and logged["train.milestones"] == "[1, 2]"
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["train.lr"] == "0.001"
    assert r.data.params["model.context_len"] == str(CTX)
    hist = client.get_metric_history(run_id, "val_cosine")
    assert [m.step for m in hist] == [0, 1, 2]
    assert [m.value for m in hist] == pytest.approx([0.5, 0.52, 0.54])
    assert [m.step for m in client.get_metric_history(run_id, "lr")] == [0, 1, 2]

    digest = storage.file_digest(manifest)
    assert ds["digest"] == digest
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.digest == digest[:36]
    assert inp.dataset.name == "enwiki-sample-1"
    assert str(manifest.parent.resolve()) in inp.dataset.source
    assert json.loads(inp.dataset.profile)["articles"] == 14
    tags = {t.key: t.value for t in inp.tags}
    assert tags[TAG_DATASET_DIGEST] == digest and tags["mlflow.data.context"] == "training"

    t = r.data.tags
    assert t["arch"] == "amn" and t[TAG_ENCODER] == FP.id and t[TAG_ENCODER_DIM] == str(DIM)
    assert t[TAG_SNAPSHOT] == "enwiki-sample-1" and t[TAG_SPLIT_HASH] == "feedbeef"
    assert t[TAG_SPLIT_REGISTRY] == "cafe0123"  # what a later month's contamination check follows
    assert t["gates.model.passed"] == "false" and t["gates.model.failed"] == "ood_val_gap"
    assert outcomes["ood_val_gap"] == {"passed": False, "value": 0.07, "threshold": 0.05}
    assert r.data.metrics["gate.val_cosine"] == pytest.approx(0.56)

    files = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for d in ("dataset", "plots", "gates") for a in client.list_artifacts(run_id, d)
    }
    assert {"dataset/manifest.json", "plots/training_curves.png", "gates/model.json", "model_card.md"} <= files
    local = Path(client.download_artifacts(run_id, "gates/model.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["failed"] == ["ood_val_gap"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_fails_on_exception_and_on_divergence(client):
    with pytest.raises(RuntimeError, match="boom"):
        with TrainingRun(arch="amn") as run:
            run.log_epoch({"train_loss": 1.0}, step=0)
            raise RuntimeError("boom")
    r = client.get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.tags[TAG_FAILURE] == "RuntimeError: boom"

    with TrainingRun(arch="amn") as run2:
        run2.log_epoch({"train_loss": float("nan")}, step=1)
        run2.mark_failed("diverged: train_loss is NaN at epoch 1")
    r2 = client.get_run(run2.run_id)
    assert r2.info.status == "FAILED"
    assert r2.data.tags[TAG_FAILURE].startswith("diverged")

    with TrainingRun() as run3:
        with pytest.raises(TypeError, match="'note'"):
            run3.log_metrics({"note": "text"})
    assert client.get_run(run3.run_id).info.status == "FINISHED"


# --- registering and loading -----------------------------------------------------------------------


def test_register_sets_challenger_tags_and_signature(client, tmp_path):
    info, _ = register("lvm-reg", seed=1, gate_report=FAIL)
    assert info.version == 1 and info.uri == "models:/lvm-reg/1"
    mv = client.get_model_version("lvm-reg", "1")
    assert mv.run_id == info.run_id
    assert client.get_registered_model("lvm-reg").aliases == {"challenger": 1}
    tags = mv.tags
    assert tags[TAG_ENCODER] == FP.id
    assert tags[TAG_ENCODER_MODEL] == "test-encoder" and tags[TAG_ENCODER_DIM] == str(DIM)
    assert tags["arch"] == "amn" and tags["snapshot_id"] == "snap-1" and tags["split_hash"] == "split-abc"
    assert tags[TAG_GATES_PASSED] == "false" and tags[TAG_FAILED_GATES] == "ood_val_gap"
    assert tags["note"] == "test"

    from mlflow.models import Model

    path = mlflow.artifacts.download_artifacts(artifact_uri=info.uri, dst_path=str(tmp_path / "m"))
    mlmodel = Model.load(path)
    (inp,), (out,) = mlmodel.signature.inputs.inputs, mlmodel.signature.outputs.inputs
    assert (inp.type, tuple(inp.shape)) == (np.dtype("float32"), (-1, CTX, DIM))
    assert (out.type, tuple(out.shape)) == (np.dtype("float32"), (-1, DIM))
    flavor = mlmodel.flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models from code
    assert "python_model" not in flavor  # no cloudpickled python_model.pkl
    assert not list(Path(path).rglob("*.pkl"))
    files = {p.name for p in (Path(path) / "artifacts" / "lvm").iterdir()}
    assert files == {"weights.safetensors", "config.json", "encoder.json"}


def test_load_round_trips_weights_and_refuses_other_dim_and_encoder(client, tmp_path):
    info, model = register("lvm-load", seed=2)
    loaded = load_registered_model("models:/lvm-load@challenger", expected_fingerprint=FP)
    assert (loaded.name, loaded.version, loaded.run_id) == ("lvm-load", 1, info.run_id)
    assert loaded.fingerprint == FP and loaded.config.arch == "amn"
    original, restored = model.state_dict(), loaded.module.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key

    ctx = random_unit(0, 5, CTX, DIM)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(ctx)).numpy()
    pred = loaded.predict(ctx)
    assert pred.shape == (5, DIM) and pred.dtype == np.float32
    np.testing.assert_array_equal(pred, expected)
    np.testing.assert_array_equal(loaded.predict(ctx.reshape(5, CTX * DIM)), expected)

    with pytest.raises(ValueError, match="dim 8"):
        loaded.predict(random_unit(0, 2, CTX, DIM + 4))
    with pytest.raises(ValueError, match="context chunks"):
        loaded.predict(random_unit(0, 2, CTX + 1, DIM))
    with pytest.raises(FingerprintMismatchError):
        loaded.check_fingerprint(OTHER_FP)
    with pytest.raises(FingerprintMismatchError):
        load_registered_model("models:/lvm-load/1", expected_fingerprint=OTHER_FP)

    kept = load_registered_model("lvm-load/1", dst_dir=tmp_path / "kept")
    assert kept.path is not None and (kept.path / "weights.safetensors").is_file()
    local = load_registered_model(tmp_path / "kept")  # an MLflow model folder on disk
    np.testing.assert_array_equal(local.predict(ctx), expected)
    plain = save_model_dir(model, model.config, FP, tmp_path / "plain")
    np.testing.assert_array_equal(load_registered_model(str(plain)).predict(ctx), expected)


def test_loading_never_unpickles(client, monkeypatch):
    register("lvm-nopickle", seed=3)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling is not allowed while loading a model")

    import cloudpickle

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(cloudpickle, "load", refuse)
    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)

    loaded = load_registered_model("models:/lvm-nopickle@challenger", expected_fingerprint=FP)
    ctx = random_unit(0, 4, CTX, DIM)
    ours = loaded.predict(ctx)
    assert ours.shape == (4, DIM)

    # The MLflow pyfunc (models from code) path rebuilds from the same files, also without unpickling.
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model("models:/lvm-nopickle/1")
    np.testing.assert_allclose(pyfunc.predict(ctx), ours, rtol=0, atol=0)


def test_unknown_models_versions_and_aliases(client):
    register("lvm-known", seed=4)
    with pytest.raises(ModelNotFoundError, match="no registered model named 'lvm-missing'"):
        load_registered_model("models:/lvm-missing/1")
    with pytest.raises(ModelNotFoundError, match=r"no version 7 \(versions: 1\)"):
        load_registered_model("models:/lvm-known/7")
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        load_registered_model("models:/lvm-known@champion")
    with pytest.raises(ModelNotFoundError, match="neither a local model folder"):
        load_registered_model("no/such/folder")
    with pytest.raises(ModelNotFoundError):
        current_champion("lvm-missing")


# --- promotion -------------------------------------------------------------------------------------


def test_promote_rollback_and_failed_gates(client):
    name = "lvm-promo"
    for seed in (10, 11, 12):
        register(name, seed)
    assert current_champion(name) is None

    r1 = promote(name, 1, PASS)
    assert (r1.promoted, r1.action, r1.champion, r1.previous_champion) == (True, "promoted", 1, None)
    assert client.get_model_version(name, "1").tags[TAG_PREVIOUS_CHAMPION] == "none"

    r2 = promote(name, "2", GateReport(stage="model", results=[GateResult("val_cosine", True, 0.6, 0.55)]))
    assert r2.promoted and current_champion(name) == 2 and r2.previous_champion == 1
    v2 = client.get_model_version(name, "2").tags
    assert v2[TAG_PREVIOUS_CHAMPION] == "1" and v2[TAG_GATES_PASSED] == "true"
    rm = client.get_registered_model(name)
    assert json.loads(rm.tags[TAG_CHAMPION_HISTORY]) == [1, 2]
    assert rm.aliases == {"champion": 2, "challenger": 3}

    r3 = promote(name, 3, FAIL)
    assert (r3.promoted, r3.action, r3.failed_gates, r3.champion) == (False, "rejected", ("ood_val_gap",), 2)
    assert current_champion(name) == 2
    assert client.get_model_version(name, "3").tags[TAG_FAILED_GATES] == "ood_val_gap"
    assert client.get_registered_model(name).aliases == {"champion": 2, "challenger": 3}

    before = client.get_registered_model(name)
    with pytest.raises(ModelNotFoundError, match="no version 99"):
        promote(name, 99, PASS)
    after = client.get_registered_model(name)
    assert after.aliases == before.aliases and after.tags == before.tags

    rb = rollback(name)
    assert (rb.action, rb.version, rb.previous_champion) == ("rolled_back", 1, 2)
    assert current_champion(name) == 1
    rm = client.get_registered_model(name)
    assert json.loads(rm.tags[TAG_CHAMPION_HISTORY]) == [1]
    assert json.loads(rm.tags[TAG_LAST_ROLLBACK])["from"] == 2
    assert client.get_model_version(name, "2").tags["rolled_back_to"] == "1"
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(name)
    assert current_champion(name) == 1

    forced = promote(name, 3, FAIL, force=True)
    assert forced.promoted and forced.forced and current_champion(name) == 3
    assert client.get_model_version(name, "3").tags[TAG_FORCED].startswith("true")
    assert rollback(name).version == 1

    rows = list_versions(name, metric_keys=["val_cosine"])
    assert [r["version"] for r in rows] == [3, 2, 1]
    assert rows[2]["aliases"] == ["champion"]
    assert rows[0]["metrics"] == {"val_cosine": pytest.approx(0.62)}
    assert rows[0]["run_id"] and rows[0]["tags"]["arch"] == "amn"


def test_promote_uses_gates_recorded_at_registration(client):
    name = "lvm-recorded"
    register(name, 20, gate_report=PASS)
    register(name, 21, gate_report=FAIL)
    register(name, 22)
    assert promote(name, 1).promoted
    rejected = promote(name, 2)
    assert not rejected.promoted and rejected.failed_gates == ("ood_val_gap",)
    with pytest.raises(PromotionError, match="no gate results"):
        promote(name, 3)
    assert current_champion(name) == 1


def test_recorded_gates_without_promotion_are_what_a_later_promotion_or_rollout_reads(client):
    from lvm_core.rollout.plan import gate_blockers

    name = "lvm-recorded-only"
    register(name, 30, gate_report=PASS)  # registration said pass; the evaluation below says fail
    promote(name, 1, force=True)
    register(name, 31, gate_report=PASS)
    assert record_gate_outcomes(name, 2, FAIL) == ["ood_val_gap"]
    tags = client.get_model_version(name, "2").tags
    assert tags[TAG_GATES_PASSED] == "false" and tags[TAG_FAILED_GATES] == "ood_val_gap"
    assert client.get_registered_model(name).aliases.get("champion") == 1  # no alias moved
    assert gate_blockers(name, 2) == ["failed gates ood_val_gap"]
    assert not promote(name, 2).promoted  # the newest outcomes win over registration's
    assert record_gate_outcomes(name, 2, PASS) == []
    assert TAG_FAILED_GATES not in client.get_model_version(name, "2").tags
    assert gate_blockers(name, 2) == []


def test_promotion_and_rollback_refuse_during_an_active_rollout_and_the_pipeline_defers(client):
    from lvm_core.rollout.plan import abort, start
    from lvm_core.rollout.state import read_state
    from lvm_core.tracking.promotion import RolloutActiveError

    name = "lvm-during-rollout"
    register(name, 40, gate_report=PASS)
    register(name, 41, gate_report=PASS)
    register(name, 42)
    promote(name, 1)
    start(name, 2)
    with pytest.raises(RolloutActiveError, match="rollout of v2 is active"):
        promote(name, 2)
    with pytest.raises(RolloutActiveError):
        promote(name, 2, force=True)  # force overrides gates, not a rollout in progress
    with pytest.raises(RolloutActiveError):
        rollback(name)
    deferred = promote(name, 3, FAIL, defer_during_rollout=True)  # what the pipeline's evaluation does
    assert (deferred.action, deferred.promoted, deferred.champion) == ("deferred", False, 1)
    assert client.get_model_version(name, "3").tags[TAG_FAILED_GATES] == "ood_val_gap"  # gates still recorded
    assert current_champion(name) == 1
    abort(name, "test over")
    assert not read_state(name).active and promote(name, 2).promoted


def test_test_evaluations_are_counted_per_split_hash(client, data_dir):
    """Every evaluation run that reported a test split counts against that split hash, whatever the model."""
    from lvm_core.tracking.evaluation_log import (
        TAG_EVAL_SPLIT_HASH,
        TAG_REPORTED_SPLIT,
        TAG_RUN_TYPE,
        count_test_evaluations,
    )

    assert count_test_evaluations("hash-a") == 0
    for split_hash, reported, run_type in [("hash-a", "test", "evaluation"), ("hash-a", "test", "evaluation"),
                                           ("hash-a", "val", "evaluation"), ("hash-b", "test", "evaluation"),
                                           ("hash-a", "test", "training")]:
        with TrainingRun(data_dir, tags={TAG_RUN_TYPE: run_type, TAG_EVAL_SPLIT_HASH: split_hash,
                                         TAG_REPORTED_SPLIT: reported}):
            pass
    assert count_test_evaluations("hash-a") == 2
    assert count_test_evaluations("hash-b") == 1
