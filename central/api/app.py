"""The monitoring center's FastAPI application: JSON API, control-room pages, operations
endpoints, static files. One per instance; every instance serves the same database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from central import alert_page
from central.api import console, ops, routes
from central.api.context import ApiSettings, CentralContext, Readiness
from central.notify import Hub

__all__ = ["create_app"]

_DESCRIPTION = """The gas company's monitoring center over every gasgate gateway: incidents and
the officer steps on them, gateways, sites, the coverage and response audit.

Authenticate with `Authorization: Bearer <token>` (`gasgate central user token NAME`) or a
console session (`POST /api/login`; writes then need the `X-CSRF-Token` header). Roles are the
gateway's (docs/api.md). No endpoint opens a valve."""

# The pages load only their own script and style; no page may frame them (an acknowledge
# button must not be clickable through someone else's page).
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_THIRD_PARTY_PAGES: Final = ("/docs", "/redoc")  # FastAPI's API browsers load from a CDN


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    if not request.url.path.startswith(_THIRD_PARTY_PAGES):
        for name, value in _SECURITY_HEADERS.items():  # a page's own stricter header stands
            response.headers.setdefault(name, value)
    return response


async def _refused(_request: Request, exc: Any) -> Response:
    assert isinstance(exc, routes.StepRefused)
    return exc.response()


def create_app(
    pool: AsyncConnectionPool[Any],
    settings: ApiSettings,
    hub: Hub,
    *,
    ready: Readiness | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """``hub`` is started and stopped by the caller (the instance's controller); ``ready``
    adds the caller's checks to ``/readyz``; ``registry`` is served at ``/metrics`` (a new one
    when None), with the API's own counters added to it."""
    app = FastAPI(title="gasgate central", version="1", description=_DESCRIPTION)
    app.state.ctx = CentralContext(pool, settings, hub, registry or CollectorRegistry(), ready)
    app.middleware("http")(_security_headers)
    app.add_exception_handler(routes.StepRefused, _refused)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.include_router(alert_page.router)  # /a/{token}: the site's alert page, no login
    static = Path(__file__).parent.parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")
    return app
