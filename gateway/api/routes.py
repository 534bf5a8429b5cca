"""The JSON API under ``/api`` (docs/api.md). Every route names the permission it needs; a
site_user asking for another site's things gets the same 404 as for things that do not exist.

No route opens a valve: the gateway has no such command (docs/safety-domain), and the only
writes here are alarm operations (the alarms room's, the same the gas company path calls),
the registry import and logins. Every write is recorded with the user (``user_writes``).

Every handler is ``async``: FastAPI would run plain functions in a thread pool, and the rooms
they read and call (alarms, registry, store) belong to the event loop's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gateway.alarms import MAX_SHELVE_S, Refused
from gateway.api.auth import SESSION_COOKIE, SESSION_S, Permission
from gateway.api.context import (
    ApiContext,
    CurrentUser,
    context,
    need,
    record_refused,
    site_visible,
)
from gateway.api.views import (
    AlarmView,
    AuditEntryView,
    Availability,
    DeviceView,
    HistoryView,
    SiteDetail,
    SiteView,
    alarm_view,
    device_view,
    site_detail,
    site_view,
    stored_alarms,
)
from gateway.audit import CoverageAudit, parse_since, run_audit
from gateway.escalation import trail
from gateway.events import Severity
from gateway.model import Alarm, AlarmState
from gateway.registry import Registry, import_dir, save
from gateway.store import Store
from gateway.users import User

__all__ = ["REFUSAL_STATUS", "answer_alarm", "router"]

router = APIRouter(prefix="/api")
Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[User, Depends(need(Permission.READ))]
Answerer = Annotated[User, Depends(need(Permission.ANSWER))]
Suppressor = Annotated[User, Depends(need(Permission.SUPPRESS))]
Auditor = Annotated[User, Depends(need(Permission.READ_AUDIT))]
Installer = Annotated[User, Depends(need(Permission.IMPORT_REGISTRY))]

REFUSAL_STATUS: Final = {
    "unknown_alarm": 404,
    "wrong_state": 409,
    "not_allowed": 409,
    "bad_request": 422,
    "store_failed": 503,
}
HEARTBEAT_S: Final = 15.0
MAX_UPLOAD: Final = 16 * 1024 * 1024


# --- who am I, logging in ---------------------------------------------------------------------


class Me(BaseModel):
    name: str
    role: str
    site_id: str | None


class Login(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class LoginAnswer(Me):
    csrf: str


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    return Me(name=user.name, role=user.role.value, site_id=user.site_id)


@router.post("/login", responses={401: {}, 429: {}})
async def login(body: Login, request: Request, response: Response, ctx: Ctx) -> LoginAnswer:
    """Open a console session: sets the session cookie, returns the CSRF token that every
    write made with the cookie must send as ``X-CSRF-Token``."""
    user = await check_login(ctx, body.name, body.password, request)
    session_id, session = ctx.sessions.open(user, ctx.clock.monotonic())
    set_session_cookie(response, session_id)
    return LoginAnswer(
        name=user.name, role=user.role.value, site_id=user.site_id, csrf=session.csrf
    )


async def check_login(ctx: ApiContext, name: str, password: str, request: Request) -> User:
    """The user, or 429 while rate limited, or 401. Limited per name and per address."""
    client = request.client.host if request.client else "?"
    keys = ctx.limiter.keys(name, client)
    now = ctx.clock.monotonic()
    wait_s = ctx.limiter.retry_after(keys, now)
    if wait_s:
        raise HTTPException(
            429, "too many failed logins; wait a few minutes", {"Retry-After": str(wait_s)}
        )
    # Argon2 takes tens of milliseconds: off the event loop, which also runs the safety path.
    # The store is read here, on the loop: its connection belongs to the loop's thread.
    stored = ctx.users.password_hash(name)
    matches = await asyncio.to_thread(ctx.users.verify, stored, password)
    user = ctx.users.get(name) if matches else None
    if user is None:
        ctx.limiter.failed(keys, now)
        raise HTTPException(401, "wrong name or password")
    ctx.limiter.succeeded(keys)
    return user


def set_session_cookie(response: Response, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(SESSION_S), httponly=True, samesite="strict"
    )


# --- sites, kits, devices ---------------------------------------------------------------------


def _visible_sites(ctx: ApiContext, user: User, district: str | None) -> list[SiteView]:
    return [
        site_view(ctx, s)
        for s in ctx.registry.sites()
        if site_visible(user, s.site_id) and (district is None or s.district == district)
    ]


@router.get("/sites")
async def sites(user: Reader, ctx: Ctx, district: str | None = None) -> list[SiteView]:
    return _visible_sites(ctx, user, district)


@router.get("/sites/{site_id}", responses={404: {}})
async def site(site_id: str, user: Reader, ctx: Ctx) -> SiteDetail:
    found = ctx.registry.site(site_id)
    if found is None or not site_visible(user, site_id):
        raise HTTPException(404, f"no site {site_id!r}")
    return site_detail(ctx, found, user)


class KitView(BaseModel):
    name: str
    description: str
    requirements: list[list[str]]


@router.get("/kits")
async def kits(_user: Reader, ctx: Ctx) -> list[KitView]:
    return [
        KitView(
            name=k.name,
            description=k.description,
            requirements=[[c.value for c in alternatives] for alternatives in k.requirements],
        )
        for k in ctx.registry.kits.values()
    ]


@router.get("/devices")
async def devices(  # noqa: PLR0917 - FastAPI passes query parameters by name
    user: Reader,
    ctx: Ctx,
    site: str | None = None,
    online: bool | None = None,
    low_battery_mv: Annotated[int | None, Query(ge=0, le=0xFFFF)] = None,
    availability: Availability | None = None,
) -> list[DeviceView]:
    """The fleet: every device's availability, last report, battery and signal. A device not
    heard from since the gateway started is ``not_heard_yet`` (``online`` null)."""
    views = [
        device_view(ctx, d.device_id)
        for d in ctx.registry.devices()
        if site_visible(user, d.site_id) and (site is None or d.site_id == site)
    ]
    return [
        v
        for v in views
        if v is not None
        and (online is None or v.online is online)
        and (availability is None or v.availability == availability)
        and (low_battery_mv is None or (v.battery_mv is not None and v.battery_mv < low_battery_mv))
    ]


@router.get("/devices/{device_id}", responses={404: {}})
async def device(device_id: str, user: Reader, ctx: Ctx) -> DeviceView:
    info = ctx.registry.device(device_id)
    view = device_view(ctx, device_id) if info and site_visible(user, info.site_id) else None
    if view is None:
        raise HTTPException(404, f"no device {device_id!r}")
    return view


# --- alarms -------------------------------------------------------------------------------------


def visible_alarm(ctx: ApiContext, user: User, alarm_id: str) -> Alarm:
    alarm = ctx.alarms.get(alarm_id)
    if alarm is None or not site_visible(user, alarm.site_id):
        raise HTTPException(404, _no_alarm(alarm_id))
    return alarm


def _no_alarm(alarm_id: str) -> str:
    return f"no alarm {alarm_id!r}"


def alarm_queue(
    ctx: ApiContext,
    user: User,
    *,
    state: AlarmState | None = None,
    severity: Severity | None = None,
    site: str | None = None,
    district: str | None = None,
    since: datetime | None = None,
) -> list[AlarmView]:
    """Open alarms a user may see (or, with ``since``, every alarm raised since then, closed
    ones too), most urgent first, then oldest first."""
    chosen = []
    for a in ctx.alarms.open_alarms() if since is None else stored_alarms(ctx, since):
        where = ctx.registry.site(a.site_id) if a.site_id else None
        if not site_visible(user, a.site_id):
            continue
        if (state and a.state is not state) or (severity and a.severity is not severity):
            continue
        if (site and a.site_id != site) or (
            district and (where is None or where.district != district)
        ):
            continue
        chosen.append(a)
    chosen.sort(key=lambda a: (a.severity.rank, not a.state.unacknowledged, a.raised_at))
    return [alarm_view(ctx, a, user) for a in chosen]


@router.get("/alarms")
async def alarms(  # noqa: PLR0917 - FastAPI passes query parameters by name
    user: Reader,
    ctx: Ctx,
    state: AlarmState | None = None,
    severity: Severity | None = None,
    site: str | None = None,
    district: str | None = None,
    since: str | None = None,
) -> list[AlarmView]:
    """Open alarms (filtered), most urgent first; with ``since`` (YYYY-MM-DD or ISO time)
    every alarm raised since then, closed ones included (the newest 1000)."""
    return alarm_queue(
        ctx, user, state=state, severity=severity, site=site, district=district,
        since=_since(since),
    )  # fmt: skip


def _since(text: str | None) -> datetime | None:
    try:
        return parse_since(text) if text else None
    except ValueError:
        raise HTTPException(422, f"since {text!r}: not YYYY-MM-DD or an ISO 8601 time") from None


@router.get("/alarms/{alarm_id}", responses={404: {}})
async def alarm(alarm_id: str, user: Reader, ctx: Ctx) -> AlarmView:
    return alarm_view(ctx, visible_alarm(ctx, user, alarm_id), user)


@router.get("/alarms/{alarm_id}/history", responses={404: {}})
async def alarm_history(alarm_id: str, user: Reader, ctx: Ctx) -> list[HistoryView]:
    visible_alarm(ctx, user, alarm_id)
    return [
        HistoryView(
            revision=h.revision,
            transition=h.transition.value,
            state=h.state.value,
            at=h.at,
            by=h.by,
            note=h.note,
        )
        for h in ctx.alarms.history(alarm_id)
    ]


@router.get("/alarms/{alarm_id}/trail", responses={404: {}})
async def alarm_trail(alarm_id: str, user: Reader, ctx: Ctx) -> list[AuditEntryView]:
    """The escalation audit trail: steps, notifications, gas company events, acknowledgements."""
    visible_alarm(ctx, user, alarm_id)
    return [
        AuditEntryView(
            at=e.at,
            kind=e.kind,
            channel=e.channel,
            recipient=e.recipient,
            result=e.result,
            detail=e.detail,
        )
        for e in trail(ctx.store, alarm_id)
    ]


class Note(BaseModel):
    note: Annotated[str | None, Field(max_length=1000)] = None


class Shelve(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    duration_s: Annotated[float, Field(gt=0, le=MAX_SHELVE_S)]


class OutOfService(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    out_of_service: bool = True


Action = Literal["acknowledge", "resolve", "shelve", "unshelve", "out_of_service"]


def answer_alarm(
    ctx: ApiContext,
    user: User,
    alarm_id: str,
    action: Action,
    note: str | None,
    *,
    duration_s: float = 0.0,
    out_of_service: bool = True,
) -> AlarmView:
    """One alarm operation by ``user``, recorded with its result; HTTP errors for refusals."""
    try:
        visible_alarm(ctx, user, alarm_id)
    except HTTPException:
        record_refused(
            ctx, user, action, alarm_id, result="unknown_alarm", reason=_no_alarm(alarm_id)
        )
        raise
    a = ctx.alarms
    if action == "acknowledge":
        result = a.acknowledge(alarm_id, user.name, note)
    elif action == "resolve":
        result = a.resolve(alarm_id, user.name, note)
    elif action == "shelve":
        result = a.shelve(alarm_id, user.name, note or "", duration_s)
    elif action == "unshelve":
        result = a.unshelve(alarm_id, user.name, note)
    else:
        result = a.set_out_of_service(alarm_id, user.name, note or "", out_of_service)
    outcome = result.reason if isinstance(result, Refused) else "ok"
    ctx.users.record_write(
        ctx.clock.now(), user, action, alarm_id, result=outcome, detail=note or ""
    )
    if isinstance(result, Refused):
        raise HTTPException(REFUSAL_STATUS.get(result.reason, 409), result.message)
    return alarm_view(ctx, result, user)


_REFUSALS: Final[dict[int | str, dict[str, Any]]] = {404: {}, 409: {}, 422: {}, 503: {}}


@router.post("/alarms/{alarm_id}/acknowledge", responses=_REFUSALS)
async def acknowledge(alarm_id: str, body: Note, user: Answerer, ctx: Ctx) -> AlarmView:
    """The same operation the gas company's ``cmd/{officer_id}`` acknowledge calls."""
    return answer_alarm(ctx, user, alarm_id, "acknowledge", body.note)


