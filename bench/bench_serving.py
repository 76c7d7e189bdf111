"""Benchmark: the inference service (`lvm serve`) under closed-loop load over loopback at batch 1.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serving.py [--data-dir DIR] [--requests 3000]
        [--concurrency 4] [--hold-seconds 60] [--client raw|httpx|wrk] [--baseline-ref REV] [--json out.json]

1. Models: a small AMN (hidden 64) trained for one epoch on the first 14 articles of the embedded sample,
   three versions of one registered model, evaluated with relaxed model gates so they may be promoted and
   rolled out (bench models, not production ones). Built into a temporary folder, or taken from
   `--data-dir` (its first ready dataset; versions of `--name` are reused, missing ones trained).
2. Bodies: --bodies real contexts (batch 1) with their true next chunks, from the dataset's val (else
   train) windows; request i sends body i mod --bodies and client key i mod 200, so the service parses
   varied bodies and routes varied keys.
3. In-process: the same champion loaded by the registry loader the service uses, `model.predict` on those
   contexts one at a time with the service's torch threads (1), --requests calls: p50 / p99, calls/s.
4. Client ceiling: the load client against a loopback server that answers every request with a canned
   200 (no parsing, no model): the most requests/s the client itself can drive, so a service figure near
   it is the client's limit, not the service's.
5. Service: `python -m flows.cli serve` (uvicorn, the shipped command) in its own process, configured as
   docker/compose.yaml ships it: a token, `--record-contexts` (the drift monitor's window) and feedback:
   the raw/httpx client sends the true next chunk to `/v1/feedback` after every --feedback-every-th
   prediction (not in the predict latencies; its failures count as errors). It follows
   `models:/<name>@champion` (alias re-read every second). Closed loop, keep-alive connections: 1, then
   --concurrency, then 16 connections. With --baseline-ref, the service of that git revision (its
   lvm_core/ and flows/, same data, same options, --baseline-env for its environment) is measured first
   in the same run, and each figure is printed with its ratio to it. The CPU the load client itself used is printed beside each
   figure (on two cores, the client and the service share the machine).
   Targets: 1 connection p99 <= 2 ms; --concurrency connections >= 1,000 req/s with p99 <= 10 ms; the
   moonshot service / in-process p50 <= 2x is printed, not judged.
6. Hold: the same load for --hold-seconds while the champion alias moves to another version (a registry
   promote, picked up by the service's alias refresh) and a staged rollout of a third version starts at
   5% and steps to 20% (then is aborted). Every non-200 answer or transport error counts; target 0 errors,
   and every version must have answered (the first champion, the promoted one, the rollout's challenger).

The load average is printed: on two cores shared with other jobs the absolute numbers move a lot; the
ratios (service / baseline, service / in-process, service / client ceiling) are steadier. Exit status 1
when a target fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("LVM_NO_PROGRESS", "1")

import numpy as np  # noqa: E402

P99_C1_TARGET_MS = 2.0
P99_TARGET_MS = 10.0
RPS_TARGET = 1000.0
MOONSHOT_RATIO = 2.0
N_KEYS = 200
TOKEN = "bench-serving-token"
BUILD_THRESHOLDS = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}  # parity on 1-2 held-out articles is noise
# Bench models are one-epoch toys: relax the model gates so they can be promoted and rolled out.
MODEL_THRESHOLDS = {"min_val_cosine": 0.0, "min_ood_cosine": 0.0, "max_ood_val_gap": 1.0,
                    "must_beat_best_baseline": False, "beats_baseline_margin": -1.0}
VERSION_RE = re.compile(rb'"version"\s*:\s*(\d+)')
PID_RE = re.compile(rb'"prediction_ids"\s*:\s*\[\s*"([0-9a-f]+)"')


def log(msg: str) -> None:
    print(msg, flush=True)


# --- models -------------------------------------------------------------------------------------------


def gates_passed(name: str, version: int) -> bool:
    from lvm_core.tracking.gate_outcomes import recorded_gate_outcomes
    from lvm_core.tracking.references import resolve_version

    outcomes = recorded_gate_outcomes(resolve_version(name, str(version)))
    return outcomes is not None and bool(outcomes) and all(o.get("passed") for o in outcomes.values())


def prepare(data_dir: Path, name: str, n_versions: int = 3) -> tuple[Path, list[int]]:
    """A ready dataset and `n_versions` gate-passing versions of `name` (trained when missing)."""
    from flows.evaluate_model import evaluate_model
    from flows.train_model import train_model
    from lvm_core.contracts.build_options import BuildOptions
    from lvm_core.contracts.errors import ModelNotFoundError
    from lvm_core.data.build.load import list_datasets
    from lvm_core.tracking.gate_outcomes import recorded_gate_outcomes
    from lvm_core.tracking.references import list_versions, resolve_version
    from lvm_core.tracking.setup import configure_tracking

    ready = [r for r in list_datasets(data_dir) if r["ready"]]
    if ready:
        dataset = data_dir / "datasets" / ready[0]["dataset"]
        log(f"dataset: {dataset} (reused)")
    else:
        from flows.build_dataset import build_dataset

        t0 = time.perf_counter()
        dataset = Path(build_dataset(source="sample", data_dir=str(data_dir), limit_articles=14,
                                     options=BuildOptions(thresholds=BUILD_THRESHOLDS)))
        log(f"dataset: {dataset} (built in {time.perf_counter() - t0:.0f} s)")
    configure_tracking(data_dir)
    try:
        versions = [int(r["version"]) for r in list_versions(name)]
    except ModelNotFoundError:
        versions = []
    def evaluate(version: int) -> bool:
        # promote=True: the registry records the gate results on the version when it promotes it
        evaluate_model(model=f"models:/{name}/{version}", data_dir=str(data_dir), thresholds=MODEL_THRESHOLDS,
                       promote=True)
        return gates_passed(name, version)

    usable = []
    for v in sorted(versions):
        outcomes = recorded_gate_outcomes(resolve_version(name, str(v)))
        if (outcomes is None and evaluate(v)) or gates_passed(name, v):
            usable.append(v)
    while len(usable) < n_versions:
        t0 = time.perf_counter()
        out = train_model(data=str(dataset), arch="amn", epochs=1, data_dir=str(data_dir), registered_name=name,
                          hidden=64, mlp_hidden=128, lr=1e-4 * (1 + len(usable)))
        if not evaluate(int(out["version"])):
            raise SystemExit(f"{name} v{out['version']} failed even the relaxed gates; see its tags")
        usable.append(int(out["version"]))
        log(f"trained and evaluated {name} v{out['version']} in {time.perf_counter() - t0:.0f} s")
    return dataset, usable[-n_versions:]


def real_windows(dataset: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to n real (context (n, ctx, D), next chunk (n, D)) windows from the dataset's val (else train) split."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather

    ds = load_dataset(dataset)
    split = "val" if len(ds.sequences.get("val", [])) else "train"
    m = min(n, len(ds.sequences[split]))
    ctx, tgt = gather(ds.vectors, ds.sequences[split], np.arange(m))
    return np.asarray(ctx, dtype=np.float32), np.asarray(tgt, dtype=np.float32)


@dataclass
class Bodies:
    """The request bodies of a run: one real context each (JSON), and the true next chunk of each."""

    contexts: np.ndarray
    targets: np.ndarray
    json: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.json = [json.dumps({"contexts": c[None].tolist()}).encode() for c in self.contexts]

    def feedback(self, i: int, pid: str) -> bytes:
        return json.dumps({"prediction_id": pid, "target": self.targets[i % len(self.targets)].tolist()}).encode()


# --- measurements ---------------------------------------------------------------------------------------


@dataclass
class Run:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    feedback: int = 0  # feedback requests sent beside the timed predictions
    client_cpu_s: float = 0.0  # CPU the load client used (all its threads / wrk)
    server_cpu_s: float | None = None  # CPU the service process used
    fixed: dict[float, float] = field(default_factory=dict)  # percentiles (ms) a tool measured (wrk)
    fixed_n: int = 0

    @property
    def n(self) -> int:
        return self.fixed_n or len(self.latencies_s)

    def pct_ms(self, q: float) -> float:
        if q in self.fixed:
            return self.fixed[q]
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1e3) if self.latencies_s else float("nan")

    @property
    def rps(self) -> float:
        return self.n / self.wall_s if self.wall_s else 0.0

    def cpu(self) -> str:
        """The cores the client and the service kept busy on average."""
        server = f", service {self.server_cpu_s / self.wall_s:.2f}" if self.server_cpu_s is not None and self.wall_s else ""
        return f"cores busy: client {self.client_cpu_s / self.wall_s if self.wall_s else 0:.2f}{server}"

    def summary(self) -> dict[str, Any]:
        return {"requests": self.n, "errors": len(self.errors), "p50_ms": round(self.pct_ms(50), 3),
                "p99_ms": round(self.pct_ms(99), 3), "per_s": round(self.rps, 1), "wall_s": round(self.wall_s, 2),
                "feedback": self.feedback, "client_cpu_s": round(self.client_cpu_s, 2),
                "server_cpu_s": round(self.server_cpu_s, 2) if self.server_cpu_s is not None else None,
                "versions": {str(k): v for k, v in sorted(self.versions.items())}}


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


IN_PROCESS = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import torch
from lvm_core.serving.holder import ModelHolder

ref, data_dir, ctx_file, n, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if threads > 0:
    torch.set_num_threads(threads)
model = ModelHolder(ref, Path(data_dir)).load().model
xs = np.load(ctx_file)
for i in range(min(50, n)):
    model.predict(xs[i % len(xs)][None])
lat = []
t_start = time.perf_counter()
for i in range(n):
    x = xs[i % len(xs)][None]
    t0 = time.perf_counter()
    model.predict(x)
    lat.append(time.perf_counter() - t0)
print(json.dumps({"latencies_s": lat, "wall_s": time.perf_counter() - t_start}))
"""


