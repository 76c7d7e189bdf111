"""Crash matrix: `lvm run` SIGKILLed (its process group; its temporary Prefect API dies with it) at every stage, then the
same command again. The rerun must complete, and leave what a clean run leaves: the same dataset, one
complete model version per finished training, a champion that passed its gates, no RUNNING MLflow run or
Prefect flow run, no staging folders, no held slot.

The cases run two at a time (each in its own data folder and Prefect home), on a warm embedding cache, 14
articles and 2 epochs, so the whole matrix fits the CI budget.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SMALL_BUILD_ARTICLES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# stage -> fault (lvm_core/faults.py); train dies mid-epoch 2 (about 16 batches an epoch here)
STAGES = {
    "ingest": "kill@ingest",
    "chunk": "kill@chunk",
    "embed": "kill@embed.batch#2",  # after the first block of vectors reached the cache
    "analyse": "kill@analyse",
    "gates": "kill@gates",
    "publish": "kill@publish",
    "train": "kill@train.batch#20",
    "register": "kill@register",
    "evaluate": "kill@evaluate",
    "promote": "kill@promote",
}
# Gates relaxed so the model gates pass and promotion (the last stage) really happens.
RUN_ARGS = [
    "run", "--limit-articles", str(SMALL_BUILD_ARTICLES), "--epochs", "2",
    *[x for t in ("max_split_ks=1.0", "max_split_mean_diff=1.0", "min_val_cosine=0", "min_ood_cosine=0",
                  "max_ood_val_gap=1", "must_beat_best_baseline=false") for x in ("--threshold", t)],
]
RUN_TIMEOUT_S = 300


@dataclass
class Outcome:
    root: Path
    killed_rc: int
    marker: str
    rerun: subprocess.CompletedProcess[str]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"


def _env(root: Path, fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LVM_FAULT"))}
    env.update(PREFECT_HOME=str(root / "prefect"), PYTHONPATH=str(REPO), PREFECT_LOGGING_LEVEL="INFO")
    if fault:
        env.update(LVM_FAULT_INJECT=fault, LVM_FAULT_MARKER=str(root / "fault-marker"))
    return env


def _lvm(root: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`lvm run` in its own process group, like a job a scheduler starts; the group is gone afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *RUN_ARGS, "--data-dir", str(root / "data")],
                            cwd=root, env=_env(root, fault), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[test] killed after {RUN_TIMEOUT_S} s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the temporary API server, if anything was left
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _seed(root: Path, reference: Path, warm_cache: bool) -> None:
    """A migrated Prefect database, and the embedding cache unless the case must encode."""
    (root / "prefect").mkdir(parents=True)
    with sqlite3.connect(reference / "prefect" / "prefect.db") as src, sqlite3.connect(root / "prefect" / "prefect.db") as dst:
        src.backup(dst)  # a file copy could miss the last writes, still in the write-ahead log
    if warm_cache:
        shutil.copytree(reference / "data" / "cache", root / "data" / "cache")


def _case(reference: Path, stage: str) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix=f"lvm-crash-{stage}-"))
    _seed(root, reference, warm_cache=stage != "embed")
    killed = _lvm(root, STAGES[stage])
    marker = root / "fault-marker"
    return Outcome(root, killed.returncode, marker.read_text() if marker.exists() else killed.stdout[-3000:], _lvm(root))


@pytest.fixture(scope="module")
def reference() -> Path:
    root = Path(tempfile.mkdtemp(prefix="lvm-crash-reference-"))
    clean = _lvm(root)
    assert clean.returncode == 0, clean.stdout[-4000:]
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def outcomes(reference: Path) -> dict[str, Outcome]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {stage: pool.submit(_case, reference, stage) for stage in STAGES}
        results = {stage: f.result() for stage, f in futures.items()}
    yield results
    for o in results.values():
        shutil.rmtree(o.root, ignore_errors=True)


def _dataset(data_dir: Path) -> Path:
    published = [p for p in (data_dir / "datasets").iterdir() if not p.name.startswith((".", "_"))]
    assert len(published) == 1, published
    return published[0]


def _mlflow(data_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}", registry_uri=f"sqlite:///{data_dir / 'mlflow.db'}")


@pytest.mark.parametrize("stage", list(STAGES))
def test_rerun_after_a_kill_completes_like_a_clean_run(stage: str, outcomes: dict[str, Outcome], reference: Path):
    o = outcomes[stage]
    assert o.killed_rc == -signal.SIGKILL, f"the run was not killed at {stage}: {o.marker}"
    assert o.marker.startswith(f"kill@{STAGES[stage].split('@')[1].split('#')[0]}"), o.marker
    assert o.rerun.returncode == 0, o.rerun.stdout[-5000:]

    # the dataset is the one a clean run builds
    ds, ref = _dataset(o.data_dir), _dataset(reference / "data")
    manifest, ref_manifest = (json.loads((p / "manifest.json").read_text()) for p in (ds, ref))
    assert manifest["content_hash"] == ref_manifest["content_hash"]
    np.testing.assert_array_equal(np.load(ds / "embeddings.npy"), np.load(ref / "embeddings.npy"))

    # no staging, backup or failed folders of the dead run
    leftovers = [p.name for p in (o.data_dir / "datasets").iterdir() if p != ds]
    assert leftovers == [], leftovers

    # MLflow: nothing RUNNING; every version comes from a finished training run or is marked incomplete
    client = _mlflow(o.data_dir)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    killed = {r.info.run_id for r in runs if r.info.status == "KILLED"}
    assert all(client.get_run(r).data.tags.get("failure_reason", "").startswith("killed:") for r in killed)
    if stage in ("train", "register", "evaluate"):
        assert killed, "the run the kill interrupted should have been reaped as KILLED"
    versions = client.search_model_versions("name = 'lvm-amn'")
    for mv in versions:
        finished = client.get_run(mv.run_id).info.status == "FINISHED"
        assert finished or "incomplete" in mv.tags, (mv.version, client.get_run(mv.run_id).info.status, mv.tags)
    complete = [mv for mv in versions if "incomplete" not in mv.tags]
    trainings = 1 if stage in ("ingest", "chunk", "embed", "analyse", "gates", "publish", "train", "register") else 2
    assert len(complete) == trainings, [(mv.version, mv.tags) for mv in versions]

    # champion: a complete version that passed its gates
    champion = client.get_model_version_by_alias("lvm-amn", "champion")
    assert champion.tags.get("gates_passed") == "true" and "incomplete" not in champion.tags

    # Prefect: no flow run left RUNNING, the build slot free
    with sqlite3.connect(o.prefect_home / "prefect.db") as db:
        running = db.execute("select name from flow_run where state_type in ('RUNNING', 'PENDING')").fetchall()
        slots = db.execute("select name, active_slots from concurrency_limit_v2 where name like 'build-%'").fetchall()
    assert running == [], running
    assert slots and all(active == 0 for _, active in slots), slots