@router.post("/alarms/{alarm_id}/resolve", responses=_REFUSALS)
async def resolve(alarm_id: str, body: Note, user: Answerer, ctx: Ctx) -> AlarmView:
    return answer_alarm(ctx, user, alarm_id, "resolve", body.note)


@router.post("/alarms/{alarm_id}/shelve", responses=_REFUSALS)
async def shelve(alarm_id: str, body: Shelve, user: Suppressor, ctx: Ctx) -> AlarmView:
    return answer_alarm(ctx, user, alarm_id, "shelve", body.reason, duration_s=body.duration_s)


@router.post("/alarms/{alarm_id}/unshelve", responses=_REFUSALS)
async def unshelve(alarm_id: str, body: Note, user: Suppressor, ctx: Ctx) -> AlarmView:
    return answer_alarm(ctx, user, alarm_id, "unshelve", body.note)


@router.post("/alarms/{alarm_id}/out-of-service", responses=_REFUSALS)
async def out_of_service(
    alarm_id: str, body: OutOfService, user: Suppressor, ctx: Ctx
) -> AlarmView:
    return answer_alarm(
        ctx, user, alarm_id, "out_of_service", body.reason, out_of_service=body.out_of_service
    )


@router.get("/events", response_class=StreamingResponse)
async def events(user: Reader, ctx: Ctx, request: Request) -> StreamingResponse:
    """Server-sent events: ``alarm`` (an alarm changed: alarm_id, transition, by) and
    ``valve`` (a valve reported a new state: device_id, state), for what the user may see."""
    return StreamingResponse(alarm_stream(ctx, user, request), media_type="text/event-stream")


