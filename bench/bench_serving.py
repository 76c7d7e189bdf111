"""Benchmark: the inference service (`lvm serve`) under closed-loop load over loopback at batch 1.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serving.py [--data-dir DIR] [--requests 3000]
        [--concurrency 4] [--hold-seconds 60] [--client raw|httpx] [--json out.json]

1. Models: a small AMN (hidden 64) trained for one epoch on the first 14 articles of the embedded sample,
   three versions of one registered model, evaluated with relaxed model gates so they may be promoted and
   rolled out (bench models, not production ones). Built into a temporary folder, or taken from
   `--data-dir` (its first ready dataset; versions of `--name` are reused, missing ones trained).
2. In-process: the same champion loaded by the registry loader the service uses, `model.predict` on one
   real context (batch 1), --requests calls: p50 / p99 latency, calls/s.
3. Client ceiling: the load client against a loopback server that answers every request with a canned
   200 (no parsing, no model): the most requests/s the client itself can drive, so a service figure near
   it is the client's limit, not the service's.
4. Service: `python -m flows.cli serve` (uvicorn, the shipped command) in its own process with a token,
   following `models:/<name>@champion` (alias re-read every second). Closed loop, keep-alive connections,
   batch 1: latency at concurrency 1 (p50 / p99), then requests/s at --concurrency. Ratio to in-process.
   Targets: p99 <= 10 ms, >= 500 requests/s (2-core machine).
5. Hold: the same load for --hold-seconds while the champion alias moves to another version (a registry
   promote, picked up by the service's alias refresh) and, when the service has the rollout API
   (`GET /v1/rollout/stats`), a staged rollout of a third version starts at 5% and steps to 20% (then is
   aborted). Every non-200 answer or transport error counts; target 0 errors. The versions that answered
   are counted from the responses.

The load average is printed: on two cores shared with other jobs the absolute numbers move a lot; the
ratios (service / in-process, service / client ceiling) are steadier. Exit status 1 when a target fails.
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

P99_TARGET_MS = 10.0
RPS_TARGET = 500.0
TOKEN = "bench-serving-token"
BUILD_THRESHOLDS = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}  # parity on 1-2 held-out articles is noise
# Bench models are one-epoch toys: relax the model gates so they can be promoted and rolled out.
MODEL_THRESHOLDS = {"min_val_cosine": 0.0, "min_ood_cosine": 0.0, "max_ood_val_gap": 1.0,
                    "must_beat_best_baseline": False, "beats_baseline_margin": -1.0}
VERSION_RE = re.compile(rb'"version"\s*:\s*(\d+)')


def log(msg: str) -> None:
    print(msg, flush=True)


# --- models -------------------------------------------------------------------------------------------


def gates_passed(name: str, version: int) -> bool:
    from lvm_core.tracking.gate_outcomes import recorded_gate_outcomes
    from lvm_core.tracking.references import resolve_version

    outcomes = recorded_gate_outcomes(resolve_version(name, str(version)))
    return bool(outcomes) and all(o.get("passed") for o in outcomes.values())


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


def one_context(dataset: Path) -> np.ndarray:
    """One real context (1, ctx, D) from the dataset's val (else train) windows."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather

    ds = load_dataset(dataset)
    split = "val" if len(ds.sequences.get("val", [])) else "train"
    ctx, _ = gather(ds.vectors, ds.sequences[split], np.arange(1))
    return np.asarray(ctx, dtype=np.float32)


# --- measurements ---------------------------------------------------------------------------------------


@dataclass
class Run:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.latencies_s)

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1e3) if self.latencies_s else float("nan")

    @property
    def rps(self) -> float:
        return self.n / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {"requests": self.n, "errors": len(self.errors), "p50_ms": round(self.pct_ms(50), 3),
                "p99_ms": round(self.pct_ms(99), 3), "per_s": round(self.rps, 1), "wall_s": round(self.wall_s, 2),
                "versions": {str(k): v for k, v in sorted(self.versions.items())}}


IN_PROCESS = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from lvm_core.serving.holder import ModelHolder

ref, data_dir, ctx_file, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = ModelHolder(ref, Path(data_dir)).load().model
x = np.load(ctx_file)
for _ in range(min(50, n)):
    model.predict(x)
