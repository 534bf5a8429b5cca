"""The monitoring center's FastAPI application: JSON API, control-room pages, operations
endpoints, static files. One per instance; every instance serves the same database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

import gateway.api
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
# The API browser is the gateway's vendored Swagger UI (/docs works with no internet); it starts
# itself with an inline script, and nothing of it comes from elsewhere.
_DOCS_HEADERS: Final = _SECURITY_HEADERS | {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
}
_SWAGGER_DIR: Final = Path(gateway.api.__file__).parent / "static" / "vendor" / "swagger-ui"
_SWAGGER: Final = "/vendor/swagger-ui"
_SOUND: Final = Path(gateway.api.__file__).parent / "static" / "alarm.wav"  # the console's own


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    headers = _DOCS_HEADERS if request.url.path == "/docs" else _SECURITY_HEADERS
    for name, value in headers.items():  # a page's own stricter header stands
        response.headers.setdefault(name, value)
    return response


async def _docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="gasgate central API",
        swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # its default asks a public validator
    )


async def _sound() -> FileResponse:
    return FileResponse(_SOUND, media_type="audio/wav")


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
    app = FastAPI(
        title="gasgate central", version="1", description=_DESCRIPTION, docs_url=None,
        redoc_url=None,
    )  # fmt: skip
    app.state.ctx = CentralContext(pool, settings, hub, registry or CollectorRegistry(), ready)
    app.middleware("http")(_security_headers)
    app.add_exception_handler(routes.StepRefused, _refused)
    app.get("/docs", include_in_schema=False)(_docs)
    app.get("/sound/alarm.wav", include_in_schema=False)(_sound)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    app.include_router(alert_page.router)  # /a/{token}: the site's alert page, no login
    static = Path(__file__).parent.parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")
    app.mount(_SWAGGER, StaticFiles(directory=_SWAGGER_DIR), name="swagger-ui")
    return app