async def alarm_stream(ctx: ApiContext, user: User, request: Request) -> AsyncIterator[str]:
    with ctx.broadcaster.listen() as queue:
        yield ": connected\n\n"
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if event is None:
                return  # the gateway is stopping
            if site_visible(user, event.site_id):
                yield f"event: {event.kind}\ndata: {json.dumps(dict(event.data))}\n\n"


# --- registry, audit --------------------------------------------------------------------------


class ImportAnswer(BaseModel):
    generation: int
    counts: dict[str, int]
    warnings: list[str]


@router.post("/registry/import", responses={422: {}, 413: {}})
async def registry_import(
    files: Annotated[list[UploadFile], File(description="sites.csv, components.csv, ...")],
    user: Installer,
    ctx: Ctx,
) -> ImportAnswer:
    """Replace the registry with the uploaded files (the same checks as ``gasgate registry
    import``); nothing changes if any file has an error."""
    with tempfile.TemporaryDirectory(prefix="gasgate-import-") as tmp:
        for upload in files:
            name = Path(upload.filename or "").name
            if not name or name.startswith("."):
                raise HTTPException(422, "every file needs a plain name (sites.csv, ...)")
            data = await upload.read(MAX_UPLOAD + 1)
            if len(data) > MAX_UPLOAD:
                raise HTTPException(413, f"{name}: larger than {MAX_UPLOAD} bytes")
            (Path(tmp) / name).write_bytes(data)
        result = await asyncio.to_thread(import_dir, Path(tmp), ctx.clock.now().date())
    if not result.ok:
        ctx.users.record_write(
            ctx.clock.now(), user, "registry_import", "registry", result="refused"
        )
        raise HTTPException(422, [str(p) for p in result.errors])
    generation = save(ctx.store, result, who=user.name)
    ctx.registry.swap(Registry.load(ctx.store))
    ctx.users.record_write(
        ctx.clock.now(), user, "registry_import", "registry", result="ok",
        detail=f"generation {generation}",
    )  # fmt: skip
    return ImportAnswer(
        generation=generation, counts=result.counts, warnings=[str(p) for p in result.warnings]
    )


