"""The alert page for the people at the site (issue 14): ``/a/{token}``, no login.

The first SMS of an alarm ends with this link (the gateway signs it: :mod:`gateway.alert_link`),
so the token is the only key: it names one alarm (hence its incident and site) and one contact
of that site. The page says, in the contact's language, on a phone: what happened, whether the
gas is shut off, what to do now (leave first), and the gas company's progress, kept live by a
small script polling ``/a/{token}/status``. One-tap answers ("everyone has left", "cooking / a
false alarm", "call me", "we need help now") post as a plain form (no script needed) or JSON;
each lands on the incident's timeline and reaches the officers' consoles through NOTIFY.

The SMS never waits for the center, so the alarm may not be here yet: the page then shows what
to do and "the gas company is being told", and an answer waits in ``site_answers`` until the
alarm's first insert moves it onto the timeline (a trigger: central/migrations/0002).

A forged, altered or expired token gets one plain page, the same for every reason except the
word "expired", naming nothing of any incident. No contact's phone number or name is ever on
the page; pages are not cached, not indexed and send no referrer (the URL is the key).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, cast
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from central.alert_words import TODO_CALM, TODO_EMERGENCY, AlertLang, say
from central.db import notify
from gateway.alarm_types import AlarmType
from gateway.alert_link import AlertGrant, InvalidAlertLink, verify
from gateway.api.i18n import zone_label
from gateway.words import catalogue, word

__all__ = ["ANSWERS", "AlertPage", "AnswerLimiter", "Status", "alert_page", "router"]

ANSWERS: Final = ("left", "false_alarm", "call_me", "need_help")
# The two-key advisory lock of "is this alarm here yet?": the alarms' insert trigger takes it
# shared (migration 0004), an answer for an alarm not here yet takes it exclusive.
_ARRIVAL_LOCK: Final = (1935765107, 0)
_ANSWERS_SHOWN: Final = 10
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
}
_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
router = APIRouter(include_in_schema=False)
_log = logging.getLogger(__name__)
_HTML_LANG: Final[dict[AlertLang, str]] = {"zh": "zh-CN", "en": "en"}  # <html lang>
_DB_WAIT_S: Final = 5.0  # a frightened person does not wait 30 s for a page: say what to do


class AnswerLimiter:
    """At most ``per_link`` answers per link (alarm and contact) and ``per_client`` per client
    address within ``window_s``: enough for a person, too few to flood an officer's timeline.
    In memory, per instance (several instances multiply the allowance, which is still small)."""

    def __init__(
        self,
        per_link: int = 10,
        per_client: int = 30,
        window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"link": per_link, "client": per_client}
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def allow(self, link: str, client: str) -> bool:
        now = self._clock()
        if len(self._seen) > 10_000:  # forget idle keys now and then: memory stays bounded
            for key in [k for k, times in self._seen.items() if self._stale(times, now)]:
                del self._seen[key]
        keys = (("link", link), ("client", client))
        queues = [self._seen.setdefault(key, deque()) for key in keys]
        for queue in queues:
            while queue and queue[0] <= now - self._window_s:
                queue.popleft()
        if any(len(q) >= self._limits[kind] for (kind, _), q in zip(keys, queues, strict=True)):
            return False
        for queue in queues:
            queue.append(now)
        return True

    def _stale(self, times: deque[float], now: float) -> bool:
        return not times or times[-1] <= now - self._window_s


@dataclass(slots=True)
class AlertPage:
    """What the pages need: the pool, the secret shared with the gateways, the gas company's
    number and the local zone."""

    pool: AsyncConnectionPool[Any]
    secret: bytes
    hotline: str = ""
    timezone: str = "Asia/Shanghai"
    limiter: AnswerLimiter = field(default_factory=AnswerLimiter)
    poll_s: float = 5.0  # how often an open page asks for the live part
    zone: ZoneInfo = field(init=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.timezone)

    @classmethod
    def from_settings(cls, pool: AsyncConnectionPool[Any], settings: object) -> AlertPage:
        """From the instance's settings, read defensively: ``alert_secret`` (SecretStr, str,
        bytes or None: none makes every link invalid), ``hotline``, ``timezone``."""
        secret: object = getattr(settings, "alert_secret", None)
        if hasattr(secret, "get_secret_value"):
            secret = secret.get_secret_value()
        if isinstance(secret, str):
            secret = secret.encode()
        return cls(
            pool,
            secret if isinstance(secret, bytes) else b"",
            str(getattr(settings, "hotline", "") or ""),
            str(getattr(settings, "timezone", "") or "Asia/Shanghai"),
        )


def alert_page(request: Request) -> AlertPage:
    """The app's :class:`AlertPage`: ``app.state.alert_page`` if set, else made once from the
    control room's context (``app.state.ctx``: its pool and settings)."""
    state = request.app.state
    page = getattr(state, "alert_page", None)
    if page is None:
        page = AlertPage.from_settings(state.ctx.pool, state.ctx.settings)
        state.alert_page = page
    return cast(AlertPage, page)


