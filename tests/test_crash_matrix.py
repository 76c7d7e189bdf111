"""Crash matrix: `lvm run` SIGKILLed (its process group) at every stage, then the same command again. The
rerun must complete, and leave what a clean run leaves: the same dataset, one complete model version per
finished training, a champion that passed its gates, no RUNNING MLflow run or Prefect flow run, no staging
folders, no held slot.

The runs talk to a real, persistent Prefect server (`prefect server start`, leases on disk), as scheduled
jobs do: the dead run's flow runs and slot lease outlive it there and must be reclaimed by the rerun. One
case (`TEMPORARY_SERVER_STAGES`) runs without a server instead, on the temporary local API each `lvm`
process starts, which dies with the killed process and takes the slot's lease with it.

Cost: two lanes, each with its own server, run the cases one after another (a lane's server sees one case
at a time, so its flow runs and slots are exactly that case's); every case but `embed` starts from the
reference run's embedding cache; only the `train` case trains two epochs (it dies in the second).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from prefect_server import PrefectServer, start_server, stop_process
from tests.conftest import SMALL_BUILD_ARTICLES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# stage -> fault (lvm_core/runtime/faults.py); train dies early in epoch 2 (about 19 batches an epoch here)
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
# One epoch is enough for every kill point but mid-training, whose run must die after a finished epoch.
EPOCHS = {"train": 2}
# Without PREFECT_API_URL: the temporary API dies with the killed run, its in-memory lease on the build slot
# too, and the slot stays counted as held in the local database until the rerun reclaims it.
TEMPORARY_SERVER_STAGES = {"gates"}
# Longest first, so the two lanes end together; `embed` must encode, so it runs beside the reference.
ORDER = ["embed", "promote", "evaluate", "register", "train", "publish", "gates", "analyse", "chunk", "ingest"]
LANES = 2
# Gates relaxed so the model gates pass and promotion (the last stage) really happens.
THRESHOLDS = [x for t in ("max_split_ks=1.0", "max_split_mean_diff=1.0", "min_val_cosine=0", "min_ood_cosine=0",
                          "max_ood_val_gap=1", "must_beat_best_baseline=false") for x in ("--threshold", t)]
RUN_TIMEOUT_S = 1200  # a hang guard only: a whole run takes 1-2 min on an idle 2-core machine, 10 on a crowded one
assert sorted(ORDER) == sorted(STAGES)


def _run_args(epochs: int) -> list[str]:
    return ["run", "--limit-articles", str(SMALL_BUILD_ARTICLES), "--epochs", str(epochs), *THRESHOLDS]


@dataclass
class Outcome:
    root: Path
    killed_rc: int
    marker: str
    rerun: subprocess.CompletedProcess[str]
    # Read after the rerun from the Prefect database the case ran against (its lane's server, which ran nothing
    # else meanwhile, or its own local one):
    flow_runs: list[tuple[str, str]]  # the case's flow runs: (name, state type)
    running: list[str]  # every flow run still RUNNING or PENDING there
    slots: list[tuple[str, int]]  # build slots: (name, active slots)
    seconds: tuple[float, float]  # the killed run, the rerun

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def _env(root: Path, fault: str | None, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LVM_FAULT"))}
    env.update(PREFECT_HOME=str(root / "prefect"), PYTHONPATH=str(REPO), PREFECT_LOGGING_LEVEL="INFO")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    if fault:
        env.update(LVM_FAULT_INJECT=fault, LVM_FAULT_MARKER=str(root / "fault-marker"))
    return env


def _end_session(sid: int) -> None:
    """Kill whatever is left of the job's session (a temporary API server lives in a group of its own)."""
    left = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
                left.append(p)
        except (OSError, psutil.Error):
            pass
    psutil.wait_procs(left, timeout=10)


def _lvm(root: Path, epochs: int, api_url: str | None, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`lvm run` in its own session, like a job a scheduler starts; nothing of the session is left afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *_run_args(epochs), "--data-dir", str(root / "data")],
                            cwd=root, env=_env(root, fault, api_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[test] killed after {RUN_TIMEOUT_S} s"
    finally:
        _end_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _read_prefect(db_path: Path, root: Path) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, int]]]:
    """The case's flow runs (their parameters name its folder), every unfinished flow run, the build slots."""
    with sqlite3.connect(db_path) as db:
        runs = db.execute("select name, state_type, parameters from flow_run").fetchall()
        slots = db.execute("select name, active_slots from concurrency_limit_v2 where name like 'build-%'").fetchall()
    own = [(name, state) for name, state, params in runs if f"{root}/" in str(params)]
    running = [name for name, state, _ in runs if state in ("RUNNING", "PENDING")]
    return own, running, slots