@router.get(
    "/audit",
    responses={200: {"content": {"text/csv": {}, "text/html": {}}}, 422: {}},
)
async def audit(
    _user: Auditor,
    ctx: Ctx,
    format: Literal["json", "csv", "html"] = "json",
    district: str | None = None,
    since: str | None = None,
) -> Response:
    """The coverage audit (the same as ``gasgate audit``); ``since``: YYYY-MM-DD or ISO time."""
    start = _since(since)
    # A pass over every site and alarm: in a worker thread, on a connection of its own, so
    # the event loop (and the safety path on it) is not held.
    report = await asyncio.to_thread(
        _audit, ctx.registry, ctx.store.path, ctx.clock.now(), start, district
    )
    media = {"json": "application/json", "csv": "text/csv", "html": "text/html"}[format]
    return Response(report.render(format), media_type=f"{media}; charset=utf-8")


def _audit(
    registry: Registry, path: Path, at: datetime, since: datetime | None, district: str | None
) -> CoverageAudit:
    store = Store(path)
    store.open()
    try:
        return run_audit(registry, store, at, since, district)
    finally:
        store.close()


class WriteView(BaseModel):
    at: datetime
    name: str
    action: str
    target: str
    result: str
    detail: str


@router.get("/writes")
async def writes(_user: Auditor, ctx: Ctx) -> list[WriteView]:
    """The latest writes made through the API and console, newest first."""
    return [WriteView(**dataclasses.asdict(w)) for w in ctx.users.writes()]
