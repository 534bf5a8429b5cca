"""The console: server-rendered pages (incident queue, site, fleet) in zh-CN or English, live
through the ``/api/events`` stream. Forms post with the session's CSRF token; the alarm
operations are the API's (:func:`gateway.api.routes.answer_alarm`), recorded the same way.

A page asked for without a session answers 401 with the login form, so the browser shows it
in place and the login returns there. A refused write answers with a page in the user's
language saying why, with the way back and the typed note kept: never raw JSON.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.api.auth import SESSION_COOKIE, Permission, allowed
from gateway.api.context import ApiContext, context, current_user, forbidden, site_visible
from gateway.api.i18n import LANGS, Lang, Speaker
from gateway.api.incidents import Filters, group, select
from gateway.api.routes import Action, alarm_queue, answer_alarm, check_login, set_session_cookie
from gateway.api.views import DeviceView, device_view, site_detail
from gateway.model import AlarmState
from gateway.users import User
from gateway.words import catalogue

__all__ = ["LOW_BATTERY_MV", "router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]
LANG_COOKIE: Final = "gasgate_lang"
LOW_BATTERY_MV: Final = 2600  # below this a battery device is listed as low on the fleet page
# The fleet lists the devices that need a look first: offline, then not heard since the start.
_FLEET_ORDER: Final = {"offline": 0, "not_heard_yet": 1, "unknown": 2, "online": 3}
_ACTIONS: Final[dict[str, Action]] = {
    "acknowledge": "acknowledge",
    "resolve": "resolve",
    "shelve": "shelve",
}
_FILTERS: Final = ("district", "severity", "type", "state", "q")
_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _lang(request: Request) -> Lang:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return next((lang for lang in LANGS if lang == asked), "zh-CN")


def _page(
    request: Request, ctx: ApiContext, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    lang = _lang(request)
    say = Speaker.of(lang, ctx.timezone)
    html = _env.get_template(template).render(
        say=say, t=say.t, w=say.w, lang=lang, path=request.url.path, now=ctx.clock.now(),
        **values,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
    return response


async def _viewer(request: Request, ctx: ApiContext) -> User | None:
    try:
        return await current_user(request, ctx)
    except HTTPException:
        return None


def _login_page(
    request: Request, ctx: ApiContext, status: int = 401, error: str | None = None
) -> HTMLResponse:
    return _page(request, ctx, "login.html", status=status, error=error, user=None, csrf=None)


def _csrf(request: Request, ctx: ApiContext) -> str | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    session = ctx.sessions.get(session_id, ctx.clock.monotonic()) if session_id else None
    return session.csrf if session else None


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/alarms", status_code=303)


@router.get("/login")
async def login_form(request: Request, ctx: Ctx) -> HTMLResponse:
    return _login_page(request, ctx, status=200)


@router.post("/login")
async def login(
    request: Request,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next_path: Annotated[str, Form(alias="next")] = "/console/alarms",
) -> Response:
    try:
        user = await check_login(ctx, name, password, request)
    except HTTPException as exc:
        key = "login_limited" if exc.status_code == 429 else "login_failed"
        page = _login_page(request, ctx, status=exc.status_code, error=key)
        page.headers.update(exc.headers or {})  # Retry-After on a 429
        return page
    session_id, _ = ctx.sessions.open(user, ctx.clock.monotonic())
    # Only a path on this console: never redirect a login to another site.
    target = next_path if next_path.startswith("/console/") else "/console/alarms"
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, session_id)
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    await current_user(request, ctx)  # a logout needs the session's CSRF token too
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        ctx.sessions.close(session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/console/alarms")
async def alarms_page(request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return _login_page(request, ctx)
    values = _queue_values(request, ctx, user)
    return _page(request, ctx, "alarms.html", user=user, csrf=_csrf(request, ctx), **values)


@router.get("/console/alarms/queue")
async def alarms_fragment(request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return HTMLResponse("", status_code=401)
    values = _queue_values(request, ctx, user)
    return _page(request, ctx, "queue.html", user=user, csrf=_csrf(request, ctx), **values)


def _filters(request: Request) -> Filters:
    q = request.query_params
    return Filters(
        tab="maintenance" if q.get("tab") == "maintenance" else "emergency",
        district=q.get("district", ""),
        severity=q.get("severity", ""),
        alarm_type=q.get("type", ""),
        state=q.get("state", ""),
        search=q.get("q", "")[:100],
    )


def _queue_values(request: Request, ctx: ApiContext, user: User) -> dict[str, Any]:
    filters = _filters(request)
    incidents = group(alarm_queue(ctx, user))
    kept = [i for i in incidents if filters.keeps(i)]
    counts = Counter(i.category for i in kept)
    asked = {k: v for k in _FILTERS if (v := request.query_params.get(k))}
    return {
        "incidents": select(incidents, filters),
        "filters": filters,
        "asked": asked,
        "counts": counts,
        "waiting": sum(1 for i in incidents if i.category == "emergency" and i.unacknowledged),
        "districts": sorted({i.first.district for i in incidents if i.first.district}),
        "types": sorted({t for i in incidents for t in i.types}),
        "severities": catalogue("severity"),
        "states": [s.value for s in AlarmState if s is not AlarmState.NORMAL],
        "can_answer": allowed(user, Permission.ANSWER),
        "can_suppress": allowed(user, Permission.SUPPRESS),
    }


@router.post("/console/incidents/acknowledge")
async def acknowledge_incident(
    request: Request,
    ctx: Ctx,
    note: Annotated[str, Form(max_length=1000)] = "",
    alarm: Annotated[list[str] | None, Form(max_length=100)] = None,
) -> Response:
    """Acknowledge every unacknowledged alarm of an incident with one note."""
    alarm = alarm or []
    user = await _writer(request, ctx, Permission.ANSWER, ("acknowledge", ",".join(alarm)))
    if not isinstance(user, User):
        return _error_page(request, ctx, user, note, "acknowledge", alarm)
    done, first_refusal = 0, None
    for alarm_id in alarm:
        try:
            answer_alarm(ctx, user, alarm_id, "acknowledge", note.strip() or None)
            done += 1
        except HTTPException as exc:
            first_refusal = first_refusal or (
                exc.status_code,
                _reason(ctx, alarm_id, exc, _lang(request)),
            )
    if done == 0 and first_refusal is not None:
        return _error_page(request, ctx, first_refusal, note, "acknowledge", alarm)
    return RedirectResponse(_back(request), status_code=303)


@router.post("/console/alarms/{alarm_id}/{action}")
async def act(  # noqa: PLR0917 - FastAPI passes form fields by name
    alarm_id: str,
    action: str,
    request: Request,
    ctx: Ctx,
    note: Annotated[str, Form(max_length=1000)] = "",
    minutes: Annotated[int, Form(ge=1, le=24 * 60)] = 60,
) -> Response:
    chosen = _ACTIONS.get(action)
    needed = Permission.SUPPRESS if chosen == "shelve" else Permission.ANSWER
    user = await _writer(request, ctx, needed, (chosen or action, alarm_id))
    if chosen is None and isinstance(user, User):
        user = (404, ("err_no_action", {}))
    if not isinstance(user, User) or chosen is None:
        refusal = user if not isinstance(user, User) else (404, ("err_no_action", {}))
        return _error_page(request, ctx, refusal, note, action, [alarm_id])
    try:
        answer_alarm(ctx, user, alarm_id, chosen, note.strip() or None, duration_s=minutes * 60.0)
    except HTTPException as exc:
        reason = (exc.status_code, _reason(ctx, alarm_id, exc, _lang(request)))
        return _error_page(request, ctx, reason, note, chosen, [alarm_id])
    return RedirectResponse(_back(request), status_code=303)


def _back(request: Request) -> str:
    """The queue as the officer had it (its tab and filters), from the form's own page."""
    came = urlsplit(request.headers.get("referer", ""))
    same = came.netloc == request.url.netloc and came.path == "/console/alarms"
    return f"/console/alarms?{came.query}" if same and came.query else "/console/alarms"