def in_process(ref: str, data_dir: Path, contexts: np.ndarray, n: int, threads: int = 1) -> Run:
    """`model.predict` at batch 1 in a fresh process loaded like the service's (ModelHolder, the service's
    torch threads): the bench's own process has trained models and carries their thread pools."""
    ctx_file = data_dir / "bench-serving-contexts.npy"
    np.save(ctx_file, contexts)
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, ref, str(data_dir), str(ctx_file), str(n), str(threads)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Run(latencies_s=data["latencies_s"], wall_s=data["wall_s"])


class RawClient:
    """One keep-alive HTTP/1.1 connection (http.client): far less per-request work than httpx."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = headers

    def post(self, path: str, body: bytes, extra: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", path, body=body, headers={**self.headers, **extra})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise

    def close(self) -> None:
        self.conn.close()


class HttpxClient:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        import httpx

        self.client = httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=30)

    def post(self, path: str, body: bytes, extra: dict[str, str]) -> tuple[int, bytes]:
        r = self.client.post(path, content=body, headers=extra)
        return r.status_code, r.content

    def close(self) -> None:
        self.client.close()


def load(port: int, bodies: Bodies, *, concurrency: int, client: str, requests: int | None = None,
         seconds: float | None = None, count_versions: bool = False, path: str = "/v1/predict",
         feedback_every: int = 0, server_pid: int | None = None) -> Run:
    """Closed loop: `concurrency` threads, each with one keep-alive connection, send the next request as soon
    as the previous answer is read; stop after `requests` in total or after `seconds`. Request k of thread i
    sends body and client key (i * 7919 + k); with `feedback_every`, every such prediction is followed by
    its true next chunk on /v1/feedback (untimed)."""
    if client == "wrk":
        return wrk_load(port, bodies, concurrency=concurrency, seconds=seconds or 10.0, server_pid=server_pid)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    make = RawClient if client == "raw" else HttpxClient
    run = Run()
    lock = threading.Lock()
    remaining = [requests if requests is not None else 1 << 62]
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")

    def worker(i: int) -> None:
        c = make("127.0.0.1", port, headers)
        lat: list[float] = []
        errs: list[str] = []
        seen: dict[int, int] = {}
        k = sent_feedback = 0
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        break
                    remaining[0] -= 1
                k += 1
                j = i * 7919 + k
                extra = {"X-Client-Key": f"client-{j % N_KEYS}"}
                t0 = time.perf_counter()
                try:
                    status, data = c.post(path, bodies.json[j % len(bodies.json)], extra)
                except Exception as exc:  # noqa: BLE001 - every failure is an error of the run
                    errs.append(f"{type(exc).__name__}: {exc}")
                    continue
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errs.append(f"HTTP {status}: {data[:200]!r}")
                    continue
                if count_versions:
                    m = VERSION_RE.search(data)
                    if m:
                        v = int(m.group(1))
                        seen[v] = seen.get(v, 0) + 1
                if feedback_every and k % feedback_every == 0:
                    pid = PID_RE.search(data)
                    try:
                        fstatus, fdata = c.post("/v1/feedback", bodies.feedback(j, pid.group(1).decode() if pid else ""),
                                                extra)
                        sent_feedback += 1
                        if fstatus != 200:
                            errs.append(f"feedback HTTP {fstatus}: {fdata[:200]!r}")
                    except Exception as exc:  # noqa: BLE001 - every failure is an error of the run
                        errs.append(f"feedback {type(exc).__name__}: {exc}")
        finally:
            c.close()
            with lock:
                run.latencies_s.extend(lat)
                run.errors.extend(errs)
                run.feedback += sent_feedback
                for v, n in seen.items():
                    run.versions[v] = run.versions.get(v, 0) + n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    cpu0, server0 = time.process_time(), process_cpu_s(server_pid)
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - t_start
    run.client_cpu_s = time.process_time() - cpu0
    server1 = process_cpu_s(server_pid)
    run.server_cpu_s = server1 - server0 if server0 is not None and server1 is not None else None
    return run


WRK_SCRIPT = r"""
local bodies, n, i = {}, 0, 0
local token = os.getenv("BENCH_TOKEN")
function init(args)
  for line in io.lines(args[1]) do n = n + 1; bodies[n] = line end
  i = tonumber(args[2]) or 0
