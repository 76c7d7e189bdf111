"""The service's ASGI middleware on a real uvicorn server: request ids, JSON access lines, and a chunked
body over the limit refused with a bounded read and a closed connection."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lvm_core.serving.live_stats import LiveStats
from lvm_core.serving.metrics import ServeMetrics
from lvm_core.serving.middleware import ACCESS_LOGGER, BodyLimit, Observe
from tests.fixtures.serving import serve_app

LIMIT = 64 * 1024
DRAIN = 256 * 1024


@pytest.fixture(scope="module")
def client():
    app = FastAPI()

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    app.add_middleware(BodyLimit, limit=LIMIT, drain=DRAIN)
    app.add_middleware(Observe, metrics=ServeMetrics(), holder=SimpleNamespace(current=None), live=LiveStats())
    with serve_app(app) as c:
        yield c


def test_every_answer_carries_a_request_id_and_an_access_line(client, caplog):
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        made = client.post("/echo", content=b"abc")
        given = client.post("/echo", content=b"abc", headers={"X-Request-ID": "trace-42.a:b"})
        bad = client.post("/echo", content=b"abc", headers={"X-Request-ID": "no spaces <allowed>"})
        deadline = time.monotonic() + 5
        while len([r for r in caplog.records if r.name == ACCESS_LOGGER]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert made.json() == {"bytes": 3}
    rid = made.headers["x-request-id"]
    assert rid and rid != client.post("/echo", content=b"").headers["x-request-id"]  # a new one per request
    assert given.headers["x-request-id"] == "trace-42.a:b"
    assert bad.headers["x-request-id"] not in ("", "no spaces <allowed>")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id[rid]["path"] == "/echo" and by_id[rid]["status"] == 200 and by_id[rid]["method"] == "POST"
    assert by_id["trace-42.a:b"]["ms"] >= 0


def test_a_body_over_the_limit_by_content_length_is_a_413(client):
    res = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert res.status_code == 413 and "over the limit" in res.json()["detail"] and res.headers["x-request-id"]


def test_an_endless_chunked_body_gets_a_413_after_a_bounded_read_then_a_closed_connection(client):
    host, port = client.base_url.host, client.base_url.port
    sent = [0]
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(f"POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"y" * 16 * 1024)

    def send_forever() -> None:
        try:
            while sent[0] < 64 * 1024 * 1024:  # far past limit + drain
                sock.sendall(chunk)
                sent[0] += 16 * 1024
        except OSError:
            pass  # the server closed the connection

    sender = threading.Thread(target=send_forever, daemon=True)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data, "closed without an answer"
            answer += data
        while True:  # then the server closes
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except ConnectionResetError:
        pass
    sender.join(20)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert not sender.is_alive() and sent[0] < 16 * 1024 * 1024, sent[0]  # it stopped reading long before
    assert client.post("/echo", content=b"ok").status_code == 200  # and serves the next client