_Reason = tuple[str, dict[str, str]]  # a word's key and its values


async def _writer(
    request: Request, ctx: ApiContext, needed: Permission, write: tuple[str, str]
) -> User | tuple[int, _Reason]:
    """The user allowed to write, or why not (a stale page's CSRF token, the role)."""
    try:
        user = await current_user(request, ctx)
    except HTTPException as exc:
        if exc.status_code == 401:
            raise  # no session: nothing of the console
        return exc.status_code, ("err_csrf", {})
    if not allowed(user, needed):
        forbidden(ctx, user, needed, write)  # recorded
        return 403, ("err_forbidden", {})
    return user


def _reason(ctx: ApiContext, alarm_id: str, exc: HTTPException, lang: Lang) -> _Reason:
    """Why the alarms room refused, in words a person can act on."""
    alarm = ctx.alarms.get(alarm_id)
    detail = str(exc.detail)
    if alarm is None:
        return "err_unknown_alarm", {}
    if alarm.state is AlarmState.NORMAL:
        by = alarm.closed_by or alarm.acked_by or "-"
        return "err_closed", {"by": by, "at": _at(ctx, alarm.closed_at, lang)}
    if "already acknowledged" in detail:
        return "err_already_acked", {
            "by": alarm.acked_by or "-",
            "at": _at(ctx, alarm.acked_at, lang),
        }
    if "still active" in detail:
        return "err_still_active", {}
    if "latched" in detail:
        return "err_latched", {}
    if "needs a reason" in detail:
        return "err_need_reason", {}
    if "not shelved" in detail:
        return "err_not_shelved", {}
    if exc.status_code == 503:
        return "err_store", {}
    return "err_other", {}