end
function request()
  i = i + 1
  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token, ["X-Client-Key"] = "client-" .. (i % 200)}, bodies[i % n + 1])
end
"""
WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk_load(port: int, bodies: Bodies, *, concurrency: int, seconds: float, server_pid: int | None) -> Run:
    """`wrk` (one thread, `concurrency` connections) for `seconds`, predict requests with the same varied
    bodies and keys as the Python client; its latency percentiles as wrk reports them."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    (tmp / "bodies.txt").write_bytes(b"\n".join(bodies.json) + b"\n")
    (tmp / "post.lua").write_text(WRK_SCRIPT)
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(tmp / "post.lua"),
           f"http://127.0.0.1:{port}/v1/predict", "--", str(tmp / "bodies.txt"), "0"]
    server0 = process_cpu_s(server_pid)
    _children_cpu_delta()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "BENCH_TOKEN": TOKEN})
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    client_cpu = _children_cpu_delta()
    server1 = process_cpu_s(server_pid)
    pcts = {float(q): float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u] for q, v, u in WRK_PCT.findall(out)}
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    run = Run(fixed=pcts, fixed_n=int(total.group(1)) if total else 0,
              wall_s=float(total.group(2)) * (1e-3 if total.group(3) == "ms" else 1) if total else wall)
    if non2xx:
        run.errors.extend(["HTTP non-2xx (wrk)"] * int(non2xx.group(1)))
    if sock:
        run.errors.append(f"wrk socket errors: {sock.group(1)}")
    run.client_cpu_s = client_cpu
    run.server_cpu_s = server1 - server0 if server0 is not None and server1 is not None else None
    return run


