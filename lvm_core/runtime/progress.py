"""When to draw progress bars: on an interactive terminal, never in CI or logs."""

from __future__ import annotations

import os
import sys


def progress_enabled() -> bool:
    if os.environ.get("CI") or os.environ.get("LVM_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()