Page = Annotated[AlertPage, Depends(alert_page)]


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    done: bool


@dataclass(frozen=True, slots=True)
class Status:
    """The live part of the page (also ``/a/{token}/status``), already in words."""

    known: bool  # the center has the alarm
    valve_closed: bool
    valve: str  # "" when there is nothing to shut off (maintenance, closed)
    valve_hint: str
    gas_gone: str
    steps: list[Step]
    answers: list[str]  # "12:05 Everyone has left", newest last; never who sent it


@dataclass(frozen=True, slots=True)
class Facts:
    """What the center knows of the token's alarm and its incident (one row)."""

    row: Mapping[str, Any] | None
    answers: list[tuple[datetime, str]]


# -- pages ----------------------------------------------------------------------------------


@router.get("/a/{token}", response_class=HTMLResponse)
async def page_view(token: str, request: Request, page: Page) -> Response:
    grant = _grant(page, token)
    if isinstance(grant, InvalidAlertLink):
        return _invalid(page, grant, request)
    lang = _lang(request, grant)
    try:
        facts = await _facts(page.pool, grant.alarm_id)
    except psycopg.Error as exc:  # what to do needs no database: never an error page
        _log.warning("alert page without the database: %s", exc)
        facts = Facts(None, [])
    thanks = request.query_params.get("thanks")
    return _html(
        "alert.html",
        lang,
        what=_what(facts, lang, page.zone),
        phase=_phase(facts),
        todo=[pair[1] if lang == "en" else pair[0] for pair in _todo(facts)],
        call=_call_line(page.hotline, lang, outside=_phase(facts) == "emergency"),
        hotline=page.hotline,
        status=_status(facts, lang, page.zone),
        answers=[(a, word("site_answer", a, lang)) for a in _offered(facts)],
        thanks=say(f"thanks_{thanks}", lang) if thanks in ANSWERS else "",
        action=f"/a/{token}/answer?{urlencode({'lang': lang})}",
        status_url=f"/a/{token}/status?{urlencode({'lang': lang})}",
        other_lang=f"/a/{token}?{urlencode({'lang': 'zh' if lang == 'en' else 'en'})}",
        times=say("times", lang, zone=_zone_label(page.zone, lang)),
        poll_s=page.poll_s,
    )


@router.get("/a/{token}/status")
async def status_view(token: str, request: Request, page: Page) -> Response:
    grant = _grant(page, token)
    if isinstance(grant, InvalidAlertLink):
        return _json({"valid": False}, _invalid_code(grant))
    try:
        facts = await _facts(page.pool, grant.alarm_id)
    except psycopg.Error as exc:  # the page keeps what it shows and asks again
        _log.warning("alert page status without the database: %s", exc)
        return _json({"error": "try again"}, 503)
    return _json(asdict(_status(facts, _lang(request, grant), page.zone)))