def _at(ctx: ApiContext, at: datetime | None, lang: Lang) -> str:
    return Speaker.of(lang, ctx.timezone).clock(at)


def _error_page(  # noqa: PLR0917 - everything the page says back
    request: Request,
    ctx: ApiContext,
    refusal: tuple[int, _Reason],
    note: str,
    action: str,
    alarm_ids: list[str],
) -> HTMLResponse:
    status, (key, values) = refusal
    user = ctx.sessions.get(request.cookies.get(SESSION_COOKIE, ""), ctx.clock.monotonic())
    return _page(
        request, ctx, "error.html", status=status, user=user.user if user else None,
        csrf=_csrf(request, ctx), reason_key=key, reason_values=values, note=note,
        action=action, alarm_ids=alarm_ids,
    )  # fmt: skip


@router.get("/console/sites/{site_id}")
async def site_page(site_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return _login_page(request, ctx)
    site = ctx.registry.site(site_id)
    if site is None or not site_visible(user, site_id):
        return _page(
            request, ctx, "error.html", status=404, user=user, csrf=_csrf(request, ctx),
            reason_key="not_found", reason_values={}, note="", action="", alarm_ids=[],
        )  # fmt: skip
    status = ctx.registry.kit_status(site_id)
    missing = [[str(c) for c in str(m).split(" or ")] for m in status.missing] if status else []
    return _page(
        request, ctx, "site.html", user=user, csrf=_csrf(request, ctx),
        detail=site_detail(ctx, site, user), latitude=site.latitude, longitude=site.longitude,
        history=ctx.alarms.history,
        missing=missing, incidents=group(a for a in alarm_queue(ctx, user, site=site_id)),
    )  # fmt: skip


@router.get("/console/fleet")
async def fleet_page(request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return _login_page(request, ctx)
    views = [
        device_view(ctx, d.device_id)
        for d in ctx.registry.devices()
        if site_visible(user, d.site_id)
    ]
    devices = [v for v in views if v is not None]
    devices.sort(key=lambda v: (_FLEET_ORDER[v.availability], v.site_id, v.device_id))
    count = Counter(v.availability for v in devices)
    return _page(
        request, ctx, "fleet.html", user=user, csrf=_csrf(request, ctx), devices=devices,
        online=count["online"], offline=count["offline"], waiting=count["not_heard_yet"],
        low=sum(_low(v) for v in devices), is_low=_low,
        site_names={s.site_id: s.name for s in ctx.registry.sites()},
    )  # fmt: skip


def _low(view: DeviceView) -> bool:
    return (
        view.battery_mv is not None and view.power == "battery" and view.battery_mv < LOW_BATTERY_MV
    )
