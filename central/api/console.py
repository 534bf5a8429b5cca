"""The control room: server-rendered pages in zh-CN or English (``?lang=``, then a cookie, then
the browser's Accept-Language). The queue shows one row per incident, emergencies and
maintenance in two tabs, patched in place from ``/api/stream``; the incident page shows the
valve, the progress, the alarms, the commands to the gateway and the timeline, with the officer
forms. Forms post with the session's CSRF token and call the API's own step
(:func:`central.api.routes.step`); a refused step is a page in the user's language with the way
back and the note kept.

A page asked for without a session answers 401 with the login form in place.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from psycopg import AsyncConnection

import gateway.api
from central import gas_level, site_map
from central import incidents as inc
from central.api import timeline
from central.api.context import CentralContext, Ctx, current_officer
from central.api.routes import StepRefused, check_login, set_session_cookie, step
from central.api.words import pick_lang, t
from central.grouping import CAUSES
from central.users import Officer
from gateway.api.auth import SESSION_COOKIE, Permission
from gateway.api.i18n import Lang, Speaker, zone_label
from gateway.words import word

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
LANG_COOKIE: Final = "gasgate_lang"
# The gateway console's templates too: its macros say a valve the same way on both consoles.
_env = Environment(
    loader=FileSystemLoader(
        [
            Path(__file__).parent.parent / "templates",
            Path(gateway.api.__file__).parent / "templates",
        ]
    ),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_FORM_ACTIONS: Final[dict[str, inc.Action]] = {
    "acknowledge": "acknowledge",
    "dispatch": "dispatch",
    "on-site": "on_site",
    "resolve": "resolve",
}
_ROWS_MAX: Final = 1000
_MAP_LIST_MAX: Final = 500  # sites listed under the map (the map itself shows them all)
# The pages a login may go on to (a path of this console only: never another site).
_NEXT_PAGES: Final = ("/incidents/", "/console/incidents/", "/console/map")


def _lang(request: Request) -> Lang:
    return pick_lang(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def _page(
    request: Request, ctx: CentralContext, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    lang = _lang(request)
    here = values.pop("here", request.url.path)  # a refused form's page links to its GET
    html = _env.get_template(template).render(
        t=lambda key, **values: _said(t(key, lang), values),
        w=lambda kind, code: word(kind, code, lang), lang=lang, say=Speaker(lang, ctx.zone),
        path=here, csrf=getattr(request.state, "csrf", None),
        stamp=lambda at: _stamp(at, ctx), age=lambda at: _age(at, ctx.now()),
        zone=_zone(ctx, lang), causes=CAUSES, title_of=lambda i: _title(i, lang), **values,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
    return response


def _said(words: str, values: dict[str, object]) -> str:
    """A word with its values in it (the gateway's macros pass them by name)."""
    return words.format(**values) if values else words


def _zone(ctx: CentralContext, lang: Lang) -> str:
    """The zone as people say it ("北京时间"), as the SMS and the alert page say it."""
    return zone_label(ctx.now().astimezone(ctx.zone), lang)


def _stamp(at: datetime | None, ctx: CentralContext) -> str:
    return at.astimezone(ctx.zone).strftime("%Y-%m-%d %H:%M:%S") if at else ""


def _age(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    minutes, secs = divmod(max(0, int((now - at).total_seconds())), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _title(incident: inc.IncidentView, lang: Lang) -> str:
    said = incident.title.get("en" if lang == "en" else "zh") or next(
        iter(incident.title.values()), ""
    )
    if said:
        return said
    return " · ".join(word("alarm_type", a, lang) for a in incident.alarm_types)


async def _viewer(request: Request, ctx: CentralContext) -> Officer | None:
    try:
        return await current_officer(request, ctx)
    except HTTPException:
        return None


def _login_page(
    request: Request, ctx: CentralContext, status: int = 401, error: str | None = None
) -> HTMLResponse:
    return _page(request, ctx, "console_login.html", status=status, error=error, user=None)


# --- logging in and out ---------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, ctx: Ctx) -> HTMLResponse:
    return _login_page(request, ctx, status=200)


@router.post("/login")
async def login(
    request: Request,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next_path: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    try:
        officer = await check_login(ctx, name, password, request)
    except HTTPException as exc:
        key = "login_limited" if exc.status_code == 429 else "login_failed"
        page = _login_page(request, ctx, status=exc.status_code, error=key)
        page.headers.update(exc.headers or {})  # Retry-After on a 429
        return page
    session_id, _ = await ctx.users.open_session(officer, ctx.now())
    # Only a page of this console: never redirect a login to another site.
    target = next_path if next_path.startswith(_NEXT_PAGES) else "/"
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, session_id)
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    await current_officer(request, ctx)  # a logout needs the session's CSRF token too
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await ctx.users.close_session(session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- the queue --------------------------------------------------------------------------------


def _query(request: Request, ids: list[int] | None = None) -> inc.Query:
    params = request.query_params
    state: Literal["open", "all"] = "all" if params.get("state") == "all" or ids else "open"
    return inc.Query(
        state=state,
        district=params.get("district") or None,
        severity=params.get("severity") or None,
        search=(params.get("q") or "")[:100] or None,
        ids=ids,
        limit=_ROWS_MAX,
    )


async def _queue(
    conn: AsyncConnection[Any], officer: Officer, request: Request
) -> tuple[list[inc.IncidentView], list[inc.IncidentView]]:
    """Emergencies and maintenance, each up to the page's limit: a flood of one never pushes
    the other off the page."""
    query = _query(request)
    return (
        await inc.list_incidents(conn, officer, replace(query, category="emergency")),
        await inc.list_incidents(conn, officer, replace(query, category="maintenance")),
    )


@router.get("/")
async def queue_page(request: Request, ctx: Ctx) -> HTMLResponse:
    officer = await _viewer(request, ctx)
    if officer is None:
        return _login_page(request, ctx)
    async with ctx.pool.connection() as conn:
        emergencies, maintenance = await _queue(conn, officer, request)
        cur = await conn.execute(
            "SELECT district FROM sites UNION SELECT district FROM incidents"
            " WHERE state <> 'closed' ORDER BY 1"
        )
        districts = [r[0] for r in await cur.fetchall() if officer.sees(r[0])]
    return _page(
        request, ctx, "console_queue.html", user=officer, districts=districts,
        emergencies=emergencies, maintenance=maintenance, limit=_ROWS_MAX,
        params=request.query_params, tab=request.query_params.get("tab", "emergency"),
    )  # fmt: skip


@router.get("/console/rows")
async def queue_rows(request: Request, ctx: Ctx) -> HTMLResponse:
    """Queue rows for the live patch: the incidents named in ``ids`` (closed ones too, so the
    page drops them), or every row of the page's filters without ``ids``."""
    officer = await _viewer(request, ctx)
    if officer is None:
        return HTMLResponse("", status_code=401)
    raw = request.query_params.get("ids")
    async with ctx.pool.connection() as conn:
        if raw:
            ids = [int(i) for i in raw.split(",") if i.isdigit()][:_ROWS_MAX]
            found = await inc.list_incidents(conn, officer, _query(request, ids))
        else:
            emergencies, maintenance = await _queue(conn, officer, request)
            found = emergencies + maintenance
    return _page(request, ctx, "console_rows.html", user=officer, incidents=found)


# --- one incident ---------------------------------------------------------------------------


async def _incident(
    request: Request, ctx: CentralContext, officer: Officer, incident_id: int, *,
    template: str = "console_incident.html", status: int = 200, whole: bool = False,
    **values: Any,
) -> HTMLResponse:  # fmt: skip
    async with ctx.pool.connection() as conn:
        found = await inc.detail(conn, officer, incident_id)
        gas = await _gas(conn, found, ctx, _lang(request)) if found else None
    if found is None:
        return _page(request, ctx, "console_missing.html", status=404, user=officer)
    values.setdefault("here", f"/incidents/{incident_id}")  # a refused form's page: its GET
    return _page(
        request, ctx, template, status=status, user=officer, i=found, gas=gas,
        thresholds=gas_level.THRESHOLDS, can_answer=officer.may(Permission.ANSWER),
        waits=_resolve_waits(found, _lang(request)), refs=_refs(found),
        timeline_rows=found.timeline if whole else timeline.rows(found.timeline), **values,
    )  # fmt: skip


def _refs(found: inc.IncidentDetail) -> dict[str, tuple[int, str]]:
    """Each alarm's number in the incident (oldest first) and type: a command says "Gas leak
    (high level) #2", not a 40-character alarm id."""
    return {a.alarm_id: (n, a.alarm_type) for n, a in enumerate(found.alarm_details, 1)}


def _resolve_waits(found: inc.IncidentDetail, lang: Lang) -> str:
    """Why the resolve form has no button yet (an alarm still active), or "": the same words
    as the refusal a resolve would get. A resolve taken again reaches only cleared alarms."""
    if not found.still_active or "resolve" in found.again:
        return ""
    return inc.still_active_words(found.still_active, "en" if lang == "en" else "zh")


async def _gas(
    conn: AsyncConnection[Any], found: inc.IncidentDetail, ctx: CentralContext, lang: Lang
) -> Markup | None:
    """The gas level plot (inline SVG); an empty one when a gas incident has no reading yet;
    None for an incident that is not about gas."""
    points = await gas_level.readings(conn, found.incident_id)
    if not points:
        return Markup("") if gas_level.GAS_TYPES.intersection(found.alarm_types) else None
    words = gas_level.PlotWords(
        title=t("gas_level", lang), low=t("gas_low_line", lang), high=t("gas_high_line", lang),
        reading=t("gas_point", lang),
    )  # fmt: skip
    end = found.closed_at or found.resolved_at or ctx.now()
    svg = gas_level.level_plot(
        points, start=found.raised_at or found.opened_at, end=end, zone=ctx.zone, words=words
    )
    return Markup(svg)  # noqa: S704 - every label is escaped in gas_level


@router.get("/incidents/{incident_id}")
async def incident_page(incident_id: int, request: Request, ctx: Ctx) -> HTMLResponse:
    officer = await _viewer(request, ctx)
    if officer is None:
        return _login_page(request, ctx)
    return await _incident(request, ctx, officer, incident_id)


@router.get("/incidents/{incident_id}/live")
async def incident_live(incident_id: int, request: Request, ctx: Ctx) -> HTMLResponse:
    """The parts of the incident page that change (no form in them: typing is never lost)."""
    officer = await _viewer(request, ctx)
    if officer is None:
        return HTMLResponse("", status_code=401)
    return await _incident(
        request, ctx, officer, incident_id, template="console_incident_live.html"
    )


@router.get("/console/incidents/{incident_id}/record")
async def incident_record(incident_id: int, request: Request, ctx: Ctx) -> HTMLResponse:
    """The incident on one printable A4 record: the site, the valve, who did what when, the
    cause, the gas level and the whole timeline, in the center's local time."""
    officer = await _viewer(request, ctx)
    if officer is None:
        return _login_page(request, ctx)
    return await _incident(
        request,
        ctx,
        officer,
        incident_id,
        template="console_record.html",
        whole=True,
        now=ctx.now(),
        here=request.url.path,
    )


@router.post("/incidents/{incident_id}/{action}")
async def act(  # noqa: PLR0917 - FastAPI passes form fields by name
    incident_id: int,
    action: str,
    request: Request,
    ctx: Ctx,
    note: Annotated[str, Form(max_length=1000)] = "",
    crew: Annotated[str, Form(max_length=200)] = "",
    eta_minutes: Annotated[str, Form(max_length=8)] = "",
    cause: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    officer = await current_officer(request, ctx)  # 401 without a session, 403 on bad CSRF
    chosen = _FORM_ACTIONS.get(action)
    if chosen is None:
        raise HTTPException(404, f"no action {action!r}")
    if not officer.may(Permission.ANSWER):
        raise HTTPException(403, f"role {officer.role} may not {Permission.ANSWER.value}")
    kept = {"note": note, "crew": crew, "eta_minutes": eta_minutes, "cause": cause, "form": action}
    try:
        change = _step(chosen, note, crew, eta_minutes, cause, ctx.now())
        await step(ctx, officer, incident_id, change)
    except StepRefused as refused:
        error = refused.conflict.message(_lang(request), ctx.zone)
        return await _incident(
            request, ctx, officer, incident_id, status=409, error=error, kept=kept
        )
    except _FormError as exc:
        error = t(str(exc), _lang(request))
        return await _incident(
            request, ctx, officer, incident_id, status=422, error=error, kept=kept
        )
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)


class _FormError(ValueError):
    """A form field the step needs is missing or wrong: ``str()`` is the word's key."""


def _step(  # noqa: PLR0917 - the form's fields
    action: inc.Action, note: str, crew: str, eta_minutes: str, cause: str, now: datetime
) -> inc.Step:
    eta = None
    if action == "dispatch":
        if not crew.strip():
            raise _FormError("need_crew")
        if eta_minutes.strip():
            minutes = int(eta_minutes) if eta_minutes.strip().isdigit() else -1
            if not 0 <= minutes <= 24 * 60:
                raise _FormError("bad_eta")
            eta = now + timedelta(minutes=minutes)
    if action == "resolve" and cause not in CAUSES:
        raise _FormError("need_cause")
    return inc.Step(
        action, note=note.strip() or None, crew=crew.strip() or None, eta=eta,
        cause=cause if action == "resolve" else None,
    )  # fmt: skip


# --- the map --------------------------------------------------------------------------------


@router.get("/console/map")
async def map_page(request: Request, ctx: Ctx) -> HTMLResponse:
    """The sites with coordinates as markers in the colour of their state, clustered (an
    emergency never: it stands alone), on a blank background unless a tile server is set."""
    officer = await _viewer(request, ctx)
    if officer is None:
        return _login_page(request, ctx)
    async with ctx.pool.connection() as conn:
        placed, unplaced = await site_map.sites(conn, officer)
    lang = _lang(request)
    tiles = ctx.settings.map_tile_url
    rank = {state: k for k, state in enumerate(site_map.STATES)}
    listed = sorted((s for s in placed if s.state != "none"), key=lambda s: rank[s.state])
    data = {  # read by map.js; compact rows: a city has tens of thousands of sites
        "sites": [
            [s.lat, s.lon, rank[s.state], s.incident_id, s.name or s.site_id, s.address]
            for s in placed
        ],
        "districts": _centres(placed),
        "states": [t(f"map_state_{state}", lang) for state in site_map.STATES],
        "open": t("map_open_incident", lang),
        "zoom": [t("map_zoom_in", lang), t("map_zoom_out", lang)],
        "tiles": tiles,
    }
    counts = Counter(s.state for s in placed)
    page = _page(
        request, ctx, "console_map.html", user=officer, data=data, states=site_map.STATES,
        counts=counts, listed=listed[:_MAP_LIST_MAX], more=len(listed) > _MAP_LIST_MAX,
        unplaced=unplaced, tiles=bool(tiles),
    )  # fmt: skip
    page.headers["Content-Security-Policy"] = _map_policy(tiles)
    return page


def _centres(placed: list[site_map.MapSite]) -> list[tuple[str, float, float]]:
    """Each district's name at the middle of its sites: the blank map's only geography."""
    points: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in placed:
        if s.district:
            points[s.district].append((s.lat, s.lon))
    return [
        (name, sum(p[0] for p in ps) / len(ps), sum(p[1] for p in ps) / len(ps))
        for name, ps in sorted(points.items())
    ]


def _map_policy(tiles: str) -> str:
    """The app's policy, with the tile server's images allowed when one is set."""
    source = ""
    if tiles:
        parts = urlsplit(tiles)
        source = f" {parts.scheme}://{parts.netloc.replace('{s}', '*')}"
    return (
        f"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:{source}; "
        "frame-ancestors 'none'"
    )
