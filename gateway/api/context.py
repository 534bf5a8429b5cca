"""The request dependencies that find out who is asking (token or session), check their role
and keep a site_user inside their site; what they read is :class:`gateway.api.state.ApiContext`
(re-exported here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request

from gateway.api.auth import (
    SESSION_COOKIE,
    Permission,
    Session,
    allowed,
    csrf_ok,
)
from gateway.api.state import ApiContext, Broadcaster, Change
from gateway.users import Role, User

__all__ = [
    "ApiContext",
    "Broadcaster",
    "Change",
    "CurrentUser",
    "context",
    "current_user",
    "forbidden",
    "need",
    "record_refused",
    "site_visible",
]

log = logging.getLogger(__name__)

CSRF_HEADER: Final = "x-csrf-token"
_FORMS: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
_SAFE_METHODS: Final = ("GET", "HEAD", "OPTIONS")
# What a refused write is recorded against when the route has no alarm id in its path.
_WRITE_TARGETS: Final = {"registry_import": "registry"}
_TARGET_CHARS: Final = 200  # a refused target comes from the asker's URL: kept short


async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]


def _session(request: Request, ctx: ApiContext) -> Session | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    return ctx.sessions.get(session_id, ctx.clock.monotonic()) if session_id else None


async def current_user(request: Request, ctx: Ctx) -> User:
    """The bearer token's user, else the session's; 401 if neither. A write made with a
    session cookie must carry the session's CSRF token (header or form field ``csrf``)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = ctx.users.by_token(header[7:].strip())
        if user is None:
            raise HTTPException(401, "unknown API token", {"WWW-Authenticate": "Bearer"})
        return user
    session = _session(request, ctx)
    if session is None:
        raise HTTPException(401, "log in or send an API token", {"WWW-Authenticate": "Bearer"})
    unsafe = request.method not in _SAFE_METHODS
    if unsafe and not csrf_ok(session, await _presented_csrf(request)):
        raise HTTPException(403, "missing or wrong CSRF token")
    return session.user


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    if request.headers.get("content-type", "").startswith(_FORMS):
        value = (await request.form()).get("csrf")  # Starlette keeps the parsed form
        return value if isinstance(value, str) else None
    return None


CurrentUser = Annotated[User, Depends(current_user)]


def need(permission: Permission) -> Callable[[Request, ApiContext, User], Awaitable[User]]:
    """A dependency: the current user, 403 unless their role grants ``permission``; a write
    refused so is recorded (``user_writes``) against the route's action and target."""

    async def check(request: Request, ctx: Ctx, user: CurrentUser) -> User:
        if not allowed(user, permission):
            write = _write_of(request) if request.method not in _SAFE_METHODS else None
            raise forbidden(ctx, user, permission, write)
        return user

    return check


def _write_of(request: Request) -> tuple[str, str]:
    """The action (the route's name: "acknowledge", "registry_import", ...) and target."""
    route = request.scope.get("route")
    action = getattr(route, "name", None) or request.url.path
    target = request.path_params.get("alarm_id") or _WRITE_TARGETS.get(action, request.url.path)
    return action, target


def forbidden(
    ctx: ApiContext, user: User, permission: Permission, write: tuple[str, str] | None
) -> HTTPException:
    """The 403 for a role without ``permission``; a refused ``write`` (action, target) is
    recorded."""
    reason = f"role {user.role} may not {permission.value}"
    if write is not None:
        record_refused(ctx, user, *write, result="forbidden", reason=reason)
    return HTTPException(403, reason)


def record_refused(
    ctx: ApiContext, user: User, action: str, target: str, *, result: str, reason: str
) -> None:
    """Record a write refused before it reached the alarms room (bounded per user: see
    :data:`gateway.users.REFUSED_PER_MINUTE`)."""
    ctx.users.record_write(
        ctx.clock.now(), user, action, target[:_TARGET_CHARS], result=result, detail=reason
    )


def site_visible(user: User, site_id: str | None) -> bool:
    """A site_user sees only their own site (and nothing without a site)."""
    return user.role is not Role.SITE_USER or (site_id is not None and site_id == user.site_id)