@router.post("/a/{token}/answer")
async def answer_view(token: str, request: Request, page: Page) -> Response:
    wants_json = "json" in request.headers.get("content-type", "")
    grant = _grant(page, token)
    if isinstance(grant, InvalidAlertLink):
        if wants_json:
            return _json({"valid": False}, _invalid_code(grant))
        return _invalid(page, grant, request)
    lang = _lang(request, grant)
    back = f"/a/{token}?{urlencode({'lang': lang})}"
    call = _number(page.hotline)
    answer = await _answer_of(request, wants_json)
    if answer not in ANSWERS:
        refusal: dict[str, object] = {"error": "unknown answer", "answers": list(ANSWERS)}
        return _refused(
            wants_json, refusal, lang=lang, words=("bad_answer", ""), back=back, status_code=400
        )
    client = request.client.host if request.client else "unknown"
    if not page.limiter.allow(f"{grant.alarm_id}/{grant.contact}", client):
        refusal = {"error": "too many answers", "retry_after_s": 600}
        words = ("busy_title", say("busy_body", lang, call=call))
        return _refused(wants_json, refusal, lang=lang, words=words, back=back, status_code=429)
    try:
        at_center = await record_answer(page.pool, grant, answer)
    except psycopg.Error as exc:
        _log.warning("alert page answer not recorded: %s", exc)
        refusal = {"error": "not recorded, call the gas company"}
        words = ("not_sent_title", say("not_sent_body", lang, call=call))
        return _refused(wants_json, refusal, lang=lang, words=words, back=back, status_code=503)
    if wants_json:
        return _json({"received": True, "answer": answer, "at_center": at_center})
    target = f"/a/{token}?{urlencode({'lang': lang, 'thanks': answer})}"
    return _headers(RedirectResponse(target, status_code=303))


def _refused(
    wants_json: bool,
    refusal: Mapping[str, object],
    *,
    lang: AlertLang,
    words: tuple[str, str],
    back: str,
    status_code: int,
) -> Response:
    """An answer not taken: JSON for a script, else a page in the contact's language (its
    title key and body) with the way back."""
    if wants_json:
        return _json(refusal, status_code)
    return _notice(lang, words[0], words[1], back, status_code)


# -- the database ---------------------------------------------------------------------------

_FACTS_SQL: Final = """
SELECT a.alarm_type, a.event -> 'title' AS title, a.event -> 'site' ->> 'name' AS site_name,
       a.raised_at, a.active, coalesce(i.valve_state, a.valve_state) AS valve_state,
       i.incident_id, i.state, i.category, i.opened_at, i.acknowledged_at, i.dispatched_at,
       i.eta, i.on_site_at, i.resolved_at, i.cause, i.closed_at
FROM alarms AS a JOIN incidents AS i ON i.incident_id = a.incident_id
WHERE a.alarm_id = %s
"""
# The site's answers: on the incident's timeline, and those still waiting for their alarm.
_ANSWERS_SQL: Final = """
SELECT at, detail ->> 'answer' FROM timeline WHERE incident_id = %s AND kind = 'site_answer'
UNION ALL
SELECT at, answer FROM site_answers WHERE alarm_id = %s
ORDER BY 1 DESC LIMIT %s
"""
_ATTACH_SQL: Final = """
INSERT INTO timeline (incident_id, at, kind, actor, detail)
SELECT a.incident_id, now(), 'site_answer', site_contact_actor(%(contact)s, a.event),
       jsonb_build_object('answer', %(answer)s::text, 'alarm_id', a.alarm_id,
                          'contact', %(contact)s::integer, 'lang', %(lang)s::text)
FROM alarms AS a WHERE a.alarm_id = %(alarm_id)s
RETURNING incident_id
"""


async def _facts(pool: AsyncConnectionPool[Any], alarm_id: str) -> Facts:
    async with pool.connection(timeout=_DB_WAIT_S) as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(_FACTS_SQL, (alarm_id,))
        row = await cur.fetchone()
        incident = row["incident_id"] if row else None
        found = await conn.execute(_ANSWERS_SQL, (incident, alarm_id, _ANSWERS_SHOWN))
        answers = [(at, answer) for at, answer in await found.fetchall()]
    return Facts(row, answers[::-1])