_CHILD_CPU = [0.0]


def _children_cpu_delta() -> float:
    """CPU seconds of the subprocesses reaped since the last call (wrk's own CPU)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = r.ru_utime + r.ru_stime
    delta, _CHILD_CPU[0] = total - _CHILD_CPU[0], total
    return delta


CANNED_SERVER = r"""
import asyncio, sys
BODY = b'{"predictions": [[0.0]], "version": 0}'
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(RESP)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_ceiling(bodies: Bodies, concurrency: int, client: str, requests: int, seconds: float | None) -> Run:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", CANNED_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        load(port, bodies, concurrency=concurrency, client=client, requests=min(200, requests), seconds=1.0)  # warm-up
        return load(port, bodies, concurrency=concurrency, client=client, requests=requests, seconds=seconds,
                    server_pid=proc.pid)
    finally:
        stop(proc)


def baseline_tree(ref: str, into: Path) -> Path:
    """lvm_core/ and flows/ of git revision `ref`, extracted under `into` (the service of that revision)."""
    root = into / f"baseline-{ref.replace('/', '_')}"
    root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "lvm_core", "flows"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def start_service(name: str, data_dir: Path, port: int, log_path: Path, code: Path = REPO,
                  env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`lvm serve` as docker/compose.yaml runs it (token, --record-contexts), from the tree at `code`."""
    env = {**os.environ, "LVM_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(code), **(env_extra or {})}
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", f"models:/{name}@champion", "--port", str(port),
           "--refresh", "1", "--data-dir", str(data_dir),
           "--record-contexts", str(data_dir / "served" / f"contexts-{port}.npy")]
    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lvm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"lvm serve not ready after 240 s:\n{log_path.read_text()[-3000:]}")


def service_has_rollout(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/rollout/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        return conn.getresponse().status == 200
    except OSError:
        return False


def hold(port: int, bodies: Bodies, args: argparse.Namespace, name: str, versions: list[int],
         server_pid: int | None) -> tuple[Run, list[str]]:
    """The load for --hold-seconds while the alias moves and (if available) a rollout starts and steps."""
    from lvm_core.rollout import plan as rollout_plan
    from lvm_core.tracking.promotion import promote

    events: list[str] = []
    rollout_api = rollout_plan if service_has_rollout(port) else None
    _, second, third = versions
    t_start = time.perf_counter()

    def at(fraction: float) -> None:
        time.sleep(max(0.0, t_start + fraction * args.hold_seconds - time.perf_counter()))

    def note(msg: str) -> None:
        events.append(f"t={time.perf_counter() - t_start:5.1f}s {msg}")

    def scenario() -> None:
        try:
            at(0.25)
            r = promote(name, second)
            note(f"promote v{second}: {r.action}")
            if rollout_api is None:
                note("no rollout API in this service: rollout step skipped")
                return
            at(0.5)
            st = rollout_api.start(name, third)
            note(f"rollout start v{third}: share {st.share:.0%}")
            at(0.75)
            st, _ = rollout_api.advance(name)
            note(f"rollout step: share {st.share:.0%}")
            at(0.95)
            st = rollout_api.abort(name, "benchmark finished")
            note(f"rollout abort: status {st.status}")
        except Exception as exc:  # noqa: BLE001 - reported, and the run then counts as failed
            note(f"scenario failed: {type(exc).__name__}: {exc}")

    events_thread = threading.Thread(target=scenario)
    events_thread.start()
    run = load(port, bodies, concurrency=args.concurrency, client="raw" if args.client == "wrk" else args.client,
               seconds=args.hold_seconds, count_versions=True, feedback_every=args.feedback_every,
               server_pid=server_pid)
    events_thread.join()
    return run, events


# --- main -------------------------------------------------------------------------------------------------


def measure(port: int, bodies: Bodies, args: argparse.Namespace, pid: int | None) -> dict[str, Run]:
    """Warm-up, then 1, --concurrency and 16 connections against one service."""
    seconds = args.wrk_seconds if args.client == "wrk" else None
    load(port, bodies, concurrency=1, client="raw", requests=min(300, args.requests))  # warm-up
    out = {}
    for c in dict.fromkeys((1, args.concurrency, 16)):
        out[f"c{c}"] = load(port, bodies, concurrency=c, client=args.client, requests=args.requests, seconds=seconds,
                            feedback_every=args.feedback_every, server_pid=pid)
    return out


def report(label: str, runs: dict[str, Run], base: dict[str, Run] | None) -> None:
    for key, run in runs.items():
        ratio = ""
        if base is not None and key in base and base[key].rps:
            b = base[key]
            ratio = (f"  | vs baseline: req/s x{run.rps / b.rps:.2f}, p50 x{run.pct_ms(50) / b.pct_ms(50):.2f}, "
                     f"p99 x{run.pct_ms(99) / b.pct_ms(99):.2f}")
        log(f"{label} /v1/predict, {key:>4}: p50 {run.pct_ms(50):7.3f} ms  p99 {run.pct_ms(99):7.3f} ms  "
            f"{run.rps:7.0f} req/s  errors {len(run.errors)}  feedback {run.feedback}  ({run.cpu()}){ratio}")
        for e in run.errors[:3]:
            log(f"    {e}")


def judge(runs: dict[str, Run], inproc: Run, concurrency: int) -> bool:
    c1, cn = runs["c1"], runs[f"c{concurrency}"]
    checks = [(f"1 connection p99 <= {P99_C1_TARGET_MS:g} ms", f"{c1.pct_ms(99):.2f} ms", c1.pct_ms(99) <= P99_C1_TARGET_MS),
              (f"{concurrency} connections >= {RPS_TARGET:g} req/s", f"{cn.rps:.0f} req/s", cn.rps >= RPS_TARGET),
              (f"{concurrency} connections p99 <= {P99_TARGET_MS:g} ms", f"{cn.pct_ms(99):.2f} ms",
               cn.pct_ms(99) <= P99_TARGET_MS),
              ("no errors", str(sum(len(r.errors) for r in runs.values())), not any(r.errors for r in runs.values()))]
    for what, got, ok in checks:
        log(f"target {what}: {got} -> {'PASS' if ok else 'FAIL'}")
    ratio = c1.pct_ms(50) / inproc.pct_ms(50)
    log(f"moonshot service / in-process p50 <= {MOONSHOT_RATIO:g}x: {ratio:.1f}x "
        f"({c1.pct_ms(50) - inproc.pct_ms(50):+.3f} ms of HTTP, JSON and validation per request) (not judged)")
    return all(ok for _, _, ok in checks)


def judge_hold(held: Run, events: list[str], versions: list[int], concurrency: int) -> bool:
    for e in events:
        log(f"  {e}")
    expected = set(versions) if not any("rollout step skipped" in e for e in events) else set(versions[:2])
    missing = sorted(expected - set(held.versions))
    log(f"hold, c={concurrency}: {held.n} requests, p50 {held.pct_ms(50):.3f} ms, p99 {held.pct_ms(99):.3f} ms, "
        f"{held.rps:.0f} req/s, feedback {held.feedback}; answered by "
        f"{ {f'v{k}': v for k, v in sorted(held.versions.items())} } ({held.cpu()})")
    log(f"errors during the hold: {len(held.errors)} -> {'PASS' if not held.errors else 'FAIL'}")
    for e in held.errors[:5]:
        log(f"  {e}")
    log(f"every version answered during the hold ({sorted(expected)}): "
        f"{'PASS' if not missing else f'FAIL, never answered: {missing}'}")
    return not held.errors and not missing and not any("failed" in e for e in events)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, help="Reuse this data folder (dataset, registry) instead of a temporary one")
    ap.add_argument("--name", default="lvm-bench-serve", help="Registered model name of the bench models")
    ap.add_argument("--requests", type=int, default=3000, help="Requests per measured run (raw/httpx client)")
    ap.add_argument("--concurrency", type=int, default=4, help="Connections of the judged throughput run and the hold")
    ap.add_argument("--hold-seconds", type=float, default=60.0, help="Length of the hold run (0: skip)")
    ap.add_argument("--client", choices=("raw", "httpx", "wrk"), default="raw",
                    help="Load client: http.client keep-alive threads, httpx, or wrk (predictions only; the hold "
                    "then uses raw)")
    ap.add_argument("--wrk-seconds", type=float, default=8.0, help="Length of each wrk run")
    ap.add_argument("--bodies", type=int, default=64, help="Distinct real contexts the requests cycle through")
    ap.add_argument("--feedback-every", type=int, default=5, help="Send feedback after every n-th prediction (0: none)")
    ap.add_argument("--baseline-ref", help="Also measure the service of this git revision (e.g. HEAD~1) in the same run")
    ap.add_argument("--baseline-env", action="append", default=[], metavar="KEY=VALUE",
                    help="Environment of the baseline service (e.g. OMP_NUM_THREADS=1: one torch thread like the "
                    "current service, to compare the code alone)")
    ap.add_argument("--json", type=Path, help="Also write the numbers here")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from lvm_core.tracking.promotion import promote
    from lvm_core.tracking.setup import configure_tracking

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lvm-bench-serving-")
        data_dir = Path(tmp.name)
    else:
        data_dir = args.data_dir.resolve()
    load1 = os.getloadavg()[0]
    log(f"machine: {os.cpu_count()} cores, load average {load1:.1f}; client {args.client}, "
        f"{args.requests} requests per run, concurrency {args.concurrency}, {args.bodies} bodies, "
        f"feedback every {args.feedback_every}")
    if load1 > (os.cpu_count() or 1):
        log("warning: load average above the core count; absolute numbers will be low, compare the ratios")

    with prefect_test_harness(server_startup_timeout=180):
        dataset, versions = prepare(data_dir, args.name)
    configure_tracking(data_dir)
    from lvm_core.rollout.plan import abort
    from lvm_core.rollout.state import read_state

    if read_state(args.name).active:
        abort(args.name, "left over from an earlier benchmark")
    first = versions[0]
    promote(args.name, first)
    log(f"champion: {args.name} v{first}; versions for the hold: {versions}")

    bodies = Bodies(*real_windows(dataset, args.bodies))
    inproc = in_process(f"models:/{args.name}@champion", data_dir, bodies.contexts, args.requests)
    log(f"in-process predict, batch 1, 1 torch thread: p50 {inproc.pct_ms(50):7.3f} ms  p99 {inproc.pct_ms(99):7.3f} ms  "
        f"{inproc.rps:8.0f} calls/s")
    seconds = args.wrk_seconds if args.client == "wrk" else None
    results: dict[str, Any] = {"load_average": load1, "client": args.client, "concurrency": args.concurrency,
                               "in_process": inproc.summary()}
    for c in (1, args.concurrency):
        ceiling = client_ceiling(bodies, c, args.client, args.requests, seconds)
        results[f"client_ceiling_c{c}"] = ceiling.summary()
        log(f"client ceiling (canned 200), c={c}: p50 {ceiling.pct_ms(50):7.3f} ms  p99 {ceiling.pct_ms(99):7.3f} ms  "
            f"{ceiling.rps:8.0f} req/s  ({ceiling.cpu()})")

    base = None
    if args.baseline_ref:
        port = free_port()
        proc = start_service(args.name, data_dir, port, data_dir / "bench-serve-baseline.log",
                             code=baseline_tree(args.baseline_ref, data_dir),
                             env_extra=dict(kv.split("=", 1) for kv in args.baseline_env))
        try:
            base = measure(port, bodies, args, proc.pid)
        finally:
            stop(proc)
        report(f"baseline {args.baseline_ref}{' ' + ' '.join(args.baseline_env) if args.baseline_env else ''}",
               base, None)
        results["baseline"] = {k: r.summary() for k, r in base.items()}

    port = free_port()
    proc = start_service(args.name, data_dir, port, data_dir / "bench-serve.log")
    try:
        runs = measure(port, bodies, args, proc.pid)
        report("service", runs, base)
        results["service"] = {k: r.summary() for k, r in runs.items()}
        ok = judge(runs, inproc, args.concurrency)
        if args.hold_seconds > 0:
            held, events = hold(port, bodies, args, args.name, versions, proc.pid)
            results.update(hold=held.summary(), hold_events=events)
            ok = judge_hold(held, events, versions, args.concurrency) and ok
    finally:
        stop(proc)
        promote(args.name, first)
    results["ok"] = ok
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
