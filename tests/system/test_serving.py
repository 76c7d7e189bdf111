"""The inference service on a real uvicorn server: predictions equal the registry loader's, bad input gets
a 4xx with a reason, token, metrics, feedback, a champion move swapped in without a failed request, a
canary share served sticky per client key, and texts in → neighbours from the model's dataset out."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.serving import mark_gates, serve_app, train_versions, wait_until
from tests.fixtures.vectors import random_unit

pytestmark = pytest.mark.slow

NAME = "lvm-serve-test"
# Clients of the canary-share test. A key's place is a hash of the rollout's salt (model name and challenger
# version) and the key, so the share these clients see is fixed: 0.165-0.233 of them at 20% for challengers v1-v8.
CANARY_CLIENTS = 400
TOKEN = "s3cret-token"
REFRESH_S = 0.5
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WINDOW = 16  # contexts the service keeps for the drift monitor


@pytest.fixture(scope="module")
def versions(small_dataset: Path, session_data_dir: Path, prefect_harness):
    from lvm_core.tracking.promotion import promote
    from lvm_core.tracking.setup import configure_tracking

    first, second = train_versions(small_dataset, session_data_dir, NAME, lrs=(1e-4, 3e-4), hidden=32, mlp_hidden=64)
    configure_tracking(session_data_dir)
    promote(NAME, first, force=True)
    return first, second


@pytest.fixture(scope="module")
def server(versions, session_data_dir: Path):
    from lvm_core.serving.app import create_app
    from lvm_core.serving.settings import ServeSettings

    old = os.environ.get("LVM_SERVE_TOKEN")
    os.environ["LVM_SERVE_TOKEN"] = TOKEN
    try:
        app = create_app(f"models:/{NAME}@champion", session_data_dir, refresh_s=REFRESH_S,
                         settings=ServeSettings(max_batch=8, max_body_bytes=1024 * 1024, max_text_chars=2000,
                                                contexts_path=session_data_dir / "served" / "contexts.npy",
                                                contexts_window=WINDOW, contexts_flush_s=0.2))
    finally:
        if old is None:
            os.environ.pop("LVM_SERVE_TOKEN", None)
        else:
            os.environ["LVM_SERVE_TOKEN"] = old
    with serve_app(app) as client:
        yield client, app


def _served(app):
    return app.state.holder.current.model


def test_health_readiness_and_models(server, versions):
    client, _ = server
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/models", headers=AUTH).json()
    [entry] = info["serving"]
    assert (entry["name"], entry["version"], entry["alias"], entry["share"]) == (NAME, versions[0], "champion", 1.0)
    assert entry["loaded_at"] and info["refresh_interval_s"] == REFRESH_S


def test_predictions_equal_the_registry_loader(server, versions):
    from lvm_core.tracking.references import load_registered_model

    client, app = server
    ref = load_registered_model(f"models:/{NAME}/{versions[0]}")
    x = random_unit(1, 5, ref.context_len, ref.dim)
    res = client.post("/v1/predict", json={"contexts": x.tolist(), "client_key": "abc"}, headers=AUTH)
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["model"], body["version"]) == (NAME, versions[0])
    assert len(body["prediction_ids"]) == 5 and len(set(body["prediction_ids"])) == 5
    assert np.allclose(np.asarray(body["predictions"], dtype=np.float32), ref.predict(x), atol=1e-6)


def test_malformed_payloads_get_4xx_with_a_reason_and_serving_goes_on(server):
    client, app = server
    m = _served(app)
    good = random_unit(2, 2, m.context_len, m.dim)
    nan = good.copy()
    nan[1, 0, 3] = np.nan
    cases = {
        "wrong ctx": ({"contexts": random_unit(0, 2, m.context_len + 1, m.dim).tolist()}, 422, "expects"),
        "wrong dim": ({"contexts": random_unit(0, 2, m.context_len, m.dim - 1).tolist()}, 422, "expects"),
        "ragged": ({"contexts": [good[0].tolist(), good[1, :-1].tolist()]}, 422, "rectangular"),
        "strings": ({"contexts": [[["a"] * m.dim] * m.context_len]}, 422, "numbers"),
        "nan": (json.dumps({"contexts": nan.tolist()}, allow_nan=True), 422, "NaN"),
        "not unit": ({"contexts": (good * 2).tolist()}, 422, "unit"),
        "empty": ({"contexts": []}, 422, "empty"),
        "no contexts": ({"inputs": good.tolist()}, 422, "contexts"),
        "too many": ({"contexts": random_unit(0, 9, m.context_len, m.dim).tolist()}, 413, "limit of 8"),
        "not json": ("this is not json", 400, "JSON"),
        "oversized": ("[" + "0.1," * 300_000 + "0.1]", 413, "over the limit"),
        "huge integer": ('{"contexts": ' + "1" * 5000 + "}", 400, "JSON"),
        "deep nesting": ("[" * 200_000 + "]" * 200_000, 400, "JSON"),
        "binary, not whole contexts": (b"\0" * 4 * (m.context_len * m.dim + 1), 422, "whole number"),
    }
    for what, (payload, status, words) in cases.items():
        kw = {"json": payload} if isinstance(payload, dict) else {"content": payload}
        kind = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        res = client.post("/v1/predict", headers={**AUTH, "Content-Type": kind}, **kw)
        assert res.status_code == status, (what, res.status_code, res.text)
        assert words in res.json()["detail"], (what, res.json())
        ok = client.post("/v1/predict", json={"contexts": good.tolist()}, headers=AUTH)
        assert ok.status_code == 200, (what, ok.text)
    metrics = client.get("/metrics").text
    assert 'lvm_serve_errors_total{endpoint="/v1/predict",kind="validation",version=' in metrics


def test_binary_large_and_concurrent_bodies_get_the_loaders_predictions(server, versions):
    from lvm_core.tracking.references import load_registered_model

    client, app = server
    ref = load_registered_model(f"models:/{NAME}/{versions[0]}")
    x = random_unit(6, 8, ref.context_len, ref.dim)  # 8 contexts of JSON: parsed off the event loop
    expected = ref.predict(x)
    as_json = client.post("/v1/predict", json={"contexts": x.tolist()}, headers={**AUTH, "X-Request-ID": "req-1"})
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["x-request-id"] == "req-1"
    as_binary = client.post("/v1/predict", content=x.astype("<f4").tobytes(),
                            headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert as_binary.status_code == 200, as_binary.text
    for res in (as_json, as_binary):
        assert np.allclose(np.asarray(res.json()["predictions"], dtype=np.float32), expected, atol=1e-6)

    def one(i: int) -> bool:  # small requests at once: predicted together, each answered with its own rows
        r = client.post("/v1/predict", json={"contexts": x[i : i + 1].tolist()}, headers=AUTH)
        return bool(np.allclose(np.asarray(r.json()["predictions"], dtype=np.float32), expected[i : i + 1], atol=1e-6))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(one, list(range(8)) * 4))


def test_openapi_docs_are_served(server):
    client, _ = server
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_received_contexts_reach_the_drift_monitors_window_file(server, session_data_dir: Path):
    from lvm_core.io.context_window_file import read_window

    client, app = server
    m = _served(app)
    path = session_data_dir / "served" / "contexts.npy"
    sent = random_unit(11, 3 * WINDOW // 2, m.context_len, m.dim)
    for i in range(0, len(sent), 4):
        assert client.post("/v1/predict", json={"contexts": sent[i : i + 4].tolist()}, headers=AUTH).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # rewritten every 0.2 s; wait for the write that holds the last batch
        got = np.array(read_window(path)[0]) if path.exists() else None
        if got is not None and len(got) == WINDOW and np.array_equal(got[-1], sent[-1]):
            break
        assert time.monotonic() < deadline, "the window file never held the last contexts"
        time.sleep(0.1)
    assert np.array_equal(got, sent[-WINDOW:])  # the newest WINDOW contexts, oldest first
    assert got.shape == (WINDOW, m.context_len, m.dim)


def test_token_is_required_on_v1_only(server):
    client, app = server
    m = _served(app)
    body = {"contexts": random_unit(0, 1, m.context_len, m.dim).tolist()}
    assert client.post("/v1/predict", json=body).status_code == 401
    assert client.post("/v1/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/feedback", json={"prediction_id": "x", "target": [1.0]}).status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.post("/v1/predict", json=body, headers=AUTH).status_code == 200
    assert 'kind="auth"' in client.get("/metrics").text


def test_feedback_updates_online_cosine_per_version(server, versions):
    client, app = server
    m = _served(app)
    res = client.post("/v1/predict", json={"contexts": random_unit(3, 2, m.context_len, m.dim).tolist()},
                      headers=AUTH).json()
    p0, p1 = np.asarray(res["predictions"], dtype=np.float64)
    fb = client.post("/v1/feedback", json={"prediction_id": res["prediction_ids"][0], "target": p0.tolist()},
                     headers=AUTH)
    assert fb.status_code == 200, fb.text
    assert fb.json()["cosine"] == pytest.approx(1.0, abs=1e-5) and fb.json()["version"] == versions[0]
    other = -p1 / np.linalg.norm(p1)
    fb2 = client.post("/v1/feedback", json={"prediction_id": res["prediction_ids"][1], "target": other.tolist()},
                      headers=AUTH).json()
    assert fb2["cosine"] == pytest.approx(-1.0, abs=1e-5)
    again = client.post("/v1/feedback", json={"prediction_id": res["prediction_ids"][0], "target": p0.tolist()},
                        headers=AUTH)
    assert again.status_code == 404 and "unknown prediction_id" in again.json()["detail"]
    bad = client.post("/v1/feedback", json={"prediction_id": "nope", "target": (p0 * 3).tolist()}, headers=AUTH)
    assert bad.status_code == 422 and "unit" in bad.json()["detail"]
    online = client.get("/v1/models", headers=AUTH).json()["online_cosine"][str(versions[0])]
    assert online["count"] >= 2
    metrics = client.get("/metrics").text
    assert f'lvm_serve_online_cosine_count{{version="{versions[0]}"}}' in metrics
    assert f'lvm_serve_online_cosine_mean{{version="{versions[0]}"}}' in metrics


def test_metrics_count_requests_per_version(server, versions):
    client, _ = server
    text = client.get("/metrics").text
    assert f'lvm_serve_requests_total{{code="200",endpoint="/v1/predict",version="{versions[0]}"}}' in text
    assert "lvm_serve_request_latency_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert f'lvm_serve_model_info{{alias="champion",name="{NAME}",version="{versions[0]}"}} 1.0' in text


def test_champion_move_is_swapped_in_without_failed_requests(server, versions, session_data_dir: Path):
    from lvm_core.tracking.promotion import promote, rollback
    from lvm_core.tracking.setup import configure_tracking

    client, app = server
    m = _served(app)
    body = {"contexts": random_unit(4, 4, m.context_len, m.dim).tolist()}
    seen: dict[int, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/predict", json=body, headers=AUTH)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        v = r.json()["version"]
                        seen[v] = seen.get(v, 0) + 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        configure_tracking(session_data_dir)
        promote(NAME, versions[1], force=True)
        moved_at = time.monotonic()
        while app.state.holder.current.model.version != versions[1]:
            assert time.monotonic() - moved_at < 30, app.state.holder.status()
            time.sleep(0.05)
        switch_s = time.monotonic() - moved_at
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(30)
    assert not failures, failures[:3]
    assert seen.get(versions[0], 0) > 0 and seen.get(versions[1], 0) > 0, seen
    assert switch_s < REFRESH_S + 10
    info = client.get("/v1/models", headers=AUTH).json()
    assert info["serving"][0]["version"] == versions[1] and info["last_error"] is None
    after = client.post("/v1/predict", json=body, headers=AUTH).json()
    assert after["version"] == versions[1]
    # and back (rollback): the old version is served again
    rollback(NAME)
    deadline = time.monotonic() + 30
    while client.get("/readyz").json()["version"] != versions[0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_canary_share_is_sticky_per_client_key(server, versions, session_data_dir: Path):
    from lvm_core.rollout.plan import abort, set_step, start
    from lvm_core.rollout.state import read_state
    from lvm_core.tracking.references import current_champion
    from lvm_core.tracking.setup import configure_tracking

    client, app = server
    champion, challenger = versions
    configure_tracking(session_data_dir)
    assert current_champion(NAME) == champion
    mark_gates(NAME, challenger, passed=True)
    start(NAME, challenger)
    state = set_step(NAME, 1)
    assert (state.share, state.challenger, state.champion) == (0.2, challenger, champion)
    holder = app.state.holder
    wait_until(lambda: holder.challenger_share() == 0.2
               and client.get("/v1/rollout/stats", headers=AUTH).json()["window"] == state.window,
               what="the service to read the 20% step")
    m = _served(app)
    x = random_unit(5, 1, m.context_len, m.dim).tolist()
    def ask(i: int) -> tuple[str, int]:  # half the clients name themselves in a header, half in the body
        key = f"client-{i}"
        if i % 2:
            r = client.post("/v1/predict", json={"contexts": x, "client_key": key}, headers=AUTH)
        else:
            r = client.post("/v1/predict", json={"contexts": x}, headers={**AUTH, "X-Client-Key": key})
        assert r.status_code == 200, r.text
        return key, r.json()["version"]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answered = dict(pool.map(ask, range(CANARY_CLIENTS)))
        share = sum(v == challenger for v in answered.values()) / len(answered)
        assert 0.15 <= share <= 0.25, share
        assert set(answered.values()) == {champion, challenger}
        for i in range(0, CANARY_CLIENTS, 7):  # sticky: the same key gets the same version, however it is sent
            key = f"client-{i}"
            r = client.post("/v1/predict", json={"contexts": x}, headers={**AUTH, "X-Client-Key": key})
            assert r.json()["version"] == answered[key], key
        info = client.get("/v1/models", headers=AUTH).json()
        assert {e["version"]: e["share"] for e in info["serving"]} == pytest.approx({champion: 0.8, challenger: 0.2})
        assert info["rollout"]["status"] == "active" and info["rollout"]["challenger"] == challenger
        stats = client.get("/v1/rollout/stats", headers=AUTH).json()
        assert stats["window"] == read_state(NAME).window
        counted = stats["versions"][str(challenger)]["requests"] + stats["versions"][str(champion)]["requests"]
        assert counted == CANARY_CLIENTS + len(range(0, CANARY_CLIENTS, 7))
        assert stats["versions"][str(challenger)]["p99_latency_s"] > 0
        text = client.get("/metrics").text
        assert f'lvm_serve_traffic_share{{version="{challenger}"}} 0.2' in text
        assert f'lvm_serve_model_info{{alias="challenger",name="{NAME}",version="{challenger}"}} 1.0' in text
    finally:
        abort(NAME, "test over")
    wait_until(lambda: holder.challenger is None, what="the challenger to be dropped")
    assert client.post("/v1/predict", json={"contexts": x, "client_key": "client-1"}, headers=AUTH).json()["version"] == champion
    [entry] = client.get("/v1/models", headers=AUTH).json()["serving"]
    assert (entry["version"], entry["share"]) == (champion, 1.0)
    assert current_champion(NAME) == champion and read_state(NAME).status == "aborted"


def _dataset_context(dataset: Path, ctx: int) -> tuple[list[str], set[str]]:
    """The first ctx chunk texts of the first article long enough for a window, and all texts of the dataset."""
    import pyarrow.parquet as pq

    rows = pq.read_table(dataset / "chunks.parquet", columns=["article_id", "chunk_index", "text"]).to_pylist()
    by_article: dict[int, list[dict]] = {}
    for r in rows:
        by_article.setdefault(r["article_id"], []).append(r)
    article = next(a for a, rs in by_article.items() if len(rs) > ctx)
    ordered = sorted(by_article[article], key=lambda r: r["chunk_index"])
    return [r["text"] for r in ordered[:ctx]], {r["text"] for r in rows}


def test_predict_text_returns_neighbours_from_the_models_dataset(server, versions, small_dataset: Path):
    client, app = server
    m = _served(app)
    context, dataset_texts = _dataset_context(small_dataset, m.context_len)
    res = client.post("/v1/predict/text", json={"texts": context, "k": 4}, headers=AUTH)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["version"] == m.version and body["dataset"] == small_dataset.name
    pred = np.asarray(body["prediction"])
    assert pred.shape == (m.dim,) and abs(np.linalg.norm(pred) - 1) < 1e-4
    hits = body["neighbors"]
    assert len(hits) == 4
    for h in hits:
        assert h["text"] in dataset_texts and h["text"] not in context  # the context's own chunks are left out
        assert isinstance(h["title"], str) and h["title"] and isinstance(h["article_id"], int)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    fb = client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "target": pred.tolist()}, headers=AUTH)
    assert fb.status_code == 200 and fb.json()["cosine"] == pytest.approx(1.0, abs=1e-5)


def test_predict_text_rejects_bad_input_with_4xx(server, small_dataset: Path):
    client, app = server
    m = _served(app)
    context, _ = _dataset_context(small_dataset, m.context_len)
    cases = {
        "empty": ({"texts": []}, 422, "empty context"),
        "too few": ({"texts": context[:-1]}, 422, f"exactly {m.context_len}"),
        "blank text": ({"texts": context[:-1] + ["   "]}, 422, "is empty"),
        "oversized": ({"texts": context[:-1] + ["word " * 500]}, 413, "over the limit of 2000"),
        "not strings": ({"texts": [1] * m.context_len}, 422, "list of strings"),
        "no texts": ({"contexts": context}, 422, "missing field 'texts'"),
        "bad k": ({"texts": context, "k": 0}, 422, "'k'"),
    }
    for what, (payload, status, words) in cases.items():
        res = client.post("/v1/predict/text", json=payload, headers=AUTH)
        assert res.status_code == status, (what, res.status_code, res.text)
        assert words in res.json()["detail"], (what, res.json())
    assert client.post("/v1/predict/text", json={"texts": context}).status_code == 401


def test_predict_text_refuses_a_model_whose_encoder_cannot_be_loaded(server, tmp_path: Path):
    import dataclasses

    from lvm_core.data.embedding.fingerprint import EncoderFingerprint
    from lvm_core.serving.text import TextSearch, TextUnavailable

    _, app = server
    m = _served(app)
    gone = EncoderFingerprint(model_name=str(tmp_path / "no-such-encoder"), weights_digest="0" * 64, dim=m.dim)
    with pytest.raises(TextUnavailable, match="cannot be loaded") as info:
        TextSearch().index_for(dataclasses.replace(m, fingerprint=gone))
    assert info.value.status == 503