lat = []
t_start = time.perf_counter()
for _ in range(n):
    t0 = time.perf_counter()
    model.predict(x)
    lat.append(time.perf_counter() - t0)
print(json.dumps({"latencies_s": lat, "wall_s": time.perf_counter() - t_start}))
"""


def in_process(ref: str, data_dir: Path, x: np.ndarray, n: int) -> Run:
    """`model.predict` at batch 1 in a fresh process loaded like the service's (ModelHolder): the bench's
    own process has trained models and carries their thread pools, which would slow it unfairly."""
    ctx_file = data_dir / "bench-serving-context.npy"
    np.save(ctx_file, x)
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, ref, str(data_dir), str(ctx_file), str(n)], cwd=REPO,
                         capture_output=True, text=True, check=True)
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


def load(port: int, body: bytes, *, concurrency: int, client: str, requests: int | None = None,
         seconds: float | None = None, count_versions: bool = False, path: str = "/v1/predict",
         n_keys: int = 200) -> Run:
    """Closed loop: `concurrency` threads, each with one keep-alive connection, send the next request as soon
    as the previous answer is read; stop after `requests` in total or after `seconds`."""
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
        k = 0
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        break
                    remaining[0] -= 1
                k += 1
                extra = {"X-Client-Key": f"client-{(i * 7919 + k) % n_keys}"}
                t0 = time.perf_counter()
                try:
                    status, data = c.post(path, body, extra)
                except Exception as exc:  # noqa: BLE001 - every failure is an error of the run
                    errs.append(f"{type(exc).__name__}: {exc}")
                    continue
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errs.append(f"HTTP {status}: {data[:200]!r}")
                elif count_versions:
                    m = VERSION_RE.search(data)
                    if m:
                        v = int(m.group(1))
                        seen[v] = seen.get(v, 0) + 1
        finally:
            c.close()
            with lock:
                run.latencies_s.extend(lat)
                run.errors.extend(errs)
                for v, n in seen.items():
                    run.versions[v] = run.versions.get(v, 0) + n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - t_start
    return run


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


def client_ceiling(body: bytes, concurrency: int, client: str, requests: int) -> Run:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", CANNED_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        load(port, body, concurrency=concurrency, client=client, requests=min(200, requests))
        return load(port, body, concurrency=concurrency, client=client, requests=requests)
    finally:
        stop(proc)


def start_service(name: str, data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LVM_SERVE_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", f"models:/{name}@champion", "--port", str(port),
           "--refresh", "1", "--data-dir", str(data_dir)]
    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
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


def hold(port: int, body: bytes, args: argparse.Namespace, name: str, versions: list[int]) -> tuple[Run, list[str]]:
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
    run = load(port, body, concurrency=args.concurrency, client=args.client, seconds=args.hold_seconds,
               count_versions=True)
    events_thread.join()
    return run, events


# --- main -------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, help="Reuse this data folder (dataset, registry) instead of a temporary one")
    ap.add_argument("--name", default="lvm-bench-serve", help="Registered model name of the bench models")
    ap.add_argument("--requests", type=int, default=3000, help="Requests per measured run")
    ap.add_argument("--concurrency", type=int, default=4, help="Connections of the throughput and hold runs")
    ap.add_argument("--hold-seconds", type=float, default=60.0, help="Length of the hold run (0: skip)")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw", help="Load client: http.client keep-alive or httpx")
    ap.add_argument("--json", type=Path, help="Also write the numbers here")
    args = ap.parse_args()

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
        f"{args.requests} requests per run, concurrency {args.concurrency}")
    if load1 > (os.cpu_count() or 1):
        log("warning: load average above the core count; absolute numbers will be low, compare the ratios")

    with prefect_test_harness(server_startup_timeout=180):
        dataset, versions = prepare(data_dir, args.name)
    configure_tracking(data_dir)
    try:
        from lvm_core.rollout.plan import abort
        from lvm_core.rollout.state import read_state

        if read_state(args.name).active:
            abort(args.name, "left over from an earlier benchmark")
    except ImportError:
        pass
    first = versions[0]
    promote(args.name, first)
    log(f"champion: {args.name} v{first}; versions for the hold: {versions}")

    x = one_context(dataset)
    body = json.dumps({"contexts": x.tolist()}).encode()
    inproc = in_process(f"models:/{args.name}@champion", data_dir, x, args.requests)
    log(f"in-process predict, batch 1:     p50 {inproc.pct_ms(50):7.3f} ms  p99 {inproc.pct_ms(99):7.3f} ms  "
        f"{inproc.rps:8.0f} calls/s")

    ceiling = client_ceiling(body, args.concurrency, args.client, args.requests)
    ceiling1 = client_ceiling(body, 1, args.client, args.requests)
    log(f"client ceiling (canned 200), c=1: p50 {ceiling1.pct_ms(50):7.3f} ms  p99 {ceiling1.pct_ms(99):7.3f} ms  "
        f"{ceiling1.rps:8.0f} req/s")
    log(f"client ceiling (canned 200), c={args.concurrency}: {ceiling.rps:8.0f} req/s")

    port = free_port()
    service_log = data_dir / "bench-serve.log"
    proc = start_service(args.name, data_dir, port, service_log)
    results: dict[str, Any] = {"load_average": load1, "client": args.client, "concurrency": args.concurrency,
                               "in_process": inproc.summary(), "client_ceiling_c1": ceiling1.summary(),
                               "client_ceiling": ceiling.summary()}
    try:
        load(port, body, concurrency=1, client=args.client, requests=min(300, args.requests))  # warm-up
        lat = load(port, body, concurrency=1, client=args.client, requests=args.requests)
        thr = load(port, body, concurrency=args.concurrency, client=args.client, requests=args.requests)
        results.update(service_c1=lat.summary(), service=thr.summary())
        ratio = lat.pct_ms(50) / inproc.pct_ms(50)
        overhead_ms = lat.pct_ms(50) - inproc.pct_ms(50)
        p99_ok = lat.pct_ms(99) <= P99_TARGET_MS
        rps_ok = thr.rps >= RPS_TARGET
        log(f"service /v1/predict, c=1:        p50 {lat.pct_ms(50):7.3f} ms  p99 {lat.pct_ms(99):7.3f} ms  "
            f"{lat.rps:8.0f} req/s  errors {len(lat.errors)}")
        log(f"service /v1/predict, c={args.concurrency}:        p50 {thr.pct_ms(50):7.3f} ms  p99 {thr.pct_ms(99):7.3f} ms  "
            f"{thr.rps:8.0f} req/s  errors {len(thr.errors)}")
        log(f"ratio service / in-process (p50, c=1): {ratio:.1f}x ({overhead_ms:+.3f} ms of HTTP, JSON and "
            f"validation per request); service / client ceiling (req/s, c={args.concurrency}): {thr.rps / ceiling.rps:.2f}")
        results.update(ratio_p50=ratio, overhead_ms=overhead_ms)
        log(f"target p99 <= {P99_TARGET_MS:g} ms: {lat.pct_ms(99):.2f} ms -> {'PASS' if p99_ok else 'FAIL'}")
        log(f"target >= {RPS_TARGET:g} req/s: {thr.rps:.0f} req/s -> {'PASS' if rps_ok else 'FAIL'}")
        ok = p99_ok and rps_ok and not lat.errors and not thr.errors
        if args.hold_seconds > 0:
            held, events = hold(port, body, args, args.name, versions)
            results.update(hold=held.summary(), hold_events=events)
            for e in events:
                log(f"  {e}")
            log(f"hold {args.hold_seconds:g} s, c={args.concurrency}: {held.n} requests, p50 {held.pct_ms(50):.3f} ms, "
                f"p99 {held.pct_ms(99):.3f} ms, {held.rps:.0f} req/s; answered by versions "
                f"{ {f'v{k}': v for k, v in sorted(held.versions.items())} }")
            log(f"errors during the hold: {len(held.errors)} -> {'PASS' if not held.errors else 'FAIL'}")
            for e in held.errors[:5]:
                log(f"  {e}")
            failed_events = any("failed" in e for e in events)
            ok = ok and not held.errors and not failed_events
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
