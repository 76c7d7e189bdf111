"""Named crash points for fault-injection tests of crash recovery; inert unless `LVM_FAULT_INJECT` is set.

A crash at a precise point (mid-encode, mid-epoch, between two renames) cannot be hit reliably by a
signal sent from outside, so the pipeline names its points and an operator or a test can ask for a
fault there:

    LVM_FAULT_INJECT="kill@embed.batch#2"     SIGKILL the process group at the 2nd encoded batch
    LVM_FAULT_INJECT="term@train.batch#30"    SIGTERM this process at the 30th training batch
    LVM_FAULT_INJECT="hang@gates"             touch $LVM_FAULT_MARKER, then wait (for a signal from outside)

`kill` is what an OOM kill or a lost machine does to the whole job: SIGKILL to the process group (the
temporary Prefect API server lives in a group of its own and is told by the kernel to stop when the CLI
dies); `term`/`int` are the polite stops of an operator or a scheduler.
Several faults may be given, comma-separated. Points are listed in `CRASH_POINTS`.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

FAULT_ENV = "LVM_FAULT_INJECT"
MARKER_ENV = "LVM_FAULT_MARKER"

# Every point the pipeline passes, in pipeline order (documented in docs/risks.md).
CRASH_POINTS = (
    "ingest",          # articles read, articles.parquet not yet written
    "chunk",           # chunks made, chunks.parquet not yet written
    "embed.batch",     # after each encoded batch, before the cache flush
    "analyse",         # staging folder half assembled
    "gates",           # data gates running on the staged dataset
    "publish",         # READY written in staging, rename onto the dataset folder not yet done
    "train.batch",     # after each optimiser step
    "register",        # model version created, alias and model card not yet set
    "evaluate",        # report written, gates not yet applied
    "promote",         # tags written, champion alias not yet moved
)

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Pass the named point; act if a fault was requested for it (and for this hit count)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _hits[name] += 1
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        point, _, nth = where.partition("#")
        if point == name and _hits[name] == (int(nth) if nth else 1):
            _act(action, name)


def _act(action: str, point: str) -> None:
    marker = os.environ.get(MARKER_ENV)
    if marker:
        Path(marker).write_text(f"{action}@{point} pid={os.getpid()}\n")
    if action == "kill":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "hang":
        time.sleep(3600)
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill, term, int or hang)")
