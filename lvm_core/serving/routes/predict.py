"""Prediction routes: POST /v1/predict (context vectors) and POST /v1/predict/text (context texts → neighbours).

Each request is answered by the version the holder routes its client key to; every prediction is kept for
`/v1/feedback`. `/v1/predict` is the hot path: no FastAPI dependency or body model (the body is parsed by
orjson and checked by `inputs`, which says what was wrong), and no worker-thread hop for a small body; a
body over `inline_body_bytes` is parsed, checked and predicted in one hop off the event loop, so a large
request never stalls the small ones beside it. Small requests arriving together share one model call
(`service.MicroBatcher`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lvm_core.serving.holder import Served
from lvm_core.serving.inputs import BINARY_TYPE, InputError, binary_contexts, validate_contexts, validate_texts
from lvm_core.serving.service import Service, ServiceDep, Unavailable, error, json_response
from lvm_core.serving.settings import CLIENT_KEY_HEADER
from lvm_core.serving.text import TextUnavailable

_log = logging.getLogger(__name__)

router = APIRouter()

_VECTORS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
PREDICT_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["contexts"],
            "properties": {"contexts": {"type": "array", "items": _VECTORS,
                                        "description": "n contexts, each ctx unit vectors of D floats, oldest first"},
                           "client_key": {"type": "string", "description": "routes a rollout share (else the "
                                          "X-Client-Key header; neither: at random)"}}}},
        BINARY_TYPE: {"schema": {"type": "string", "format": "binary", "description": (
            "n×ctx×D little-endian float32 values, row-major (a quarter of the JSON's size, so 256 contexts fit "
            "the body limit); the client key only in the X-Client-Key header")}},
    }},
    "responses": {"200": {"description": "One prediction per context", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"predictions": _VECTORS, "model": {"type": "string"},
                                         "version": {"type": "integer"},
                                         "prediction_ids": {"type": "array", "items": {"type": "string"}}}}}}},
                  "4XX": {"description": "Bad input: `{error, detail}` says what was wrong"},
                  "503": {"description": "No model loaded yet"}},
}


def _contexts(svc: Service, body: bytes, binary: bool, key: str | None) -> tuple[Served, np.ndarray, str | None]:
    """The answering version, the checked (n, ctx, D) contexts of a body and its client key; every failure
    an InputError (or Unavailable)."""
    try:
        if binary:
            served = svc.route(key)
            return served, binary_contexts(body, served.model, svc.settings), key
        payload, served, key = svc.route_payload(body, key)
        return served, validate_contexts(payload, served.model, svc.settings), key
    except (InputError, Unavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a body makes the checks raise is the body's fault
        _log.debug("malformed /v1/predict body", exc_info=True)
        raise InputError(f"malformed body ({type(exc).__name__}: {str(exc)[:200]})", 400) from None


def _answer(svc: Service, body: bytes, binary: bool, key: str | None) -> tuple[Served, str | None, Any, Any]:
    """(version, client key, predictions, None), or (version, client key, None, the prediction's exception)."""
    served, x, key = _contexts(svc, body, binary, key)
    try:
        return served, key, svc.predict_now(served, x, key), None
    except Exception as exc:  # noqa: BLE001 - answered as a 500 by the caller, with the traceback logged
        return served, key, None, exc


@router.post("/v1/predict", response_class=Response, openapi_extra=PREDICT_DOC,
             summary="Predict the next chunk vector of each context")
async def predict(request: Request) -> Response:
    svc = cast(Service, request.app.state.service)
    refused = svc.refusal(request)
    if refused is not None:
        return refused
    body = await request.body()
    headers = request.headers
    key = headers.get(CLIENT_KEY_HEADER)
    binary = headers.get("content-type", "").startswith(BINARY_TYPE)
    try:
        if svc.off_loop(body):
            served, key, pred, failed = await run_in_threadpool(_answer, svc, body, binary, key)
        else:
            served, x, key = _contexts(svc, body, binary, key)
            pred = failed = None
            try:
                pred = await svc.batcher.predict(served, x, key)  # one model call for requests arriving together
            except Exception as exc:  # noqa: BLE001 - answered as a 500 below, with the traceback logged
                failed = exc
    except InputError as exc:
        return error(request, exc.status, "validation", str(exc))
    except Unavailable as exc:
        return error(request, 503, "unavailable", str(exc))
    request.state.lvm_version = served.version_label
    request.state.lvm_client = key
    if pred is None:
        _log.error("prediction failed on %s", served.model.describe(), exc_info=failed)
        return error(request, 500, "internal", "prediction failed (logged on the server)")
    ids = svc.feedback.put(served.version_label, pred, client=key)
    return json_response({"predictions": np.ascontiguousarray(pred, dtype=np.float32), "model": served.model.name,
                          "version": served.model.version, "prediction_ids": ids})


@router.post("/v1/predict/text")
async def predict_text(request: Request, svc: ServiceDep) -> Response:
    payload, served, refused = await svc.routed(request)
    if refused is not None:
        return refused
    assert served is not None  # routed() gives the answering model or a refusal
    try:
        context, k = validate_texts(payload, served.model, svc.settings)
    except InputError as exc:
        return error(request, exc.status, "validation", str(exc))
    try:
        index = await run_in_threadpool(svc.texts.index_for, served.model)
        x = await run_in_threadpool(index.encoder.encode, context)
    except TextUnavailable as exc:
        return error(request, exc.status, "unavailable", str(exc))
    try:
        key = request.state.lvm_client
        pred = await svc.predict_with(served, x[None, :, :].astype(np.float32), key)
        hits = await run_in_threadpool(index.neighbours, pred, k, context)
    except Exception:  # noqa: BLE001 - logged with its traceback, answered as a 500
        _log.exception("text prediction failed on %s", served.model.describe())
        return error(request, 500, "internal", "prediction failed (logged on the server)")
    [pid] = svc.feedback.put(served.version_label, pred, client=key)
    return JSONResponse({"prediction": pred[0].tolist(), "prediction_id": pid, "neighbors": hits[0],
                         "model": served.model.name, "version": served.model.version,
                         "dataset": Path(index.dataset).name})
