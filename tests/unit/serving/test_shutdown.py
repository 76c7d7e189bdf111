"""`lvm_core.serving.server.run` on SIGTERM: requests in flight finish within the drain timeout, longer
ones are cut at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
SERVER = r"""
import asyncio, sys
from fastapi import FastAPI
from lvm_core.serving.server import run
from lvm_core.serving.settings import ServeSettings

app = FastAPI()
app.state.settings = ServeSettings(shutdown_drain_s=2, torch_threads=0)

@app.get("/sleep")
async def sleep(s: float) -> dict:
    await asyncio.sleep(s)
    return {"slept": s}

run(app, port=int(sys.argv[1]), log_level="info")
"""


def test_sigterm_lets_requests_in_flight_finish_and_cuts_them_at_the_timeout(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/sleep", params={"s": 0}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        answers: dict[float, object] = {}

        def ask(s: float) -> None:
            try:
                answers[s] = httpx.get(f"{base}/sleep", params={"s": s}, timeout=30).status_code
            except httpx.TransportError as exc:
                answers[s] = type(exc).__name__

        threads = [threading.Thread(target=ask, args=(s,)) for s in (1.0, 20.0)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        stopped_s = time.monotonic() - t0
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answers[1.0] == 200  # finished during the drain
    assert answers[20.0] != 200  # cut at the drain timeout
    assert 0.7 <= stopped_s <= 6, stopped_s
