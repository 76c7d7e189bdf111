"""Is a holder provably gone? A live process stays alive across a wall-clock step; a dead or recycled one does not."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from lvm_core.runtime.liveness import Owner


def test_a_live_holder_stays_alive_when_the_wall_clock_steps():
    """Recorded before a clock step, the wall-clock start time of this very process no longer matches the one
    read now (the kernel's boot time moved with the clock); its start in ticks since boot still does."""
    me = Owner.this_process("test")
    assert me.pid_ticks is not None  # Linux
    stepped = dataclasses.replace(me, pid_started=me.pid_started + 120.0)
    assert stepped.gone(stale_after=1.0) is None
    old_record = dataclasses.replace(stepped, pid_ticks=None)  # written before ticks were recorded
    assert "pid reused" in (old_record.gone(stale_after=1.0) or "")


def test_a_recycled_pid_and_an_ended_process_are_gone():
    me = Owner.this_process()
    assert "pid reused" in (dataclasses.replace(me, pid_ticks=me.pid_ticks - 1).gone(stale_after=1.0) or "")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    ended = dataclasses.replace(me, pid=child.pid)
    assert "no longer running" in (ended.gone(stale_after=1.0) or "")
    assert Owner.from_dict(me.to_dict()) == me
