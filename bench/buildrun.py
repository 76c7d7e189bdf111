"""Run `lvm build` as a user does (a subprocess of `python -m flows.cli build`) and measure it.

The build process is the coordinator: the flow runs in it and, with the default runner, so do its tasks.
Measured: wall time of the process and of the flow (from its log: Prefect's temporary server starts
first and is not build work), CPU seconds of the process tree (`os.wait4`), and the coordinator's peak
RSS (its `VmHWM`, the kernel's high-water mark, polled until it exits; the temporary Prefect server is a
process of its own and not counted). Stage times come from the Prefect log: each stage's time runs from
the end of the stage before it to the end of its last task (chunk and embed overlap, so they share time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| (Task run|Flow run) '([^']+)' - (.*)$")
_READY = re.compile(r"dataset ready: (\S+)")


@dataclass
class BuildRun:
    """What one `lvm build` did and cost."""

    dataset: Path
    manifest: dict[str, Any]
    wall_s: float
    flow_s: float
    cpu_s: float
    peak_rss_mib: float
    tree_maxrss_mib: float  # ru_maxrss of wait4: the largest process of the tree (a cross-check)
    stages: dict[str, float] = field(default_factory=dict)
    stage_peak_rss_mib: dict[str, float] = field(default_factory=dict)  # polled VmRSS within each stage

    @property
    def chunks(self) -> int:
        return int(self.manifest["counts"]["chunks"])


def build_env() -> dict[str, str]:
    """The environment of a build subprocess: offline, no analytics, this checkout first on the path."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    # the temporary Prefect server gets 20 s to start by default: too short on a loaded machine (not build time)
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _vm_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a live process in KiB; zeros once it is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    found[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return found.get("VmHWM", 0), found.get("VmRSS", 0)


def _seconds_of_day(epoch: float) -> float:
    """Local time of day in seconds, as the Prefect log's HH:MM:SS.mmm stamps read."""
    t = time.localtime(epoch)
    return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + (epoch % 1)


def run_build(source: Path, data_dir: Path, log: Path, *args: str, encoder: str | None = "hash-test") -> BuildRun:
    """`lvm build --source SOURCE --data-dir DATA_DIR --encoder ENCODER ARGS…`, its output in `log`
    (`encoder=None`: no `--encoder`, the build's shipped default).

    Raises SystemExit naming the log when the build fails.
    """
    cmd = [sys.executable, "-m", "flows.cli", "build", "--source", str(source), "--data-dir", str(data_dir),
           *(["--encoder", encoder] if encoder is not None else []), *args]
    peak = [0]
    samples: list[tuple[float, int]] = []  # (epoch, VmRSS KiB)
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=build_env(), stdout=out, stderr=subprocess.STDOUT)

        def poll() -> None:
            while proc.returncode is None:
                hwm, rss = _vm_kib(proc.pid)
                peak[0] = max(peak[0], hwm)
                samples.append((time.time(), rss))
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        poller.join()
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise SystemExit(f"lvm build failed (exit {proc.returncode}); log {log}:\n{tail}")
    ready = _READY.search(text)
    if ready is None:
        raise SystemExit(f"lvm build printed no 'dataset ready' line; log {log}")
    dataset = Path(ready[1])
    manifest = json.loads((dataset / "manifest.json").read_text())
    flow_s, stages = stage_times(text, dataset.name)
    stage_peaks = _stage_peaks(text, dataset.name, samples)
    cpu = usage.ru_utime + usage.ru_stime
    return BuildRun(dataset, manifest, wall, flow_s or wall, cpu, peak[0] / 1024, usage.ru_maxrss / 1024, stages,
                    stage_peaks)


def stage_windows(log_text: str, dataset_id: str) -> tuple[tuple[float, float] | None, dict[str, tuple[float, float]]]:
    """The flow's (start, end) and each stage's, in seconds of the day of the first log line; a stage runs
    from the end of the stage before it to the end of its last task, stages in the order they finished."""
    begin = end = None
    last_finish: dict[str, float] = {}
    day = 0.0
    previous = None
    for line in log_text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) + day
        if previous is not None and t < previous:  # past midnight
            day += 86400.0
            t += 86400.0
        previous = t
        kind, name, message = m[4], m[5], m[6]
        if kind == "Flow run":
            begin = t if begin is None and message.startswith("Beginning flow run") else begin
            end = t if message.startswith("Finished in state") else end
        elif message.startswith("Finished in state"):
            # "ingest-<dataset>-3", "resolve-source-/path/dump.xml.bz2", "clean-abandoned-builds-10e" -> the task
            stage = re.sub(r"-(/.*|\d+|[0-9a-f]{3})$", "", name.replace(f"-{dataset_id}", ""))
            last_finish[stage] = t
    windows: dict[str, tuple[float, float]] = {}
    mark = begin
    for stage, t in sorted(last_finish.items(), key=lambda kv: kv[1]):
        windows[stage] = (mark if mark is not None else t, t)
        mark = t
    return ((begin, end) if begin is not None and end is not None else None), windows


def stage_times(log_text: str, dataset_id: str) -> tuple[float | None, dict[str, float]]:
    """(flow seconds, {stage: seconds}) from Prefect log lines (`stage_windows`)."""
    flow, windows = stage_windows(log_text, dataset_id)
    return (flow[1] - flow[0] if flow else None), {k: b - a for k, (a, b) in windows.items()}


def _stage_peaks(log_text: str, dataset_id: str, samples: list[tuple[float, int]]) -> dict[str, float]:
    """Highest polled RSS (MiB) of the coordinator within each stage's window."""
    if not samples:
        return {}
    _, windows = stage_windows(log_text, dataset_id)
    offset = samples[0][0] - _seconds_of_day(samples[0][0])  # the first day's midnight (no DST change assumed)
    peaks = {}
    for stage, (a, b) in windows.items():
        inside = [rss for t, rss in samples if a - 0.05 <= t - offset <= b + 0.05]
        peaks[stage] = max(inside) / 1024 if inside else 0.0
    return peaks


def print_stages(runs: dict[str, BuildRun]) -> None:
    """One row per stage, per run: seconds (from the Prefect log) and the coordinator's highest RSS in it."""
    names = list(dict.fromkeys(s for r in runs.values() for s in r.stages))
    print(f"{'stage: s / peak RSS MiB':<26}" + "".join(f"{k:>18}" for k in runs))
    for stage in names:
        cells = (f"{r.stages.get(stage, 0.0):.1f} / {r.stage_peak_rss_mib.get(stage, 0.0):.0f}" for r in runs.values())
        print(f"{stage:<26}" + "".join(f"{c:>18}" for c in cells))
