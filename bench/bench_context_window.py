"""How long a flush of the served-context window holds the lock the request path needs.

A full window of 5000 contexts of 5 × 384 float32 (38 MB), filled one context per request as the service
does, flushed five times; prints the longest hold of the request-path lock per flush and the flush's own
time. `--old-rev REV` measures the ContextWindow of that git revision beside the current one.

    .venv/bin/python bench/bench_context_window.py --old-rev ebc50d8~1
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class TimedLock:
    """A lock that records how long each hold lasted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held: list[float] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        self._t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.held.append(time.perf_counter() - self._t)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def load_rev(rev: str, folder: Path) -> ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:lvm_core/serving/window.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "window_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("window_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(name: str, module: ModuleType, folder: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5000, 5, 384)).astype(np.float32)
    w = module.ContextWindow(folder / f"{name}.npy", capacity=5000)
    for i in range(5000):
        w.add(x[i : i + 1])
    w.add(x[:1])
    holds, flushes = [], []
    for _ in range(5):
        w._lock = TimedLock()
        w._dirty = True
        t = time.perf_counter()
        w.flush()
        flushes.append(time.perf_counter() - t)
        holds.append(max(w._lock.held))
    print(f"{name}: request lock held at most {1e3 * np.median(holds):.3f} ms per flush (median of 5); "
          f"flush {1e3 * np.median(flushes):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-rev", help="also measure the window of this git revision")
    args = ap.parse_args()
    from lvm_core.serving import window

    with tempfile.TemporaryDirectory() as d:
        if args.old_rev:
            measure(f"old ({args.old_rev})", load_rev(args.old_rev, Path(d)), Path(d))
        measure("current", window, Path(d))


if __name__ == "__main__":
    main()
