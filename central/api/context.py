"""What every request reads (:class:`CentralContext`) and who is asking: an API token
(``Authorization: Bearer``) or a console session (a cookie naming a session kept in the
database, so every instance knows it; every write with it carries the session's CSRF token),
with the gateway's roles and permissions (:mod:`gateway.api.auth`)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Protocol
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from central.notify import Hub
from central.users import CentralUsers, Officer, OpenSession
from gateway.api.auth import SESSION_COOKIE, LoginLimiter, Permission

__all__ = [
    "CSRF_HEADER",
    "ApiSettings",
    "CentralContext",
    "Ctx",
    "CurrentOfficer",
    "Readiness",
    "context",
    "current_officer",
    "need",
]

CSRF_HEADER: Final = "x-csrf-token"
_FORMS: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
_SAFE_METHODS: Final = ("GET", "HEAD", "OPTIONS")
Readiness = Callable[[], Mapping[str, bool]]


class ApiSettings(Protocol):
    """What the API reads of the instance's settings (``central.settings.CentralSettings``)."""

    @property
    def silent_after_s(self) -> float: ...

    @property
    def timezone(self) -> str: ...

    @property
    def map_tile_url(self) -> str: ...


@dataclass(slots=True)
class CentralContext:
    pool: AsyncConnectionPool[Any]
    settings: ApiSettings
    hub: Hub
    registry: CollectorRegistry
    ready: Readiness | None = None
    users: CentralUsers = field(init=False)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    zone: ZoneInfo = field(init=False)
    steps: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.users = CentralUsers(self.pool)
        self.zone = ZoneInfo(self.settings.timezone)
        self.steps = Counter(
            "gasgate_central_officer_steps",
            "Officer steps asked for through the API and pages, by action and result",
            ["action", "result"],
            registry=self.registry,
        )
        hub = self.hub
        Gauge(
            "gasgate_central_live_consoles",
            "Open live streams (/api/stream) at this instance",
            registry=self.registry,
        ).set_function(lambda: hub.subscribers)
        Gauge(
            "gasgate_central_live_consoles_dropped",
            "Live streams dropped since the start for falling behind",
            registry=self.registry,
        ).set_function(lambda: hub.dropped)

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


async def context(request: Request) -> CentralContext:
    ctx: CentralContext = request.app.state.ctx
    return ctx


Ctx = Annotated[CentralContext, Depends(context)]


async def _session(request: Request, ctx: CentralContext) -> OpenSession | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    return await ctx.users.session(session_id, ctx.now()) if session_id else None


async def current_officer(request: Request, ctx: Ctx) -> Officer:
    """The bearer token's user, else the session's; 401 if neither. A write made with a
    session cookie must carry the session's CSRF token (header or form field ``csrf``). The
    user is read afresh each time: a removed user or a changed district list counts at once."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        officer = await ctx.users.by_token(header[7:].strip())
        if officer is None:
            raise HTTPException(401, "unknown API token", {"WWW-Authenticate": "Bearer"})
        return officer
    session = await _session(request, ctx)
    if session is None:
        raise HTTPException(401, "log in or send an API token", {"WWW-Authenticate": "Bearer"})
    unsafe = request.method not in _SAFE_METHODS
    if unsafe and not _csrf_ok(session.csrf, await _presented_csrf(request)):
        raise HTTPException(403, "missing or wrong CSRF token")
    request.state.csrf = session.csrf  # for the page's forms
    return session.officer


def _csrf_ok(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected, presented)


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    if request.headers.get("content-type", "").startswith(_FORMS):
        value = (await request.form()).get("csrf")  # Starlette keeps the parsed form
        return value if isinstance(value, str) else None
    return None


CurrentOfficer = Annotated[Officer, Depends(current_officer)]


def need(permission: Permission) -> Callable[[CurrentOfficer], Awaitable[Officer]]:
    """A dependency: the current user, 403 unless their role grants ``permission``."""

    async def check(officer: CurrentOfficer) -> Officer:
        if not officer.may(permission):
            raise HTTPException(403, f"role {officer.role} may not {permission.value}")
        return officer

    return check
