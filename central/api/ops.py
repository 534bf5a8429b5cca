"""Unauthenticated operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (a
database round trip, the LISTEN connection, and the links' checks when the instance gives them;
503 until all pass) and ``/metrics`` (Prometheus text of the instance's registry)."""

from __future__ import annotations

import asyncio
from typing import Final

import psycopg
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from psycopg_pool import PoolTimeout

from central.api.context import CentralContext, Ctx

__all__ = ["router"]

router = APIRouter()
_DB_TIMEOUT_S: Final = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {}})
async def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, bool] = {"database": await _database(ctx), "listen": ctx.hub.listening}
    if ctx.ready is not None:
        checks.update(ctx.ready())
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _database(ctx: CentralContext) -> bool:
    try:
        async with asyncio.timeout(_DB_TIMEOUT_S), ctx.pool.connection(_DB_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, PoolTimeout, TimeoutError, OSError):
        return False
    return True


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
