"""The FastAPI application: JSON API, console, operations endpoints, static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
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
# The API browser (Swagger UI, vendored under static/vendor: /docs works with no internet)
# starts itself with an inline script; nothing of it comes from elsewhere.
_DOCS_HEADERS: Final = _SECURITY_HEADERS | {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
}
_SWAGGER: Final = "/static/vendor/swagger-ui"


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    docs = request.url.path == "/docs"
    response.headers.update(_DOCS_HEADERS if docs else _SECURITY_HEADERS)
    return response


async def _docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="gasgate API",
        swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # its default asks a public validator
    )


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="gasgate", version="1", description=_DESCRIPTION, docs_url=None, redoc_url=None
    )
    app.state.ctx = ctx
    app.middleware("http")(_security_headers)
    app.get("/docs", include_in_schema=False)(_docs)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
