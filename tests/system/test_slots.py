"""Exclusive slots held by other processes: a killed holder never blocks the next run (not even two waiters
racing to reclaim it); a live one is waited for, visibly, with a timeout."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.paths import REPO
from tests.fixtures.scenarios import ScenarioFailed
from tests.fixtures.slots import active_slots

_HOLD = """
import sys, time
from flows.infra.slots import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _api_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO)}


def _holder(name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, name], stdout=subprocess.PIPE, text=True,
                            env=_api_env(), cwd=REPO, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", "holder never took the slot"
    return proc


class _Lines(logging.Handler):
    """Collects what the slot module logs. Its logger is swapped for one of the test's own, because
    Prefect's logging set-up (which may run mid-test) resets the handlers of its child loggers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from flows.infra import slots

        super().__init__(logging.INFO)
        self.lines: list[str] = []
        logger = logging.getLogger(f"test-slots-{id(self)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)
        monkeypatch.setattr(slots, "_logger", lambda: logger)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_slot_of_a_killed_holder_is_reclaimed(prefect_harness, monkeypatch):
    from flows.infra.slots import exclusive

    holder = _holder("slot-killed")
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert active_slots("slot-killed") == 1  # what SIGKILL leaves behind: the slot still counted as held
    t0 = time.monotonic()
    log = _Lines(monkeypatch)
    with exclusive("slot-killed", timeout_seconds=60):
        assert active_slots("slot-killed") == 1
    assert time.monotonic() - t0 < 30
    assert f"process {holder.pid}" in log.text and "no longer running" in log.text
    assert active_slots("slot-killed") == 0


def test_two_waiters_reclaiming_one_dead_holder_never_hold_the_slot_together(prefect_harness, monkeypatch):
    import threading

    from prefect.client.orchestration import SyncPrefectClient

    from flows.infra.slots import exclusive

    holder = _holder("slot-race")
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(10)
    # Force the race: the first lease released (the dead holder's, in one waiter's reclaim) is followed by
    # a pause until the other waiter, polling, has taken the freed slot. A reclaim that then also lowers
    # the count frees the slot a second time, and both waiters hold it.
    release = SyncPrefectClient.release_concurrency_slots_with_lease
    paused: list[bool] = []

    def slow_release(self, lease_id):
        response = release(self, lease_id)
        if not paused:
            paused.append(True)
            deadline = time.monotonic() + 10
            while self.read_global_concurrency_limit_by_name("slot-race").active_slots < 1:
                assert time.monotonic() < deadline, "the other waiter never took the freed slot"
                time.sleep(0.05)
        return response

    monkeypatch.setattr(SyncPrefectClient, "release_concurrency_slots_with_lease", slow_release)
    inside: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def waiter() -> None:
        try:
            go.wait()
            with exclusive("slot-race", timeout_seconds=60, poll_seconds=0.05):
                t0 = time.monotonic()
                time.sleep(3.0)  # longer than the pause: a wrongly freed slot is taken while this one holds it
                inside.append((t0, time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter, name=f"waiter-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    if errors:  # what a waiter thread raised, as the cause of the failure
        raise ScenarioFailed(f"{len(errors)} waiter(s) failed: {errors!r}") from errors[0]
    assert not errors and len(inside) == 2
    (a0, a1), (b0, b1) = sorted(inside)
    assert b0 >= a1, "both waiters held the slot at once"
    assert active_slots("slot-race") == 0


def test_live_holder_is_waited_for_logged_and_times_out(prefect_harness, monkeypatch):
    from flows.infra import slots

    monkeypatch.setattr(slots, "WAIT_LOG_S", 0.5)
    holder = _holder("slot-live")
    try:
        log = _Lines(monkeypatch)
        with pytest.raises(slots.SlotTimeoutError) as err:
            with slots.exclusive("slot-live", timeout_seconds=3):
                pass
        assert f"pid {holder.pid}" in str(err.value) and slots.SLOT_TIMEOUT_ENV in str(err.value)
        assert "waiting" in log.text and f"pid {holder.pid}" in log.text
        assert active_slots("slot-live") == 1  # the live holder keeps its slot
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
