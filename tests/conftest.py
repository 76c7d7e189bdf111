"""Fixtures of every tier: an isolated Prefect/MLflow environment, the temporary Prefect API and one small
real dataset per session. Shared helpers and constants live in tests/fixtures/; tier-only fixtures in the
tier's conftest.py.

Every process a test starts inherits `LVM_TEST_SESSION` (this session's temp dir); when the session ends,
a process still alive that carries it, or still below the pytest process, is reported, killed and fails
the run (`no_process_outlives_the_session`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.builds import SESSION_ENV

# Isolate every run before prefect/mlflow are imported anywhere. A copy of this module imported a second time
# in the same process (under another name) must find the same session folder, not make another.
_SESSION_PID_ENV = "LVM_TEST_SESSION_PID"
if os.environ.get(_SESSION_PID_ENV) == str(os.getpid()) and os.environ.get(SESSION_ENV):
    _SESSION_HOME = Path(os.environ[SESSION_ENV])
else:  # a new session (a pytest started by a test, or a parallel worker, inherits its parent's marker, not its pid)
    _parent_home = os.environ.get(SESSION_ENV)
    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="lvm-tests-"))
    # Gone with the process that made it (~140 MB after a full run: the session's data, caches, Prefect DB).
    atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
    os.environ[SESSION_ENV] = str(_SESSION_HOME)
    os.environ[_SESSION_PID_ENV] = str(os.getpid())
    if _parent_home and os.environ.get("PREFECT_HOME", "").startswith(_parent_home):
        del os.environ["PREFECT_HOME"]  # the parent session's Prefect database is not this session's
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LVM_NO_PROGRESS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Three test workers (and the servers and jobs they start) share two cores: one compute thread per process
# (torch, ONNX Runtime, OpenBLAS) keeps them from oversubscribing the cores and spinning on each other.
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

LEFTOVER_GRACE_S = 15.0  # a server told to stop a moment ago may still be shutting down
# Helpers of the Python runtime that live exactly as long as the interpreter (and end with it).
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "joblib.externals.loky")


from tests.fixtures.builds import SMALL_BUILD_ARTICLES, SMALL_BUILD_THRESHOLDS  # noqa: E402

# A local webhook receiver, for the alert tests of every tier (a module that imported it would shadow it); the
# real-server fixtures are in tests/system/conftest.py.
from tests.fixtures.prefect_server import webhook_receiver  # noqa: E402, F401


def session_processes(marker: str | None = None) -> list[psutil.Process]:
    """Live processes this session started: below pytest, or carrying the session's marker (orphans)."""
    marker = marker or os.environ[SESSION_ENV]
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for p in psutil.process_iter():
        if p.pid == me.pid or p.pid in found:
            continue
        try:
            if p.environ().get(SESSION_ENV) == marker:
                found[p.pid] = p
        except (psutil.Error, OSError):
            pass  # gone, or not ours to read
    alive = []
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and not any(h in " ".join(p.cmdline()) for h in INTERPRETER_HELPERS):
                alive.append(p)
        except psutil.Error:
            pass
    return alive


def _describe(p: psutil.Process) -> str:
    try:
        home = p.environ().get("PREFECT_HOME", "?")
        return f"pid {p.pid} (parent {p.ppid()}, PREFECT_HOME {home}): {' '.join(p.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {p.pid} (gone while being described)"


def end_leftover_processes(grace_s: float | None = None, marker: str | None = None) -> list[str]:
    """Wait up to `grace_s` for the session's processes to end; kill the rest and describe them."""
    deadline = time.monotonic() + (LEFTOVER_GRACE_S if grace_s is None else grace_s)
    while (left := session_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    report = [_describe(p) for p in left]
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    return report


def _stop_temporary_prefect_servers() -> None:
    """Prefect's in-process temporary API servers stop only at interpreter exit: stop them now."""
    server_mod = sys.modules.get("prefect.server.api.server")
    if server_mod is None:
        return
    for server in list(server_mod.SubprocessASGIServer._instances.values()):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - the check below reports whatever survives
            pass


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """Set up first, torn down last: every server, worker or cluster a test started must be gone by then."""
    yield
    _stop_temporary_prefect_servers()
    report = end_leftover_processes()
    if report:
        pytest.fail(f"{len(report)} process(es) started by the tests outlived them (now killed):\n  " + "\n  ".join(report),
                    pytrace=False)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the in-process flow runs of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def session_data_dir() -> Path:
    d = _SESSION_HOME / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _xdist_shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The folder every parallel test worker of this run sees (None without workers)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return None
    return tmp_path_factory.getbasetemp().parent


@pytest.fixture(scope="session")
def small_dataset(prefect_harness, session_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dataset built by the build flow from the first articles of the embedded sample.

    With parallel test workers one worker builds it (and fills the embedding cache beside it) and every
    worker copies that data folder into its own: the same dataset, one cold encode per run.
    """
    from filelock import FileLock

    shared = _xdist_shared_folder(tmp_path_factory)
    if shared is None:
        return _build_small_dataset(session_data_dir)
    built = shared / "small-dataset"
    with FileLock(str(shared / "small-dataset.lock")):
        if not (built / "BUILT").exists():
            shutil.rmtree(built, ignore_errors=True)
            dataset = _build_small_dataset(built)
            (built / "BUILT").write_text(dataset.name)
    name = (built / "BUILT").read_text()
    shutil.copytree(built, session_data_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("BUILT", "*.lock"))
    return session_data_dir / "datasets" / name


def _build_small_dataset(data_dir: Path) -> Path:
    from flows.build_dataset import build_dataset
    from lvm_core.contracts.build_options import BuildOptions

    path = build_dataset(
        source="sample",
        data_dir=str(data_dir),
        limit_articles=SMALL_BUILD_ARTICLES,
        options=BuildOptions(thresholds=SMALL_BUILD_THRESHOLDS),
    )
    return Path(path)


# Test files that share the session's deployed Prefect server (its start, deployments and worker cost a minute):
# parallel workers run them on one worker, one after the other.
DEPLOYED_SERVER_FILES = frozenset({
    "tests/system/test_prefect_server.py",
    "tests/system/test_prefect_ui.py",
    "tests/system/test_worker_crash.py",
})


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, except that the files of `DEPLOYED_SERVER_FILES` are one unit of work.

    (xdist's own `loadgroup` cannot do this here: the group suffix it puts on test ids does not reach the
    scheduler with this pytest.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesSharingTheServer(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "deployed-server" if file in DEPLOYED_SERVER_FILES else file

    return FilesSharingTheServer(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test file that uses the deployed server must be listed in DEPLOYED_SERVER_FILES (else a parallel
    run starts a second server for it)."""
    unlisted = sorted({item.nodeid.split("::", 1)[0] for item in items
                       if "deployed_server" in getattr(item, "fixturenames", ())} - DEPLOYED_SERVER_FILES)
    if unlisted:
        raise pytest.UsageError(f"{', '.join(unlisted)} use(s) deployed_server: add to DEPLOYED_SERVER_FILES in "
                                "tests/conftest.py")
