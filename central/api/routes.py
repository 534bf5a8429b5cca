"""The JSON API under ``/api`` (docs/central.md): incidents and the officer steps on them,
gateways, sites, the live stream and the audit. Every route names the permission it needs; a
user limited to some districts gets the same 404 for another district's incident as for one that
does not exist.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from central import incidents as inc
from central.api.context import CentralContext, Ctx, CurrentOfficer, need
from central.audit import audit_report
from central.audit_render import AuditFormat, render
from central.grouping import CAUSES
from central.notify import Change, Subscription
from central.users import Officer
from gateway.api.auth import SESSION_COOKIE, SESSION_S, Permission

__all__ = [
    "GatewayView",
    "SiteView",
    "StepRefused",
    "check_login",
    "gateways",
    "router",
    "set_session_cookie",
    "step",
    "visible_sites",
]

router = APIRouter(prefix="/api")
Reader = Annotated[Officer, Depends(need(Permission.READ))]
Answerer = Annotated[Officer, Depends(need(Permission.ANSWER))]
Auditor = Annotated[Officer, Depends(need(Permission.READ_AUDIT))]
HEARTBEAT_S: Final = 15.0
_MAX_IDS: Final = 500  # incidents re-read per live update at most (a storm: the page re-reads)


# --- who am I, logging in ---------------------------------------------------------------------


class Me(BaseModel):
    name: str
    role: str
    districts: list[str] | None


class Login(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class LoginAnswer(Me):
    csrf: str


def _me(officer: Officer) -> Me:
    districts = list(officer.districts) if officer.districts is not None else None
    return Me(name=officer.name, role=officer.role.value, districts=districts)


@router.get("/me")
async def me(officer: CurrentOfficer) -> Me:
    return _me(officer)


@router.post("/login", responses={401: {}, 429: {}})
async def login(body: Login, request: Request, response: Response, ctx: Ctx) -> LoginAnswer:
    """Open a console session: sets the session cookie, returns the CSRF token every write
    made with the cookie must send as ``X-CSRF-Token``."""
    officer = await check_login(ctx, body.name, body.password, request)
    session_id, csrf = await ctx.users.open_session(officer, ctx.now())
    set_session_cookie(response, session_id)
    return LoginAnswer(**_me(officer).model_dump(), csrf=csrf)


async def check_login(ctx: CentralContext, name: str, password: str, request: Request) -> Officer:
    """The user, or 429 while rate limited, or 401. Limited per name and per address (the
    limit is this instance's: a guesser spread over instances meets each one's)."""
    client = request.client.host if request.client else "?"
    keys = ctx.limiter.keys(name, client)
    now = ctx.monotonic()
    wait_s = ctx.limiter.retry_after(keys, now)
    if wait_s:
        raise HTTPException(
            429, "too many failed logins; wait a few minutes", {"Retry-After": str(wait_s)}
        )
    officer = await ctx.users.check_password(name, password)
    if officer is None:
        ctx.limiter.failed(keys, now)
        raise HTTPException(401, "wrong name or password")
    ctx.limiter.succeeded(keys)
    return officer


def set_session_cookie(response: Response, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(SESSION_S), httponly=True, samesite="strict"
    )


# --- incidents --------------------------------------------------------------------------------


@router.get("/incidents")
async def incidents(  # noqa: PLR0917 - FastAPI passes query parameters by name
    officer: Reader,
    ctx: Ctx,
    state: Literal["open", "all"] = "open",
    district: str | None = None,
    category: Literal["emergency", "maintenance"] | None = None,
    severity: str | None = None,
    q: Annotated[
        str | None, Query(max_length=100, description="site, address, phone, device")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[inc.IncidentView]:
    """Open incidents, most severe first then oldest first; ``state=all``: newest first."""
    query = inc.Query(state, district, category, severity, q or None, limit=limit)
    async with ctx.pool.connection() as conn:
        return await inc.list_incidents(conn, officer, query)


@router.get("/incidents/{incident_id}", responses={404: {}})
async def incident(incident_id: int, officer: Reader, ctx: Ctx) -> inc.IncidentDetail:
    """One incident with its timeline, its commands to the gateway (pending, sent, accepted or
    refused), its alarms and its site (or every site of a gateway gone offline)."""
    async with ctx.pool.connection() as conn:
        found = await inc.detail(conn, officer, incident_id)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found


class Note(BaseModel):
    note: Annotated[str | None, Field(max_length=1000)] = None


class Dispatch(Note):
    crew: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
        Field(description="the crew or technician sent"),
    ]
    eta: datetime | None = Field(None, description="expected arrival (ISO 8601 with zone)")
    eta_minutes: Annotated[int | None, Field(ge=0, le=24 * 60)] = None


def _known_cause(value: str) -> str:
    if value not in CAUSES:
        raise ValueError(f"one of {', '.join(CAUSES)}")
    return value


class Resolve(Note):
    cause: Annotated[
        str, AfterValidator(_known_cause), Field(json_schema_extra={"enum": list(CAUSES)})
    ]


_STEP_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {404: {}, 409: {}, 422: {}}


async def step(
    ctx: CentralContext, officer: Officer, incident_id: int, change: inc.Step
) -> inc.IncidentDetail:
    """Apply one officer step and answer the incident as it now is; 404, or 409 with the
    reason (``reason``, ``state``, ``by``, ``at``, and the words in both languages)."""
    try:
        await inc.transition(ctx.pool, officer, incident_id, change, ctx.now())
    except inc.NotFound:
        ctx.steps.labels(change.action, "not_found").inc()
        raise HTTPException(404, f"no incident {incident_id}") from None
    except inc.Conflict as conflict:
        ctx.steps.labels(change.action, conflict.reason).inc()
        raise StepRefused(conflict, ctx) from None
    ctx.steps.labels(change.action, "ok").inc()
    async with ctx.pool.connection() as conn:
        found = await inc.detail(conn, officer, incident_id)
    assert found is not None  # it was just changed, by someone who may see it
    return found


class StepRefused(Exception):
    """A 409 with the conflict's facts (rendered by the app's handler)."""

    def __init__(self, conflict: inc.Conflict, ctx: CentralContext) -> None:
        super().__init__(conflict.message("en", ctx.zone))
        self.conflict = conflict
        self.zone = ctx.zone

    def response(self) -> JSONResponse:
        c = self.conflict
        return JSONResponse(
            {
                "detail": c.message("en", self.zone),
                "reason": c.reason,
                "state": c.state,
                "by": c.by,
                "at": c.at.isoformat() if c.at else None,
                "words": {lang: c.message(lang, self.zone) for lang in ("zh-CN", "en")},
            },
            status_code=409,
        )


def _eta(body: Dispatch, now: datetime) -> datetime | None:
    if body.eta is not None:
        if body.eta.tzinfo is None:
            raise HTTPException(422, "eta needs its time zone (e.g. +08:00 or Z)")
        return body.eta
    return now + timedelta(minutes=body.eta_minutes) if body.eta_minutes is not None else None


@router.post("/incidents/{incident_id}/acknowledge", responses=_STEP_RESPONSES)
async def acknowledge(
    incident_id: int, body: Note, officer: Answerer, ctx: Ctx
) -> inc.IncidentDetail:
    """Acknowledge the incident: its unacknowledged alarms are acknowledged at the gateway by
    this user (``cmd/{user}``), delivered when the gateway is reachable."""
    return await step(ctx, officer, incident_id, inc.Step("acknowledge", note=body.note))


@router.post("/incidents/{incident_id}/dispatch", responses=_STEP_RESPONSES)
async def dispatch(
    incident_id: int, body: Dispatch, officer: Answerer, ctx: Ctx
) -> inc.IncidentDetail:
    """A crew or technician is on the way (``eta`` or ``eta_minutes`` from now)."""
    change = inc.Step("dispatch", note=body.note, crew=body.crew, eta=_eta(body, ctx.now()))
    return await step(ctx, officer, incident_id, change)


@router.post("/incidents/{incident_id}/on-site", responses=_STEP_RESPONSES)
async def on_site(incident_id: int, body: Note, officer: Answerer, ctx: Ctx) -> inc.IncidentDetail:
    return await step(ctx, officer, incident_id, inc.Step("on_site", note=body.note))


@router.post("/incidents/{incident_id}/resolve", responses=_STEP_RESPONSES)
async def resolve(
    incident_id: int, body: Resolve, officer: Answerer, ctx: Ctx
) -> inc.IncidentDetail:
    """Resolved with a cause: the alarms that cleared are resolved at the gateway; the incident
    closes once every alarm under it is closed at the gateway."""
    change = inc.Step("resolve", note=body.note, cause=body.cause)
    return await step(ctx, officer, incident_id, change)


# --- gateways, sites --------------------------------------------------------------------------


class GatewayView(BaseModel):
    gateway_id: str
    online: bool | None  # its retained availability; None: never said
    silent: bool  # nothing heard for silent_after_s
    sites: int
    districts: list[str]
    last_seen: datetime
    last_event_at: datetime | None
    availability_at: datetime | None
    first_seen: datetime


async def gateways(
    ctx: CentralContext, officer: Officer, ids: list[str] | None = None
) -> list[GatewayView]:
    """Every gateway heard of (a district-limited user: those with a site in their
    districts), offline and silent ones first."""
    silent_before = ctx.now() - timedelta(seconds=ctx.settings.silent_after_s)
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT g.gateway_id, g.online, g.last_seen < %s, count(s.site_id),"
            " coalesce(array_agg(DISTINCT s.district) FILTER (WHERE s.site_id IS NOT NULL), '{}'),"
            " g.last_seen, g.last_event_at, g.availability_at, g.first_seen"
            " FROM gateways g LEFT JOIN sites s USING (gateway_id)"
            " WHERE (%s::text[] IS NULL OR g.gateway_id = ANY(%s::text[]))"
            " GROUP BY g.gateway_id"
            " HAVING %s::text[] IS NULL OR array_agg(s.district) && %s::text[]"
            " ORDER BY g.online IS NOT FALSE, g.last_seen >= %s, g.gateway_id",
            (silent_before, ids, ids, _limit(officer), _limit(officer), silent_before),
        )
        rows = await cur.fetchall()
    fields = GatewayView.model_fields
    return [GatewayView(**dict(zip(fields, r, strict=True))) for r in rows]


def _limit(officer: Officer) -> list[str] | None:
    return list(officer.districts) if officer.districts is not None else None


@router.get("/gateways")
async def list_gateways(officer: Reader, ctx: Ctx) -> list[GatewayView]:
    return await gateways(ctx, officer)


class SiteView(BaseModel):
    gateway_id: str
    site_id: str
    name: str
    address: str
    district: str
    site_type: str
    lat: float | None
    lon: float | None
    protected: bool | None  # the gateway's verdict; None: not said
    # protected / unprotected / unknown (gateway offline or silent, or no verdict): a site
    # nobody can hear is never counted as protected.
    status: Literal["protected", "unprotected", "unknown"]
    summary_at: datetime
    received_at: datetime
    open_incidents: int


async def visible_sites(
    ctx: CentralContext, officer: Officer, district: str | None, limit: int
) -> list[SiteView]:
    if officer.districts is not None and district is not None and not officer.sees(district):
        return []
    silent_before = ctx.now() - timedelta(seconds=ctx.settings.silent_after_s)
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(_SITES_SQL, {
            "silent_before": silent_before, "district": district, "limit": limit,
            "districts": _limit(officer),
        })  # fmt: skip
        rows = await cur.fetchall()
    fields = SiteView.model_fields
    return [SiteView(**dict(zip(fields, r, strict=True))) for r in rows]


_SITES_SQL: Final = """
SELECT s.gateway_id, s.site_id, s.name, s.address, s.district, s.site_type, s.lat, s.lon, v.verdict,
       CASE WHEN g.online IS FALSE OR g.last_seen < %(silent_before)s OR v.verdict IS NULL
            THEN 'unknown' WHEN v.verdict THEN 'protected' ELSE 'unprotected' END,
       s.summary_at, s.received_at,
       (SELECT count(*) FROM incidents i WHERE i.gateway_id = s.gateway_id
          AND i.site_id = s.site_id AND i.state <> 'closed')
