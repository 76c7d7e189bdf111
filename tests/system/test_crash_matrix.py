"""Crash matrix: `lvm run` SIGKILLed (its process group) at every stage, and the same command again each time.

The runs talk to a real, persistent Prefect server (`prefect server start`, leases on disk), as scheduled
jobs do: a dead run's flow runs and slot lease outlive it there and must be reclaimed by the next run.

The kill points form two chains, each in one data folder: one over the build's stages, one over the stages
after it. Each run of a chain is killed at the chain's next stage, so it must first recover from everything the
runs before it left (their held slot, RUNNING flow runs and MLflow runs, staging folders, half-written caches
and checkpoints) and get past the stage where the last one died. A last run then completes and must leave what
a clean run leaves: the same dataset, one complete model version per finished training, a champion that passed
its gates, no RUNNING MLflow run or Prefect flow run, no staging folders, no held slot. One more case
(`TEMPORARY_SERVER_STAGE`) runs `lvm build` without a server, on the temporary local API each `lvm` process
starts, which dies with the killed process and takes the slot's lease with it: one kill, one rerun, the same
checks of the dataset and of Prefect.

Cost: three lanes at once: the build chain and the model chain, each with its own server, and the
temporary-server case. The model chain's first run builds and publishes the dataset before its kill (at `train`):
that dataset is the clean build the other folders' datasets must equal. The build chain's cache holds only the
first encoding block of the vectors, so its `embed` kill meets a real encode of the next blocks and the next run
resumes a half-filled cache; the other folders start from a full cache. Both come from the session's embedding
cache (the same vectors; it only saves encodes), which the session's small dataset (the same articles) fills first.
(No `model` stage can be selected away: `-k ingest` still runs the model chain, for its clean build.)
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lvm_core.data.embedding.embed import embed_texts
from tests.fixtures.builds import (
    SMALL_BUILD_ARTICLES,
    drop_cached_vectors,
    session_embedding_cache,
)
from tests.fixtures.paths import REPO
from tests.fixtures.prefect_server import PrefectServer, seed_prefect_db, start_server, stop_process
from tests.fixtures.processes import end_session
from tests.fixtures.scenarios import explained_by, outcome_of, run_side_by_side

pytestmark = pytest.mark.slow


# stage -> fault (lvm_core/runtime/faults.py), in pipeline order: the chain kills one run at each.
# train dies early in its second epoch (about 19 batches an epoch here), after a finished one.
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
EPOCHS = 2  # for every run of a chain: the `train` kill needs a second epoch, and a resume the same config
CHAINS = {"build": list(STAGES)[:6], "model": list(STAGES)[6:]}  # in pipeline order
assert CHAINS["build"][-1] == "publish" and sum(CHAINS.values(), []) == list(STAGES)
# Without PREFECT_API_URL: the temporary API dies with the killed run, its in-memory lease on the build slot
# (taken before ingest) too, and the slot stays counted as held in the local database until the rerun reclaims it.
TEMPORARY_SERVER_STAGE = "chunk"
LANES = 2  # servers: one per chain; the temporary-server case runs beside them on its own local API
TEMPORARY = "temporary-server"  # the temporary-server case's name among the outcomes
# Gates relaxed so the model gates pass and promotion (the last stage) really happens.
THRESHOLDS = [x for t in ("max_split_ks=1.0", "max_split_mean_diff=1.0", "min_val_cosine=0", "min_ood_cosine=0",
                          "max_ood_val_gap=1", "must_beat_best_baseline=false") for x in ("--threshold", t)]
MARKER_FILE = "fault-marker"  # what the fault point writes when it fires (LVM_FAULT_MARKER)
RUNS_LOG = "runs.log"  # the output of every `lvm` run in a folder, one after the other: what a failure shows
# The build chain's cache keeps the first block a cold encode stored (the session's cache was filled by one):
# the blocks after it are then encoded as in a cold build, batch for batch, so their vectors are bitwise the
# clean build's (a vector's last bits depend on the batch it was encoded in). The 14 articles have ~1,450
# chunks: two more blocks, and the `embed` kill (after the second encoded block) has one to lose.
FIRST_BLOCK = inspect.signature(embed_texts).parameters["flush_every"].default
RUN_TIMEOUT_S = 1200  # a hang guard only: a whole run takes 1-2 min on an idle 2-core machine, 10 on a crowded one


def _run_args(epochs: int) -> list[str]:
    return ["run", "--limit-articles", str(SMALL_BUILD_ARTICLES), "--epochs", str(epochs), *THRESHOLDS]


# The temporary-server case runs the command of the first report of a hung rebuild: `lvm build`, killed, again.
# The same options as `lvm run`'s build (the model thresholds are build options too), hence the same dataset.
BUILD_ARGS = ["build", "--limit-articles", str(SMALL_BUILD_ARTICLES), *THRESHOLDS]


@dataclass
class Killed:
    """A run killed at a fault point: its exit code and what the fault point wrote (or the run's output)."""

    stage: str
    rc: int
    marker: str
    seconds: float


@dataclass
class Outcome:
    """A folder after its killed run(s) and the run that completed."""

    root: Path
    killed: list[Killed]
    rerun: subprocess.CompletedProcess[str]
    # Read after the last run from the Prefect database the folder's runs used (their lane's server, which ran
    # nothing else meanwhile, or their own local one):
    flow_runs: list[tuple[str, str]]  # the folder's flow runs: (name, state type)
    running: list[str]  # every flow run still RUNNING or PENDING there
    slots: list[tuple[str, int]]  # build slots: (name, active slots)
    rerun_seconds: float
    first_published: Path | None = None  # manifest and vectors of what the chain's first run published, kept
    command: str = "run"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / RUNS_LOG


def _env(root: Path, fault: str | None, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LVM_FAULT"))}
    env.update(PREFECT_HOME=str(root / "prefect"), PYTHONPATH=str(REPO), PREFECT_LOGGING_LEVEL="INFO",
               OMP_NUM_THREADS="1")  # two lanes on two cores: one compute thread each, no oversubscription
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    if fault:
        env.update(LVM_FAULT_INJECT=fault, LVM_FAULT_MARKER=str(root / MARKER_FILE))
    return env




def _lvm(root: Path, args: list[str], api_url: str | None, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`lvm ARGS` in its own session, like a job a scheduler starts; nothing of the session is left afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args, "--data-dir", str(root / "data")],
                            cwd=root, env=_env(root, fault, api_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[test] killed after {RUN_TIMEOUT_S} s"
    finally:
        end_session(proc.pid)
    with (root / RUNS_LOG).open("a") as log:
        log.write(f"\n===== lvm {' '.join(args)} (fault {fault}): exit {proc.returncode} =====\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _read_prefect(db_path: Path, root: Path) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, int]]]:
    """The case's flow runs (their parameters name its folder), every unfinished flow run, the build slots."""
    with sqlite3.connect(db_path) as db:
        runs = db.execute("select name, state_type, parameters from flow_run").fetchall()
        slots = db.execute("select name, active_slots from concurrency_limit_v2 where name like 'build-%'").fetchall()
    own = [(name, state) for name, state, params in runs if f"{root}/" in str(params)]
    running = [name for name, state, _ in runs if state in ("RUNNING", "PENDING")]
    return own, running, slots


def _kill_at(root: Path, stage: str, args: list[str], api_url: str | None) -> Killed:
    marker = root / MARKER_FILE
    marker.unlink(missing_ok=True)
    t0 = time.monotonic()
    run = _lvm(root, args, api_url, STAGES[stage])
    text = marker.read_text() if marker.exists() else run.stdout[-3000:]
    return Killed(stage, run.returncode, text, time.monotonic() - t0)


def _published(data_dir: Path) -> list[Path]:
    """The dataset folders published in a data folder (not staging, backup or failed ones)."""
    datasets = data_dir / "datasets"
    return [p for p in datasets.iterdir() if not p.name.startswith((".", "_"))] if datasets.is_dir() else []


def _keep_published(root: Path) -> Path | None:
    """A copy of the published dataset's manifest and vectors (later runs of the folder publish over it)."""
    published = _published(root / "data")
    if len(published) != 1:
        return None
    kept = root / "first-published"
    kept.mkdir()
    for name in ("manifest.json", "embeddings.npy"):
        shutil.copy2(published[0] / name, kept / name)
    return kept


@dataclass
class Lane:
    """A Prefect server that runs one folder's runs at a time."""

    server: PrefectServer

    @property
    def db(self) -> Path:
        return self.server.root / "prefect.db"


class Matrix:
    """The chains of kills on their lanes' servers and the temporary-server case."""

    def __init__(self, lanes: list[Lane]) -> None:
        self.lanes = lanes
        self.roots: list[Path] = []  # removed when the module is done

    def _root(self, name: str) -> Path:
        root = Path(tempfile.mkdtemp(prefix=f"lvm-crash-{name}-"))
        (root / "prefect").mkdir()
        self.roots.append(root)
        return root

    @staticmethod
    def _warm(root: Path, first_block_only: bool = False) -> None:
        """The vectors of these articles (or the first block stored) from the session's cache, if it has them."""
        cache = session_embedding_cache()
        if cache is None:
            return
        shutil.copytree(cache, root / "data" / "cache")
        if first_block_only:
            drop_cached_vectors(root / "data" / "cache", f"id > {FIRST_BLOCK}")

    def chain(self, name: str, stages: list[str], lane: Lane) -> Outcome:
        """One folder: a run killed at each of `stages` in turn, then a run that must complete."""
        root = self._root(name)
        with explained_by({f"the {name} chain's runs ({root / RUNS_LOG})": root / RUNS_LOG,
                           "its lane's Prefect server": lane.server.log_tail}):
            self._warm(root, first_block_only=name == "build")
            killed, first_published = [], None
            for stage in stages:
                killed.append(_kill_at(root, stage, _run_args(EPOCHS), lane.server.api_url))
                if len(killed) == 1:
                    first_published = _keep_published(root)
                if killed[-1].rc != -signal.SIGKILL:
                    break  # the run did not die at its point; the tests say which
            t0 = time.monotonic()
            rerun = _lvm(root, _run_args(EPOCHS), lane.server.api_url)
            return Outcome(root, killed, rerun, *_read_prefect(lane.db, root), time.monotonic() - t0, first_published)

    def temporary_server_case(self) -> Outcome:
        """Killed and rerun without a server: on the temporary local API each run starts."""
        root = self._root(TEMPORARY_SERVER_STAGE)
        with explained_by({f"the temporary-server case's runs ({root / RUNS_LOG})": root / RUNS_LOG}):
            self._warm(root)
            seed_prefect_db(root / "prefect" / "prefect.db")
            killed = _kill_at(root, TEMPORARY_SERVER_STAGE, BUILD_ARGS, None)
            t0 = time.monotonic()
            rerun = _lvm(root, BUILD_ARGS, None)
            return Outcome(root, [killed], rerun, *_read_prefect(root / "prefect" / "prefect.db", root),
                           time.monotonic() - t0, command="build")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path):
    # small_dataset: the session's build of the same articles fills the embedding cache the lanes start from
    # (the longest file of the suite; without it, run first on a test worker, every lane encoded cold)
    roots = [tmp_path_factory.mktemp(f"crash-lane-{i}") for i in range(LANES)]
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        starting = [pool.submit(start_server, root) for root in roots]
    servers = [f.result() for f in starting]  # raises (after the pool is done) if one did not come up
    m = Matrix([Lane(s) for s in servers])
    try:
        yield m
    finally:
        for s in servers:
            stop_process(s.process)
        for root in m.roots:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Outcomes:
    """Each selected chain's and the temporary-server case's outcome, or what its scenario raised."""

    runs: dict[str, Outcome | BaseException]  # by chain name, and TEMPORARY for the temporary-server case

    def chain(self, name: str) -> Outcome:
        """The chain's outcome; raises the chain's failure (with its runs' log tail) in the test that asks."""
        return outcome_of(self.runs, name)

    @property
    def clean_build(self) -> Path:
        """What the model chain's first run published before it was killed (at a stage after `publish`): a clean
        build's manifest and vectors."""
        model = self.chain("model")
        with explained_by({f"the model chain's runs ({model.log})": model.log}):
            assert model.first_published is not None, "the model chain's first run published no dataset"
        return model.first_published


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, matrix: Matrix) -> Outcomes:
    """The chains over the selected stages (`-k ingest` kills at ingest only; the model chain always runs,
    for its clean build), and the temporary-server case when selected, all three at once."""
    items = [item for item in request.session.items if item.module is request.module]
    params = [item.callspec.params for item in items if hasattr(item, "callspec")]
    stages = {p["stage"] for p in params if "stage" in p}
    chains = {}
    for name, chain_stages in CHAINS.items():
        selected = [stage for stage in chain_stages if stage in stages]
        if selected or name == "model" or any(p.get("chain") == name for p in params):
            chains[name] = selected or chain_stages
    scenarios: dict[str, Callable[[], Outcome]] = {
        name: functools.partial(matrix.chain, name, chain_stages, lane)
        for (name, chain_stages), lane in zip(chains.items(), matrix.lanes)
    }
    if any("temporary" in item.name for item in items):
        scenarios[TEMPORARY] = matrix.temporary_server_case
    result = Outcomes(run_side_by_side(scenarios))
    print("\ncrash matrix, seconds: " + "; ".join(
        f"{name} failed" if not isinstance(o, Outcome)
        else f"{name} " + ", ".join(f"{k.stage} {k.seconds:.0f}" for k in o.killed) + f", last run {o.rerun_seconds:.0f}"
        for name, o in result.runs.items()))
    return result


def _dataset(data_dir: Path) -> Path:
    published = _published(data_dir)
    assert len(published) == 1, published
    return published[0]


def _mlflow(data_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}", registry_uri=f"sqlite:///{data_dir / 'mlflow.db'}")


def _assert_killed_at(k: Killed, stage: str) -> None:
    assert k.rc == -signal.SIGKILL, f"the run was not killed at {stage} (rc {k.rc}): {k.marker}"
    assert k.marker.startswith(f"kill@{STAGES[stage].split('@')[1].split('#')[0]}"), k.marker


def _assert_completes_like_a_clean_run(o: Outcome, clean_build: Path, trainings: int, reaped_training: bool) -> None:
    with explained_by({f"the folder's runs ({o.log})": o.log}):
        _assert_like_a_clean_run(o, clean_build, trainings, reaped_training)


def _assert_like_a_clean_run(o: Outcome, clean_build: Path, trainings: int, reaped_training: bool) -> None:
    assert o.rerun.returncode == 0, f"the last run exited {o.rerun.returncode}"

    # the dataset is the one a clean run builds
    ds, ref = _dataset(o.data_dir), clean_build
    manifest, ref_manifest = (json.loads((p / "manifest.json").read_text()) for p in (ds, ref))
    assert manifest["content_hash"] == ref_manifest["content_hash"]
    np.testing.assert_array_equal(np.load(ds / "embeddings.npy"), np.load(ref / "embeddings.npy"))

    # no staging, backup or failed folders of the dead runs
    leftovers = [p.name for p in (o.data_dir / "datasets").iterdir() if p != ds]
    assert leftovers == [], leftovers

    # Prefect (the lane's server, or the folder's local database): no flow run left RUNNING, the build slot free
    top_runs = [name for name, _ in o.flow_runs].count("pipeline-sample" if o.command == "run" else "build-sample")
    assert top_runs == len(o.killed) + 1, o.flow_runs  # the killed runs, the last one
    assert o.running == [], o.running
    assert o.slots and all(active == 0 for _, active in o.slots), o.slots
    if o.command == "build":
        return

    # MLflow: nothing RUNNING; every version comes from a finished training run or is marked incomplete
    client = _mlflow(o.data_dir)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    killed = {r.info.run_id for r in runs if r.info.status == "KILLED"}
    assert all(client.get_run(r).data.tags.get("failure_reason", "").startswith("killed:") for r in killed)
    if reaped_training:
        assert killed, "a run a kill interrupted mid-training should have been reaped as KILLED"
    versions = client.search_model_versions("name = 'lvm-amn'")
    for mv in versions:
        finished = client.get_run(mv.run_id).info.status == "FINISHED"
        assert finished or "incomplete" in mv.tags, (mv.version, client.get_run(mv.run_id).info.status, mv.tags)
    complete = [mv for mv in versions if "incomplete" not in mv.tags]
    assert len(complete) == trainings, [(mv.version, mv.tags) for mv in versions]

    # champion: a complete version that passed its gates
    champion = client.get_model_version_by_alias("lvm-amn", "champion")
    assert champion.tags.get("gates_passed") == "true" and "incomplete" not in champion.tags


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_at_each_stage_first_recovers_from_the_kills_before(stage: str, outcomes: Outcomes):
    """The chain's run for `stage` got past every earlier kill point of its chain and died where it was told to."""
    [name] = [name for name, chain_stages in CHAINS.items() if stage in chain_stages]
    o = outcomes.chain(name)
    killed = {k.stage: k for k in o.killed}
    with explained_by({f"the {name} chain's runs ({o.log})": o.log}):
        assert stage in killed, f"the chain stopped before {stage}: {[(k.stage, k.rc, k.marker) for k in killed.values()]}"
        _assert_killed_at(killed[stage], stage)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_the_run_after_a_chain_of_kills_completes_like_a_clean_run(chain: str, outcomes: Outcomes):
    o = outcomes.chain(chain)
    with explained_by({f"the {chain} chain's runs ({o.log})": o.log}):
        for k in o.killed:
            _assert_killed_at(k, k.stage)
    stages = [k.stage for k in o.killed]
    # Complete versions: one from each run that got past registering (those killed at `evaluate` and at
    # `promote`) and one from the last run; a run killed earlier left none, or one marked incomplete.
    trainings = 1 + sum(s in ("evaluate", "promote") for s in stages)
    _assert_completes_like_a_clean_run(o, outcomes.clean_build, trainings,
                                       reaped_training=any(s in ("train", "register", "evaluate") for s in stages))


def test_rerun_after_a_kill_on_the_temporary_server_completes_like_a_clean_run(outcomes: Outcomes):
    o = outcomes.chain(TEMPORARY)
    with explained_by({f"the temporary-server case's runs ({o.log})": o.log}):
        _assert_killed_at(o.killed[0], TEMPORARY_SERVER_STAGE)
    _assert_completes_like_a_clean_run(o, outcomes.clean_build, trainings=1, reaped_training=False)
