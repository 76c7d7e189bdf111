"""SIGTERM and SIGINT stop `lvm build` cleanly, and after a stop the same command completes.

The CLI runs as a job in its own session (start_new_session), with its own Prefect home, so the temporary
Prefect API server it starts is its child. A fault (lvm_core/runtime/faults.py) holds the build at a known point and
writes a marker; then the signal goes in. Afterwards: the conventional exit code (130 / 143) and one line,
no process of the session left (the temporary API server included), the flow run Crashed or Cancelled in
the Prefect database (not Running), the build's concurrency slot free, nothing published. The SIGINT goes
to the whole process group, as a terminal's Ctrl-C does.

The SIGINT case stops the build with its staging folder half assembled (on the session's embedding cache when
another test filled it), and the same command then completes; the SIGTERM case stops the encoding of a block,
and the embedding cache keeps every vector it had. The two cases run at the same time, each in its own folder
with its own Prefect home.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.builds import (
    SMALL_BUILD_ARTICLES,
    SMALL_BUILD_THRESHOLDS,
    drop_cached_vectors,
    session_embedding_cache,
)
from tests.fixtures.paths import REPO
from tests.fixtures.prefect_server import seed_prefect_db
from tests.fixtures.scenarios import explained_by, outcome_of, run_side_by_side

BUILD = [
    "build", "--limit-articles", str(SMALL_BUILD_ARTICLES),
    *[x for name, value in SMALL_BUILD_THRESHOLDS.items() for x in ("--threshold", f"{name}={value}")],
]
MARKER_TIMEOUT_S = 300  # server start, model load and a cold encode on a busy 2-core machine
EXIT_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300


def _env(root: Path, fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LVM_FAULT"))}
    env.update(
        PREFECT_HOME=str(root / "prefect"),
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PYTHONPATH=str(REPO),
        LVM_NO_PROGRESS="1",
    )
    if fault:
        env.update(LVM_FAULT_INJECT=fault, LVM_FAULT_MARKER=str(root / "fault-marker"))
    return env


def _start(root: Path, log: Path, fault: str | None = None) -> subprocess.Popen:
    seed_prefect_db(root / "prefect" / "prefect.db")
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *BUILD, "--data-dir", str(root / "data")],
        cwd=REPO, env=_env(root, fault), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _session(sid: int) -> list[psutil.Process]:
    """Every live process of the session `sid` (the CLI started it: sid == the CLI's pid)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def _session_gone(sid: int, within_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within_s
    while (left := _session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill_session(proc: subprocess.Popen) -> None:
    """Leave nothing behind, whatever happened: the CLI, its group and anything else of its session."""
    for p in [*_session(proc.pid), *([psutil.Process(proc.pid)] if proc.poll() is None else [])]:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _wait_for_marker(proc: subprocess.Popen, marker: Path, log: Path) -> None:
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not marker.exists():
        assert proc.poll() is None, f"the build ended (rc {proc.returncode}) before the fault point"
        assert time.monotonic() < deadline, f"fault point not reached in {MARKER_TIMEOUT_S} s"
        time.sleep(0.2)


def _prefect_db(root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    with sqlite3.connect(root / "prefect" / "prefect.db") as db:
        runs = db.execute("select name, state_type from flow_run").fetchall()
        slots = db.execute("select name, active_slots from concurrency_limit_v2 where name like 'build-%'").fetchall()
    return runs, slots


def _published(data_dir: Path) -> list[str]:
    datasets = data_dir / "datasets"
    if not datasets.exists():
        return []
    return sorted(p.name for p in datasets.iterdir() if (p / "READY").exists() or not p.name.startswith((".", "_")))


def _interrupt(root: Path, signum: int, fault: str, to_group: bool = False) -> None:
    """The build held at `fault`, then the signal: a clean stop that leaves nothing running, held or published."""
    marker, log = root / "fault-marker", root / "interrupted.log"
    proc = _start(root, log, fault)
    try:
        with explained_by({f"the build stopped with {signal.Signals(signum).name} ({log})": log}):
            _wait_for_marker(proc, marker, log)
            assert marker.read_text().startswith(fault.split("#")[0]), marker.read_text()
            t0 = time.monotonic()
            if to_group:
                os.killpg(proc.pid, signum)  # like Ctrl-C in a terminal: the whole foreground process group
            else:
                os.kill(proc.pid, signum)  # like `kill <pid>` or a scheduler stopping the job
            try:
                rc = proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {EXIT_TIMEOUT_S} s after {signal.Signals(signum).name}")
            took = time.monotonic() - t0
            out = _tail(log)
            assert rc == 128 + signum, f"rc {rc} after {signal.Signals(signum).name} ({took:.1f} s)"
            stopped = [line for line in out.splitlines() if line.startswith("interrupted:")]
            assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0], stopped
            assert "Traceback" not in out, "a traceback in the output"

            # nothing of the job is left: not the temporary Prefect API server either
            left = _session_gone(proc.pid, within_s=30)  # the API server stops after the CLI; slowly on a busy machine
            assert not left, [(p.pid, " ".join(p.cmdline()[:6])) for p in left]

            runs, slots = _prefect_db(root)
            assert runs and all(state in ("CRASHED", "CANCELLED") for _, state in runs), runs
            assert slots and all(active == 0 for _, active in slots), slots
            assert _published(root / "data") == [], _published(root / "data")
    finally:
        _kill_session(proc)


def _rerun(root: Path) -> None:
    """The same command again completes and publishes (what the stopped run left does not stand in its way)."""
    rerun_log = root / "rerun.log"
    again = _start(root, rerun_log)
    with explained_by({f"the rerun ({rerun_log})": rerun_log}):
        try:
            rc = again.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the rerun did not finish in {RUN_TIMEOUT_S} s")
        finally:
            _kill_session(again)
        assert rc == 0, f"the rerun exited {rc}"
        published = _published(root / "data")
        assert len(published) == 1 and (root / "data" / "datasets" / published[0] / "READY").exists(), published
        runs, slots = _prefect_db(root)
        assert sorted(state for _, state in runs) in (["COMPLETED", "CRASHED"], ["CANCELLED", "COMPLETED"]), runs
        assert all(active == 0 for _, active in slots), slots


def _cached_vectors(cache: Path) -> int:
    """Vectors in the embedding cache folder, after SQLite's own integrity check of each database passed."""
    from lvm_core.data.embedding.cache import DB_FILE

    total = 0
    for db in cache.glob(f"embeddings/*/{DB_FILE}"):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("pragma integrity_check").fetchone() == ("ok",), db
            total += conn.execute("select count(*) from vectors").fetchone()[0]
    return total


def _warm(root: Path) -> bool:
    """The session's embedding cache of these articles in the folder, when another test filled it."""
    cache = session_embedding_cache()
    if cache is not None:
        shutil.copytree(cache, root / "data" / "cache")
    return cache is not None


def _ctrl_c_case(root: Path) -> None:
    _warm(root)
    _interrupt(root, signal.SIGINT, "hang@analyse", to_group=True)
    _rerun(root)


def _sigterm_case(root: Path) -> None:
    cache = root / "data" / "cache"
    if _warm(root):  # a tenth of the vectors missing: one short block to encode before the fault point
        drop_cached_vectors(cache, "id % 10 = 0")
    before = _cached_vectors(cache)
    _interrupt(root, signal.SIGTERM, "hang@embed.batch")
    assert _cached_vectors(cache) >= before


CASES = {"ctrl_c": _ctrl_c_case, "sigterm": _sigterm_case}


@pytest.fixture(scope="module")
def stopped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            small_dataset: Path) -> dict[str, object]:
    """The selected cases, run at once (each mostly waits on its own job and its temporary API server): None
    for a case that passed, else what it raised (with its job's log tail), raised again by its test.
    (small_dataset: its build of the same articles fills the session's embedding cache the cases start from.)"""
    names = [item.name for item in request.session.items if item.module is request.module]
    selected = [case for case in CASES if any(case in name for name in names)]
    return run_side_by_side({case: functools.partial(CASES[case], tmp_path_factory.mktemp(f"signals-{case}"))
                             for case in selected})


@pytest.mark.slow
def test_ctrl_c_with_staging_half_assembled_stops_cleanly_and_the_rerun_completes(stopped):
    outcome_of(stopped, "ctrl_c")


@pytest.mark.slow
def test_sigterm_mid_encode_stops_cleanly_and_the_cache_keeps_its_vectors(stopped):
    """The stop lands while the encoder works on a block; the cache stays whole. (That a rerun after a stop
    completes is the Ctrl-C case's; after a SIGKILL mid-encode, the crash matrix's.)"""
    outcome_of(stopped, "sigterm")


# --- the CLI's handling alone, on a command that only waits (no Prefect, about a second each) ---------------

_NAP_APP = """
import sys, time
from pathlib import Path
from flows.cli.common import _Lvm

app = _Lvm()

@app.command()
def nap(ready: Path, slow_cleanup: bool = False) -> None:
    try:
        ready.write_text("ready")
        time.sleep(60)
    finally:
        if slow_cleanup:
            time.sleep(60)

@app.command()
def other() -> None:
    pass

app()
"""


def _nap(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _NAP_APP, "nap", str(ready), *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0] if proc.poll() is not None else "no start"
        time.sleep(0.05)
    return proc, ready


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_exits_with_the_conventional_code_and_one_line(tmp_path: Path, signum: int):
    proc, _ = _nap(tmp_path)
    try:
        os.kill(proc.pid, signum)
        out, _ = proc.communicate(timeout=20)
    finally:
        _kill_session(proc)
    assert proc.returncode == 128 + signum, out
    assert out.strip().splitlines() == [
        f"interrupted: {signal.Signals(signum).name}; the run was stopped and nothing half-written was published "
        f"(exit {128 + signum})"
    ], out


def test_a_second_signal_during_a_slow_shutdown_forces_the_exit(tmp_path: Path):
    proc, _ = _nap(tmp_path, "--slow-cleanup")
    try:
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # cleaning up
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        _kill_session(proc)
    assert proc.returncode == 130, out  # the code of the first signal
    assert "SIGTERM again: forced exit (130)" in out, out


# --- the session's own check: no process a test started outlives the test run ------------------------------

_LEAKY_CONFTEST = """
import tests.conftest
from tests.conftest import *  # noqa: F401,F403 (the session fixtures, the end-of-session check among them)

tests.conftest.LEFTOVER_GRACE_S = 1.0
"""

_LEAKY_TEST = """
import os, subprocess, sys
from pathlib import Path

def test_starts_a_server_and_forgets_it():
    pids = Path(os.environ["LEAK_PIDS"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    # and an orphan: its parent exits at once, so only the session marker in its environment points at the run
    orphan = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    pids.write_text(f"{child.pid} {orphan.stdout.strip()}")
"""


def test_a_process_left_by_a_test_fails_the_run_and_is_killed(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(_LEAKY_CONFTEST)
    (tmp_path / "test_leaky.py").write_text(_LEAKY_TEST)
    pids_file = tmp_path / "pids"
    env = {k: v for k, v in os.environ.items() if k != "LVM_TEST_SESSION"}
    env.update(PYTHONPATH=str(REPO), LEAK_PIDS=str(pids_file))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(tmp_path / "test_leaky.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    child, orphan = (int(x) for x in pids_file.read_text().split())
    try:
        assert run.returncode != 0, run.stdout
        assert "1 passed, 1 error" in run.stdout, run.stdout
        assert "2 process(es) started by the tests outlived them (now killed)" in run.stdout, run.stdout
        assert f"pid {child} " in run.stdout and f"pid {orphan} " in run.stdout, run.stdout
        for pid in (child, orphan):
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    finally:
        for pid in (child, orphan):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