FROM sites s JOIN gateways g USING (gateway_id)
CROSS JOIN LATERAL (
    SELECT coalesce(s.protected, CASE WHEN jsonb_typeof(s.summary -> 'protected') = 'boolean'
                                      THEN (s.summary -> 'protected')::boolean END) AS verdict
) v
WHERE (%(district)s::text IS NULL OR s.district = %(district)s::text)
  AND (%(districts)s::text[] IS NULL OR s.district = ANY(%(districts)s::text[]))
ORDER BY s.district, s.gateway_id, s.site_id
LIMIT %(limit)s
"""


@router.get("/sites")
async def sites(
    officer: Reader,
    ctx: Ctx,
    district: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200_000)] = 10_000,
) -> list[SiteView]:
    """Sites from the gateways' latest summaries, with their protection status."""
    return await visible_sites(ctx, officer, district, limit)


# --- the live stream --------------------------------------------------------------------------


@router.get("/stream", response_class=StreamingResponse)
async def stream(officer: Reader, ctx: Ctx) -> StreamingResponse:
    """Server-sent events: ``data: {"incidents": [...]}`` and ``data: {"gateways": [...]}``
    with what changed, as ``GET /api/incidents`` and ``/api/gateways`` show it, from whichever
    instance changed it. ``event: resync``: changes may have been missed, re-read
    everything; ``event: dropped``: this reader fell behind and the stream ends (reconnect)."""
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _changes(ctx, officer), media_type="text/event-stream", headers=headers
    )