@dataclass
class Lane:
    """A Prefect server that runs one case at a time."""

    server: PrefectServer

    @property
    def db(self) -> Path:
        return self.server.root / "prefect.db"


class Matrix:
    """The lanes, the reference run and the cases, run LANES at a time."""

    def __init__(self, lanes: list[Lane]) -> None:
        self.lanes: queue.Queue[Lane] = queue.Queue()
        for lane in lanes:
            self.lanes.put(lane)
        self.reference_root = Path(tempfile.mkdtemp(prefix="lvm-crash-reference-"))
        self.roots = [self.reference_root]  # removed when the module is done
        self.reference_done = threading.Event()
        self.reference_error: str | None = None
        self.reference_seconds = 0.0

    def reference(self) -> None:
        lane = self.lanes.get()
        t0 = time.monotonic()
        try:
            clean = _lvm(self.reference_root, 1, lane.server.api_url)
            if clean.returncode != 0:
                self.reference_error = clean.stdout[-4000:]
        finally:
            self.reference_seconds = time.monotonic() - t0
            self.lanes.put(lane)
            self.reference_done.set()

    def case(self, stage: str) -> Outcome:
        root = Path(tempfile.mkdtemp(prefix=f"lvm-crash-{stage}-"))
        self.roots.append(root)
        (root / "prefect").mkdir()
        if stage != "embed":
            self.reference_done.wait()
            if self.reference_error is not None:
                raise RuntimeError(f"the clean reference run failed:\n{self.reference_error}")
            shutil.copytree(self.reference_root / "data" / "cache", root / "data" / "cache")
        epochs = EPOCHS.get(stage, 1)
        lane = self.lanes.get()
        try:
            if stage in TEMPORARY_SERVER_STAGES:
                api_url, db = None, root / "prefect" / "prefect.db"
            else:
                api_url, db = lane.server.api_url, lane.db
            t0 = time.monotonic()
            killed = _lvm(root, epochs, api_url, STAGES[stage])
            t1 = time.monotonic()
            rerun = _lvm(root, epochs, api_url)
            t2 = time.monotonic()
            runs, running, slots = _read_prefect(db, root)
        finally:
            self.lanes.put(lane)
        marker = root / "fault-marker"
        return Outcome(root, killed.returncode, marker.read_text() if marker.exists() else killed.stdout[-3000:],
                       rerun, runs, running, slots, (t1 - t0, t2 - t1))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory):
    roots = [tmp_path_factory.mktemp(f"crash-lane-{i}") for i in range(LANES)]
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        starting = [pool.submit(start_server, root) for root in roots]
    servers = [f.result() for f in starting]  # raises (after the pool is done) if one did not come up
    try:
        yield Matrix([Lane(s) for s in servers])
    finally:
        for s in servers:
            stop_process(s.process)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, matrix: Matrix) -> dict[str, Outcome]:
    """Every selected case (`-k ingest` runs the reference and that case only)."""
    selected = {item.callspec.params["stage"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    try:
        with ThreadPoolExecutor(max_workers=LANES) as pool:
            ref = pool.submit(matrix.reference)
            futures = {stage: pool.submit(matrix.case, stage) for stage in ORDER if stage in selected}
            ref.result()
            results = {stage: futures[stage].result() for stage in STAGES if stage in futures}
        print(f"\ncrash matrix, seconds: reference {matrix.reference_seconds:.0f}; killed run + rerun: "
              + ", ".join(f"{stage} {o.seconds[0]:.0f}+{o.seconds[1]:.0f}" for stage, o in results.items()))
        yield results
    finally:
        for root in matrix.roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(matrix: Matrix, outcomes: dict[str, Outcome]) -> Path:
    assert matrix.reference_error is None, matrix.reference_error
    return matrix.reference_root


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

    # Prefect (the case's server, or its local database): no flow run left RUNNING, the build slot free
    assert [name for name, _ in o.flow_runs].count("pipeline-sample") == 2, o.flow_runs  # the killed run, the rerun
    assert o.running == [], o.running
    assert o.slots and all(active == 0 for _, active in o.slots), o.slots
