"""Probes and read-only views: /healthz, /readyz, /metrics (always open), /v1/models and /v1/rollout/stats."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from lvm_core.serving.service import ServiceDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: ServiceDep) -> JSONResponse:
    holder = svc.holder
    cur = holder.current
    if cur is None:
        return JSONResponse({"ready": False, "detail": holder.last_error or "model not loaded yet"}, status_code=503)
    return JSONResponse({"ready": True, "name": cur.model.name, "version": cur.model.version})


@router.get("/metrics")
async def prom(svc: ServiceDep) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request, svc: ServiceDep) -> JSONResponse:
    if not svc.authorized(request):
        return svc.unauthorized(request)
    online = svc.feedback.online()
    serving = []
    for served, share in svc.holder.serving():
        entry = served.describe(share)
        entry["online_cosine"] = online.get(served.version_label)
        serving.append(entry)
    return JSONResponse({"serving": serving, "online_cosine": online, **svc.holder.status()})


@router.get("/v1/rollout/stats")
async def rollout_stats(request: Request, svc: ServiceDep) -> JSONResponse:
    if not svc.authorized(request):
        return svc.unauthorized(request)
    snap = svc.live.snapshot()
    snap["shares"] = {served.version_label: share for served, share in svc.holder.serving()}
    return JSONResponse(snap)
