"""The FastAPI application: JSON API, console, operations endpoints, static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from gateway.api import console, ops, routes
from gateway.api.context import ApiContext

__all__ = ["create_app"]

_DESCRIPTION = """Alarms, sites, kits and devices of one gasgate gateway; the coverage audit.

Authenticate with `Authorization: Bearer <token>` (`gasgate user token NAME`) or a console
session (`POST /api/login`; writes then need the `X-CSRF-Token` header). No endpoint opens a
valve. See docs/api.md for the roles."""


# The console's pages only load their own script and style; no page may frame them (an
# acknowledge button must not be clickable through someone else's page).
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
        response.headers.update(_SECURITY_HEADERS)
    return response


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="gasgate", version="1", description=_DESCRIPTION)
    app.state.ctx = ctx
    app.middleware("http")(_security_headers)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