async def _changes(ctx: CentralContext, officer: Officer) -> AsyncIterator[str]:
    with ctx.hub.subscribe() as sub:
        yield "retry: 2000\n: connected\n\n"
        live = _Live(ctx, officer, sub)
        try:
            while True:
                async for chunk in live.next():
                    yield chunk
                if live.ended:
                    return
        finally:
            await live.close()


class _Live:
    """One stream's reads. Incidents are read as their change comes; gateways in a task of
    their own, the ids of the changes that came meanwhile gathered into its next read: an alarm
    never waits behind a storm's gateway refresh (a join over 50,000 sites, seconds under
    load), and a storm costs one such read at a time per console."""

    def __init__(self, ctx: CentralContext, officer: Officer, sub: Subscription) -> None:
        self._ctx, self._officer, self._sub = ctx, officer, sub
        self._change: asyncio.Task[Change] | None = None
        self._gateways: asyncio.Task[list[GatewayView]] | None = None
        self._due: dict[str, None] = {}  # gateway ids changed since the last read began
        self.ended = False

    async def next(self) -> AsyncIterator[str]:
        """What to send after the next change or gateway read (a heartbeat after none)."""
        self._change = self._change or asyncio.create_task(self._sub.next())
        waits = {self._change} | ({self._gateways} if self._gateways else set())
        done, _ = await asyncio.wait(waits, timeout=HEARTBEAT_S, return_when="FIRST_COMPLETED")
        if not done:
            yield ": heartbeat\n\n"
        if self._gateways in done:
            seen, self._gateways = self._gateways.result(), None
            if seen:
                yield _data({"gateways": [g.model_dump() for g in seen]})
        if self._change in done:
            change, self._change = self._change.result(), None
            async for chunk in self._incidents(change):
                yield chunk
        if self._due and self._gateways is None and not self.ended:
            ids, self._due = list(self._due)[:_MAX_IDS], {}
            self._gateways = asyncio.create_task(gateways(self._ctx, self._officer, ids))

    async def _incidents(self, change: Change) -> AsyncIterator[str]:
        if change.dropped:
            self.ended = True
            yield 'event: dropped\ndata: {"reason": "too far behind"}\n\n'
            return
        if change.resync:
            yield "event: resync\ndata: {}\n\n"
        found = await _changed_incidents(self._ctx, self._officer, change)
        if found:
            yield _data({"incidents": [i.model_dump() for i in found]})
        self._due.update(dict.fromkeys(change.gateways))

    async def close(self) -> None:
        tasks = [t for t in (self._change, self._gateways) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, default=_iso)}\n\n"


