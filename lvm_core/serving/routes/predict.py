"""Prediction routes: POST /v1/predict (context vectors) and POST /v1/predict/text (context texts → neighbours).

Each request is answered by the version `Service.routed` picks for its client key; every prediction is
kept for `/v1/feedback`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lvm_core.serving.inputs import InputError, validate_contexts, validate_texts
from lvm_core.serving.service import ServiceDep, error, json_response
from lvm_core.serving.text import TextUnavailable

_log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/predict")
async def predict(request: Request, svc: ServiceDep) -> Response:
    payload, served, refused = await svc.routed(request)
    if refused is not None:
        return refused
    assert served is not None  # routed() gives the answering model or a refusal
    try:
        x = validate_contexts(payload, served.model, svc.settings)
    except InputError as exc:
        return error(request, exc.status, "validation", str(exc))
    try:
        pred = await svc.predict_with(served, x)
    except Exception:  # noqa: BLE001 - logged with its traceback, answered as a 500
        _log.exception("prediction failed on %s", served.model.describe())
        return error(request, 500, "internal", "prediction failed (logged on the server)")
    ids = svc.feedback.put(served.version_label, pred)
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
        pred = await svc.predict_with(served, x[None, :, :].astype(np.float32))
        hits = await run_in_threadpool(index.neighbours, pred, k, context)
    except Exception:  # noqa: BLE001 - logged with its traceback, answered as a 500
        _log.exception("text prediction failed on %s", served.model.describe())
        return error(request, 500, "internal", "prediction failed (logged on the server)")
    [pid] = svc.feedback.put(served.version_label, pred)
    return JSONResponse({"prediction": pred[0].tolist(), "prediction_id": pid, "neighbors": hits[0],
                         "model": served.model.name, "version": served.model.version,
                         "dataset": Path(index.dataset).name})
