"""Who is doing a piece of work, and is it provably gone?

A killed process (SIGKILL, an OOM kill, a lost machine) runs no clean-up: it leaves a concurrency slot
held, an MLflow run RUNNING, a staging folder half written. Whoever comes next needs to tell a holder
that is merely slow from one that is dead. An `Owner` record names the process (host, pid and the
process's start time, so a recycled pid is not mistaken for the holder) and carries a heartbeat:

- on the same host, the holder is gone when its pid no longer runs, or runs a different process;
- on another host, it is gone when its heartbeat is older than `stale_after` seconds.

Everything else counts as alive: waiting too long is better than two writers.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

OWNER_FILE = ".owner.json"


def _process_start(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _process_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux `/proc/<pid>/stat`, field 22), else None.

    Unlike the wall-clock start time (`psutil`'s create_time is boot time + this, and the boot time read from
    the kernel moves whenever the wall clock is stepped, e.g. by NTP on a freshly started machine), it never
    changes for a running process: a clock step must not make a live holder look like a recycled pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Owner:
    """One process that holds something, with its last sign of life."""

    host: str
    pid: int
    pid_started: float | None
    since: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.time)
    label: str = ""  # e.g. the flow run that holds it, for the operator
    pid_ticks: int | None = None  # start in clock ticks since boot (Linux): what tells a recycled pid

    @classmethod
    def this_process(cls, label: str = "") -> Owner:
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, pid_started=_process_start(pid), label=label,
                   pid_ticks=_process_ticks(pid))

    def beat(self) -> Owner:
        return replace(self, heartbeat=time.time())

    @property
    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def gone(self, stale_after: float, now: float | None = None) -> str | None:
        """Why the owner is provably gone, or None when it may still be working."""
        if self.is_local:
            started = _process_start(self.pid)
            if started is None:
                return f"process {self.pid} on {self.host} is no longer running"
            ticks = _process_ticks(self.pid) if self.pid_ticks is not None else None
            if ticks is not None:  # records without ticks (older ones, other systems): the wall-clock start
                replaced = ticks != self.pid_ticks
            else:
                replaced = self.pid_started is not None and abs(started - self.pid_started) > 1.0
            return f"process {self.pid} on {self.host} was replaced by another process (pid reused)" if replaced else None
        age = (now if now is not None else time.time()) - self.heartbeat
        if age > stale_after:
            return f"no heartbeat from process {self.pid} on {self.host} for {age:.0f} s (limit {stale_after:.0f} s)"
        return None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        who = f"{self.label} " if self.label else ""
        return f"{who}(pid {self.pid} on {self.host}, since {since}, last heartbeat {time.time() - self.heartbeat:.0f} s ago)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# --- owned folders --------------------------------------------------------------------------------


def claim_dir(path: Path, label: str = "") -> Owner:
    """Record this process as the owner of a work folder (staging, work-in-progress)."""
    owner = Owner.this_process(label)
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNER_FILE).write_text(json.dumps(owner.to_dict()))
    return owner


def dir_owner(path: Path) -> Owner | None:
    try:
        return Owner.from_dict(json.loads((path / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def abandoned_dirs(paths: list[Path], stale_after: float, unowned_after: float = 24 * 3600) -> list[tuple[Path, str]]:
    """The folders among `paths` whose owner is provably gone, with the reason.

    A folder without an owner record (older builds) counts as abandoned once untouched for `unowned_after`.
    """
    out: list[tuple[Path, str]] = []
    now = time.time()
    for path in paths:
        owner = dir_owner(path)
        if owner is None:
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue
            if age > unowned_after:
                out.append((path, f"no owner record and untouched for {age / 3600:.1f} h"))
            continue
        why = owner.gone(stale_after, now)
        if why:
            out.append((path, why))
    return out
