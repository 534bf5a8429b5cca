"""The console: server-rendered pages (alarm queue, site, fleet) in zh-CN or English, live
through the ``/api/events`` stream. Forms post with the session's CSRF token; the alarm
operations are the API's (:func:`gateway.api.routes.answer_alarm`), recorded the same way.

A page asked for without a session answers 401 with the login form, so the browser shows it
in place and the login returns there.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.api.auth import SESSION_COOKIE, Permission, allowed
from gateway.api.context import ApiContext, context, current_user, forbidden, site_visible
from gateway.api.i18n import LANGS, Lang, text
from gateway.api.routes import Action, alarm_queue, answer_alarm, check_login, set_session_cookie
from gateway.api.views import DeviceView, device_view, site_detail
from gateway.users import User

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
_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _lang(request: Request) -> Lang:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return next((lang for lang in LANGS if lang == asked), "zh-CN")


def _page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    lang = _lang(request)
    html = _env.get_template(template).render(
        t=lambda key: text(key, lang), lang=lang, path=request.url.path, **values
    )
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
    return response


async def _viewer(request: Request, ctx: ApiContext) -> User | None:
    try:
        return await current_user(request, ctx)
    except HTTPException:
        return None


def _login_page(request: Request, status: int = 401, error: str | None = None) -> HTMLResponse:
    return _page(request, "login.html", status=status, error=error, user=None, csrf=None)


def _csrf(request: Request, ctx: ApiContext) -> str | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    session = ctx.sessions.get(session_id, ctx.clock.monotonic()) if session_id else None
    return session.csrf if session else None


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/alarms", status_code=303)


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return _login_page(request, status=200)


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
        page = _login_page(request, status=exc.status_code, error=key)
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
        return _login_page(request)
    return _page(
        request, "alarms.html", user=user, csrf=_csrf(request, ctx), **_queue_values(ctx, user)
    )


@router.get("/console/alarms/queue")
async def alarms_fragment(request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return HTMLResponse("", status_code=401)
    return _page(
        request, "queue.html", user=user, csrf=_csrf(request, ctx), **_queue_values(ctx, user)
    )


def _queue_values(ctx: ApiContext, user: User) -> dict[str, Any]:
    return {
        "alarms": alarm_queue(ctx, user),
        "can_answer": allowed(user, Permission.ANSWER),
        "can_suppress": allowed(user, Permission.SUPPRESS),
        "age": _age,
    }


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@router.post("/console/alarms/{alarm_id}/{action}")
async def act(  # noqa: PLR0917 - FastAPI passes form fields by name
    alarm_id: str,
    action: str,
    request: Request,
    ctx: Ctx,
    note: Annotated[str, Form(max_length=1000)] = "",
    minutes: Annotated[int, Form(ge=1, le=24 * 60)] = 60,
) -> Response:
    user = await current_user(request, ctx)  # 401 without a session, 403 on a bad CSRF token
    chosen = _ACTIONS.get(action)
    if chosen is None:
        raise HTTPException(404, f"no action {action!r}")
    needed = Permission.SUPPRESS if chosen == "shelve" else Permission.ANSWER
    if not allowed(user, needed):
        raise forbidden(ctx, user, needed, (chosen, alarm_id))
    answer_alarm(ctx, user, alarm_id, chosen, note.strip() or None, duration_s=minutes * 60.0)
    return RedirectResponse("/console/alarms", status_code=303)


@router.get("/console/sites/{site_id}")
async def site_page(site_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return _login_page(request)
    site = ctx.registry.site(site_id)
    if site is None or not site_visible(user, site_id):
        raise HTTPException(404, f"no site {site_id!r}")
    return _page(
        request, "site.html", user=user, csrf=_csrf(request, ctx),
        detail=site_detail(ctx, site, user), age=_age, stamp=_stamp,
    )  # fmt: skip


@router.get("/console/fleet")
async def fleet_page(request: Request, ctx: Ctx) -> HTMLResponse:
    user = await _viewer(request, ctx)
    if user is None:
        return _login_page(request)
    views = [
        device_view(ctx, d.device_id)
        for d in ctx.registry.devices()
        if site_visible(user, d.site_id)
    ]
    devices = [v for v in views if v is not None]
    devices.sort(key=lambda v: (_FLEET_ORDER[v.availability], v.site_id, v.device_id))
    count = Counter(v.availability for v in devices)
    return _page(
        request, "fleet.html", user=user, csrf=_csrf(request, ctx), devices=devices,
        online=count["online"], offline=count["offline"], waiting=count["not_heard_yet"],
        low=sum(_low(v) for v in devices), is_low=_low, stamp=_stamp,
    )  # fmt: skip


def _low(view: DeviceView) -> bool:
    return (
        view.battery_mv is not None and view.power == "battery" and view.battery_mv < LOW_BATTERY_MV
    )


def _stamp(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"