async def record_answer(pool: AsyncConnectionPool[Any], grant: AlertGrant, answer: str) -> bool:
    """The answer on its incident's timeline, the consoles told (NOTIFY); or, when the alarm is
    not here yet, kept for it. True when it reached the incident."""
    values = {
        "alarm_id": grant.alarm_id,
        "contact": grant.contact,
        "lang": grant.lang,
        "answer": answer,
    }
    async with pool.connection(timeout=_DB_WAIT_S) as conn, conn.transaction():
        incident = await _attach(conn, values)
        if incident is None:
            # Every alarm insert takes this lock shared (its trigger): after it, either the
            # alarm is committed and seen here, or the trigger will see the answer kept below.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _ARRIVAL_LOCK)
            incident = await _attach(conn, values)
        if incident is None:
            await conn.execute(
                "INSERT INTO site_answers (alarm_id, contact, lang, answer, at) "
                "VALUES (%(alarm_id)s, %(contact)s, %(lang)s, %(answer)s, now())",
                values,
            )
            return False
        await notify(conn, incidents=[incident])
    return True


async def _attach(conn: psycopg.AsyncConnection[Any], values: dict[str, object]) -> int | None:
    row = await (await conn.execute(_ATTACH_SQL, values)).fetchone()
    return int(row[0]) if row else None


# -- words ----------------------------------------------------------------------------------


def _status(facts: Facts, lang: AlertLang, zone: ZoneInfo) -> Status:
    row = facts.row
    answers = [f"{_clock(at, zone)} {word('site_answer', a, lang)}" for at, a in facts.answers]
    if row is None:
        return Status(
            False,
            False,
            say("valve_unknown", lang),
            say("valve_hint", lang),
            "",
            [Step(say("being_told", lang), False)],
            answers,
        )
    closed = row["valve_state"] == "closed"
    if _phase(facts) != "emergency":  # nothing to shut off or to stay away from: not said
        return Status(True, closed, "", "", "", _steps(row, lang, zone), answers)
    failed = row["alarm_type"] == AlarmType.VALVE_FAILED_TO_CLOSE
    valve = "valve_closed" if closed else ("valve_failed" if failed else "valve_open")
    return Status(
        True,
        closed,
        say(valve, lang),
        "" if closed else say("valve_hint", lang),
        "" if row["active"] else say("gas_gone", lang),
        _steps(row, lang, zone),
        answers,
    )


def _steps(row: Mapping[str, Any], lang: AlertLang, zone: ZoneInfo) -> list[Step]:
    """The gas company's side, oldest first; the next thing awaited is the last, not done."""
    at = row["acknowledged_at"]
    steps = [Step(say("received", lang, at=_clock(row["opened_at"], zone)), True)]
    steps.append(
        Step(say("seen", lang, at=_clock(at, zone)), True)
        if at
        else Step(say("waiting_officer", lang), False)
    )
    if row["dispatched_at"]:
        eta = row["eta"]
        text = say("on_the_way_eta", lang, at=_clock(eta, zone)) if eta else ""
        steps.append(Step(text or say("on_the_way", lang), True))
    if row["on_site_at"]:
        steps.append(Step(say("on_site", lang, at=_clock(row["on_site_at"], zone)), True))
    if row["resolved_at"]:
        when = _clock(row["resolved_at"], zone)
        cause = word("cause", row["cause"], lang) if row["cause"] in catalogue("cause") else ""
        key = "resolved_cause" if cause else "resolved"
        steps.append(Step(say(key, lang, at=when, cause=cause), True))
    if row["closed_at"]:
        steps.append(Step(say("closed", lang), True))
    return steps


def _what(facts: Facts, lang: AlertLang, zone: ZoneInfo) -> str:
    row = facts.row
    if row is None:
        return say("what_happened_unknown", lang)
    code = row["alarm_type"]
    title = word("alarm_type", code, lang) if code in catalogue("alarm_type") else ""
    if not title:  # a rule file's own type: the gateway's title, never the raw code
        given = row["title"] if isinstance(row["title"], dict) else {}
        title = str(given.get(lang) or given.get("zh") or say("page_title", lang))
    site = row["site_name"] or ""
    if not site:
        return f"{title}。" if lang != "en" else f"{title}."
    return say("what_happened", lang, title=title, site=site, at=_clock(row["raised_at"], zone))


