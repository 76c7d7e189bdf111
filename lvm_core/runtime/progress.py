"""Progress of long-running work: when to draw progress bars, and a ticker that logs count, rate and ETA.

Bars are drawn on an interactive terminal only, never in CI or logs. `ShardTicker` writes its lines to
the logger it is given (a shard task passes its run logger, so the lines show in the UI).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Self

# Seconds between progress lines of a running shard (LVM_PROGRESS_EVERY_S).
PROGRESS_EVERY_S = float(os.environ.get("LVM_PROGRESS_EVERY_S", "30"))


def progress_enabled() -> bool:
    if os.environ.get("CI") or os.environ.get("LVM_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


class ShardTicker:
    """Logs a running shard's count, rate and ETA every `PROGRESS_EVERY_S` seconds and once at its end.

    A daemon thread does the logging, so a shard stuck in one long call still reports that it is alive.
    """

    def __init__(
        self, what: str, unit: str, logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        total: int | None = None,
    ) -> None:
        self.what, self.unit, self.total = what, unit, total
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._log = logger
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"progress {what}", daemon=True)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        with self._lock:
            done = self.done
        rate = done / elapsed
        of = f"/{self.total:,}" if self.total is not None else ""
        if self.total is None:
            eta = "ETA unknown (streamed input)"
        elif rate > 0:
            eta = f"ETA {format_duration(max(self.total - done, 0) / rate)}"
        else:
            eta = "ETA unknown (nothing done yet)"
        return f"{self.what}: {done:,}{of} {self.unit} in {format_duration(elapsed)} ({rate:,.1f} {self.unit}/s), {eta}"

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self._log.info("%s", self.line())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._log.info("%s", self.line())


def format_duration(seconds: float) -> str:
    """`1h02m`, `3m05s` or `42s`."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
