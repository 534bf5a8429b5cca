"""Unauthenticated operations endpoints (docs/api.md): ``/metrics`` (Prometheus text),
``/healthz`` (the process answers) and ``/readyz`` (store open and writing to disk, site
broker connected, registry loaded; 503 until all are, with the store's reason if it is not)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from gateway.api.context import ApiContext, context
from gateway.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(ctx: Ctx) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {}})
async def readyz(ctx: Ctx) -> JSONResponse:
    checks = dict(ctx.readiness())
    ready = all(checks.values())
    body: dict[str, object] = {"ready": ready, "checks": checks}
    problem = ctx.store.problem  # degraded to memory, or commits failing: say why
    if problem is None and not checks["store"]:
        problem = f"{ctx.alarms.unrecorded} alarm transition(s) not yet stored"
    if problem is not None:
        body["reasons"] = {"store": problem}
    return JSONResponse(body, status_code=200 if ready else 503)
