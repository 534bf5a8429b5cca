"""The FastAPI application: JSON API, console, operations endpoints, static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from gateway.api import console, ops, routes
from gateway.api.context import ApiContext

__all__ = ["create_app"]

_DESCRIPTION = """Alarms, sites, kits and devices of one gasgate gateway; the coverage audit.

Authenticate with `Authorization: Bearer <token>` (`gasgate user token NAME`) or a console
session (`POST /api/login`; writes then need the `X-CSRF-Token` header). No endpoint opens a
valve. See docs/api.md for the roles."""


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="gasgate", version="1", description=_DESCRIPTION)
    app.state.ctx = ctx
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