def _phase(facts: Facts) -> str:
    """``emergency`` (also while the alarm is not here yet: the SMS was about one),
    ``maintenance`` (a battery, an inspection: no need to run), ``over`` (closed by the gas
    company: a link opened hours later must not send people running)."""
    if facts.row is None:
        return "emergency"
    if facts.row["state"] == "closed":
        return "over"
    return "maintenance" if facts.row["category"] == "maintenance" else "emergency"


def _todo(facts: Facts) -> tuple[tuple[str, str], ...]:
    return TODO_EMERGENCY if _phase(facts) == "emergency" else TODO_CALM


def _offered(facts: Facts) -> tuple[str, ...]:
    """Every answer during an emergency; "call me" otherwise."""
    if _phase(facts) == "emergency":
        return ("left", "need_help", "false_alarm", "call_me")
    return ("call_me",)


def _number(hotline: str) -> str:
    return hotline or "119"


def _call_line(hotline: str, lang: AlertLang, *, outside: bool = True) -> str:
    if not outside:
        return say("call_calm", lang, number=_number(hotline))
    return say("call", lang, hotline=hotline) if hotline else say("call_119", lang)


def _clock(at: datetime | None, zone: ZoneInfo) -> str:
    if at is None:
        return ""
    local = at.astimezone(zone)
    today = datetime.now(UTC).astimezone(zone).date()
    return local.strftime("%H:%M" if local.date() == today else "%m-%d %H:%M")


def _zone_label(zone: ZoneInfo, lang: AlertLang) -> str:
    return zone_label(datetime.now(UTC).astimezone(zone), "en" if lang == "en" else "zh-CN")


# -- plumbing -------------------------------------------------------------------------------


def _grant(page: AlertPage, token: str) -> AlertGrant | InvalidAlertLink:
    try:
        return verify(page.secret, token, datetime.now(UTC))
    except InvalidAlertLink as exc:
        return exc


def _lang(request: Request, grant: AlertGrant) -> AlertLang:
    """``?lang=`` (zh, zh-CN, en) switches; else the contact's language from the token."""
    asked = (request.query_params.get("lang") or "").lower()
    if asked.startswith("en"):
        return "en"
    if asked.startswith("zh"):
        return "zh"
    return "en" if grant.lang == "en" else "zh"


async def _answer_of(request: Request, wants_json: bool) -> str:
    try:
        if wants_json:
            body = await request.json()
            return str(body.get("answer", "")) if isinstance(body, dict) else ""
        return str((await request.form()).get("answer", ""))
    except ValueError:  # not JSON, or a broken form body
        return ""


def _invalid_code(error: InvalidAlertLink) -> int:
    return 410 if error.reason == "expired" else 404


def _invalid(page: AlertPage, error: InvalidAlertLink, request: Request) -> Response:
    """One page for every bad link, in both languages (the token's language is unknowable)."""
    title = "expired_title" if error.reason == "expired" else "invalid_title"
    first: AlertLang = "en" if (request.query_params.get("lang") or "").startswith("en") else "zh"
    langs: list[AlertLang] = [first, "zh" if first == "en" else "en"]
    texts = [
        (_HTML_LANG[lang], say(title, lang), say("invalid_body", lang),
         _call_line(page.hotline, lang))
        for lang in langs
    ]  # fmt: skip
    return _html(
        "alert_invalid.html",
        first,
        texts=texts,
        number=_number(page.hotline),
        status_code=_invalid_code(error),
    )


def _notice(lang: AlertLang, title: str, body: str, back: str, status_code: int) -> Response:
    return _html(
        "alert_notice.html",
        lang,
        title=say(title, lang),
        body=body,
        back=back,
        status_code=status_code,
    )


def _html(template: str, lang: AlertLang, *, status_code: int = 200, **values: Any) -> Response:
    html = _env.get_template(template).render(
        lang=lang, html_lang=_HTML_LANG[lang], say=say, **values
    )
    return _headers(HTMLResponse(html, status_code=status_code))


def _json(body: object, status_code: int = 200) -> Response:
    return _headers(JSONResponse(body, status_code=status_code))


def _headers(response: Response) -> Response:
    response.headers.update(_HEADERS)
    return response