async def _changed_incidents(
    ctx: CentralContext, officer: Officer, change: Change
) -> list[inc.IncidentView]:
    ids = list(change.incidents)
    async with ctx.pool.connection() as conn:
        if change.commands:  # a reply changes its incident's page
            cur = await conn.execute(
                "SELECT DISTINCT incident_id FROM commands WHERE cmd_id = ANY(%s)"
                " AND incident_id IS NOT NULL",
                (list(change.commands),),
            )
            ids.extend(r[0] for r in await cur.fetchall())
        ids = list(dict.fromkeys(ids))[:_MAX_IDS]
        if not ids:
            return []
        query = inc.Query(state="all", ids=ids, limit=len(ids))
        return await inc.list_incidents(conn, officer, query)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- the audit --------------------------------------------------------------------------------


@router.get("/audit", responses={200: {"content": {"text/csv": {}, "text/html": {}}}, 403: {}})
async def audit(  # noqa: PLR0917 - FastAPI passes query parameters by name
    officer: Auditor,
    ctx: Ctx,
    format: AuditFormat = "json",
    district: str | None = None,
    since: date | None = None,
    lang: Literal["zh", "zh-CN", "en"] = "zh-CN",
) -> Response:
    """The coverage and response audit (as ``gasgate central audit``): ``since`` YYYY-MM-DD
    (local day). A user limited to some districts names one of them (or has only one)."""
    if officer.districts is not None:
        if district is None and len(officer.districts) == 1:
            district = officer.districts[0]
        if district is None or not officer.sees(district):
            raise HTTPException(403, f"name one of your districts: {', '.join(officer.districts)}")
    report = await audit_report(
        ctx.pool, district=district, since=since, now=ctx.now(), tz=ctx.zone,
        silent_after_s=ctx.settings.silent_after_s,
    )  # fmt: skip
    rendered = render(report, format, lang)
    headers = {}
    if format != "json":  # a spreadsheet is saved, a report is read in the browser first
        how = "attachment" if format == "csv" else "inline"
        headers["Content-Disposition"] = f'{how}; filename="{rendered.filename}"'
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)
