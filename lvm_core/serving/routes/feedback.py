"""POST /v1/feedback: the true next chunk of a past prediction, scored as the online cosine of its version."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lvm_core.serving.inputs import InputError, parse_json, validate_feedback
from lvm_core.serving.service import ServiceDep, error

router = APIRouter()


@router.post("/v1/feedback")
async def give_feedback(request: Request, svc: ServiceDep) -> JSONResponse:
    if not svc.authorized(request):
        return svc.unauthorized(request)
    try:
        pid, target = validate_feedback(parse_json(await request.body()), svc.settings)
    except InputError as exc:
        return error(request, exc.status, "validation", str(exc))
    feedback = svc.feedback
    outcome, item = feedback.take(pid, target.shape[0])
    if item is None:
        return error(request, 404, "not_found", f"unknown prediction_id {pid!r} (never issued, already "
                     f"answered, or older than the last {feedback.capacity} predictions)")
    version, pred, client = item
    request.state.lvm_version = version
    if outcome == "dim":
        return error(request, 422, "validation", f"'target' has dim {target.shape[0]}, the prediction has dim "
                     f"{pred.shape[0]}")
    cos = float(np.dot(pred.astype(np.float64), target.astype(np.float64))
                / (np.linalg.norm(pred) * np.linalg.norm(target)))
    mean = feedback.record(version, cos)
    svc.live.record_cosine(version, cos, client=client)
    svc.metrics.online_cosine.labels(version).observe(cos)
    svc.metrics.online_cosine_mean.labels(version).set(mean)
    return JSONResponse({"prediction_id": pid, "version": int(version) if version.isdigit() else version,
                         "cosine": cos, "online_cosine": mean})
