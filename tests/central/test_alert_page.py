"""The alert page for the people at the site (central/alert_page.py, issue 14): words in both
languages, the valve, the gas company's progress, answers onto the timeline with a NOTIFY (also
before the alarm reaches the center), rate limits, invalid links, nothing personal on a page."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from playwright.async_api import Browser, Page, ViewportSize, expect
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from central import alert_page
from central.alert_page import AlertPage, AnswerLimiter
from central.db import CHANNEL, upgrade
from gateway.alert_link import AlertGrant, issue
from gateway.words import word
from tests.support.services import free_port, wait_for_port

SECRET = "alert-page-test-secret"
HOTLINE = "95158"
ALARM = "gw1-01M8H09XPA38TN4GSSMJYWZEA8"
PHONES = ("13800000001", "13900000002")
NAMES = ("王老板", "Li Si")
ZONE = ZoneInfo("Asia/Shanghai")


def token(alarm: str = ALARM, contact: int = 0, lang: str = "zh", *, ttl_s: float = 3600) -> str:
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    return issue(SECRET.encode(), AlertGrant(alarm, contact, lang, expires))


def event(alarm_type: str, valve_state: str | None) -> dict[str, Any]:
    contacts = [
        {"name": NAMES[0], "phone": PHONES[0], "lang": "zh", "role": "owner"},
        {"name": NAMES[1], "phone": PHONES[1], "lang": "en", "role": "staff"},
    ]
    return {
        "alarm_id": ALARM,
        "alarm_type": alarm_type,
        "title": {"zh": "燃气泄漏(高报)", "en": "Gas leak (high level)"},
        "site": {"site_id": "r-0001", "name": "老王饭店", "address": "漕溪北路 88 号",
                 "district": "Xuhui", "site_type": "restaurant", "contacts": contacts},
        "valve_state": valve_state,
    }  # fmt: skip


def seed(
    dsn: str,
    *,
    alarm_type: str = "leak_high",
    valve_state: str | None = "closed",
    category: str = "emergency",
    active: bool = True,
    **incident: object,
) -> int:
    """One incident with the token's alarm under it, as ingest would leave them."""
    columns = ", ".join(incident)
    values = ", ".join(["%s"] * len(incident))
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO incidents (kind, category, gateway_id, site_id, district, severity,"
            " valve_state, title, opened_at, updated_at"
            + (f", {columns}) " if incident else ") ")
            + "VALUES ('site', %s, 'gw1', 'r-0001', 'Xuhui', 'critical', %s, '{}',"
            " now() - interval '2 minutes', now()"
            + (f", {values})" if incident else ")")
            + " RETURNING incident_id",
            (category, valve_state, *incident.values()),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO alarms (alarm_id, gateway_id, site_id, incident_id, revision, alarm_type,"
            " severity, state, active, valve_state, event, raised_at, updated_at)"
            " VALUES (%s, 'gw1', 'r-0001', %s, 1, %s, 'critical', 'unack_active', %s, %s, %s,"
            " now() - interval '2 minutes', now())",
            (ALARM, row[0], alarm_type, active, valve_state,
             json.dumps(event(alarm_type, valve_state))),
        )  # fmt: skip
        return int(row[0])


def local(hour: int, minute: int) -> datetime:
    """Today at hour:minute in the center's zone."""
    today = datetime.now(ZONE).date()
    return datetime(today.year, today.month, today.day, hour, minute, tzinfo=ZONE)


def app_for(pool: AsyncConnectionPool[Any], *, secret: object = None) -> FastAPI:
    """A tiny app as the control room includes the router: its context on ``app.state.ctx``."""
    app = FastAPI()
    settings = SimpleNamespace(
        alert_secret=SecretStr(SECRET) if secret is None else secret,
        hotline=HOTLINE,
        timezone="Asia/Shanghai",
    )
    app.state.ctx = SimpleNamespace(pool=pool, settings=settings)
    app.include_router(alert_page.router)
    app.mount("/static", StaticFiles(directory=alert_page.__file__.rsplit("/", 1)[0] + "/static"))
    return app


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    upgrade(pg_dsn)
    return pg_dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    opened: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await opened.open(wait=True)
    yield opened
    await opened.close()


@pytest.fixture
async def client(pool: AsyncConnectionPool[Any]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        yield http


def no_personal_data(text: str) -> None:
    for phone in PHONES:
        assert phone not in text
    assert not re.search(r"1[3-9]\d{9}", text), "a mobile number on a page"
    for name in NAMES:
        assert name not in text


async def get(http: httpx.AsyncClient, url: str, status: int = 200) -> httpx.Response:
    response = await http.get(url)
    assert response.status_code == status, response.text
    no_personal_data(response.text)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in response.headers["x-robots-tag"]
    return response


async def test_zh_page_says_what_happened_the_valve_and_what_to_do(
    dsn: str, client: httpx.AsyncClient
) -> None:
    seed(dsn)
    page = (await get(client, f"/a/{token()}")).text
    assert '<html lang="zh-CN">' in page
    assert "请立即离开！" in page  # noqa: RUF001
    assert "燃气泄漏(高报)" in page
    assert "老王饭店" in page
    assert "燃气已自动切断" in page
    assert "还没有切断" not in page
    assert "所有人立即离开" in page
    assert "不要点火" in page
    assert "不要开关任何电器" in page
    assert f'href="tel:{HOTLINE}"' in page
    for label in ("所有人已撤离", "是烹饪或误报", "请给我回电话", "我们需要紧急帮助"):
        assert label in page
    assert "燃气公司已收到报警" in page
    assert "正在等值班员处理" in page
    assert "北京时间" in page
    assert '<meta name="robots" content="noindex, nofollow">' in page
    assert ALARM not in page
    assert "leak_high" not in page


async def test_en_by_token_and_switch_by_query(dsn: str, client: httpx.AsyncClient) -> None:
    seed(dsn, valve_state="open")
    page = (await get(client, f"/a/{token(contact=1, lang='en')}")).text
    assert '<html lang="en">' in page
    assert "Leave now!" in page
    assert "Gas leak (high level) at 老王饭店" in page
    assert "Gas supply NOT shut off yet!" in page
    assert "close the gas at the cylinder or meter" in page
    assert "Everyone has left" in page
    assert "We need help now" in page
    assert "Beijing time" in page
    assert "燃气" not in page.split("<footer>")[0].replace("老王饭店", "")
    switched = (await get(client, f"/a/{token(contact=1, lang='en')}?lang=zh")).text
    assert "燃气还没有切断！" in switched  # noqa: RUF001


async def test_valve_words_follow_the_incident(dsn: str, client: httpx.AsyncClient) -> None:
    incident = seed(dsn, valve_state="closed")
    url = f"/a/{token(lang='en')}/status"
    status = (await get(client, url)).json()
    assert status["valve_closed"] is True
    assert status["valve"] == "Gas supply shut off"
    with psycopg.connect(dsn, autocommit=True) as conn:  # opened by hand while the alarm is open
        conn.execute(
            "UPDATE incidents SET valve_state = 'open' WHERE incident_id = %s", (incident,)
        )
    status = (await get(client, url)).json()
    assert status["valve_closed"] is False
    assert status["valve"] == "Gas supply NOT shut off yet!"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE alarms SET alarm_type = 'valve_failed_to_close', active = false")
    status = (await get(client, url)).json()
    assert "did NOT close" in status["valve"]
    assert "no longer senses gas" in status["gas_gone"]


async def test_the_gas_companys_progress(dsn: str, client: httpx.AsyncClient) -> None:
    seed(
        dsn,
        state="dispatched",
        acknowledged_at=local(12, 4),
        acknowledged_by="wang",
        dispatched_at=local(12, 6),
        crew="Crew 3",
        eta=local(12, 30),
    )
    page = (await get(client, f"/a/{token(lang='en')}")).text
    assert "Seen by the gas company at 12:04" in page
    assert "A technician is on the way, ETA 12:30" in page
    assert "wang" not in page
    assert "Crew 3" not in page
    zh = (await get(client, f"/a/{token()}/status")).json()
    assert [s["text"] for s in zh["steps"]][1:] == [
        "燃气公司已看到报警 12:04",
        "维修人员正在赶来，预计 12:30 到达",  # noqa: RUF001
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE incidents SET state = 'resolved', on_site_at = %s, resolved_at = %s,"
            " cause = 'aged_or_damaged_hose'",
            (local(12, 28), local(12, 50)),
        )
    steps = [
        s["text"] for s in (await get(client, f"/a/{token(lang='en')}/status")).json()["steps"]
    ]
    assert steps[-2:] == [
        "The technician arrived at 12:28",
        "Dealt with by the gas company at 12:50: aged or damaged hose",
    ]


async def test_alarm_not_at_the_center_yet(client: httpx.AsyncClient) -> None:
    page = (await get(client, f"/a/{token()}")).text
    assert "请立即离开！" in page  # noqa: RUF001
    assert "您的燃气报警器发出了报警" in page
    assert "正在通知燃气公司" in page
    assert "所有人立即离开" in page
    assert "所有人已撤离" in page
    assert "还不能确认燃气已切断" in page


async def test_an_answer_lands_on_the_timeline_and_is_notified(
    dsn: str, client: httpx.AsyncClient
) -> None:
    incident = seed(dsn)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        response = await client.post(
            f"/a/{token()}/answer", data={"answer": "left"}, follow_redirects=False
        )
        assert response.status_code == 303
        assert response.headers["location"].endswith("thanks=left")
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert json.loads(notes[0].payload)["incidents"] == [incident]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT kind, actor, detail FROM timeline WHERE incident_id = %s", (incident,)
        ).fetchall()
    assert len(rows) == 1
    kind, actor, detail = rows[0]
    assert (kind, actor) == ("site_answer", f"site contact #1 {NAMES[0]}")
    assert detail == {"answer": "left", "alarm_id": ALARM, "contact": 0, "lang": "zh"}
    page = (await get(client, response.headers["location"])).text
    assert "已收到：所有人已撤离" in page  # noqa: RUF001
    told = (await get(client, f"/a/{token()}/status")).json()["answers"]
    assert len(told) == 1
    assert told[0].endswith("所有人已撤离")


async def test_a_json_answer(dsn: str, client: httpx.AsyncClient) -> None:
    seed(dsn)
    response = await client.post(
        f"/a/{token(contact=1, lang='en')}/answer", json={"answer": "call_me"}
    )
    assert response.status_code == 200
    assert response.json() == {"received": True, "answer": "call_me", "at_center": True}
    bad = await client.post(f"/a/{token()}/answer", json={"answer": "drop table"})
    assert bad.status_code == 400
    form = await client.post(f"/a/{token()}/answer", data={"answer": "<b>"})
    assert form.status_code == 400
    assert "无法识别的答复" in form.text
    with psycopg.connect(dsn) as conn:
        actors = conn.execute("SELECT actor FROM timeline").fetchall()
    assert actors == [(f"site contact #2 {NAMES[1]}",)]


async def test_an_answer_before_the_alarm_waits_for_it(dsn: str, client: httpx.AsyncClient) -> None:
    response = await client.post(f"/a/{token()}/answer", json={"answer": "need_help"})
    assert response.json()["at_center"] is False
    status = (await get(client, f"/a/{token()}/status")).json()
    assert status["answers"][0].endswith("我们需要紧急帮助")
    incident = seed(dsn)  # the alarm arrives: its insert moves the answer onto the timeline
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT incident_id, actor, detail FROM timeline").fetchall()
        waiting = conn.execute("SELECT count(*) FROM site_answers").fetchone()
    assert waiting == (0,)
    assert rows == [
        (
            incident,
            f"site contact #1 {NAMES[0]}",
            {"answer": "need_help", "alarm_id": ALARM, "contact": 0, "lang": "zh",
             "before_alarm": True},
        )
    ]  # fmt: skip
    status = (await get(client, f"/a/{token()}/status")).json()
    assert len(status["answers"]) == 1


async def test_answers_are_rate_limited(dsn: str, client: httpx.AsyncClient) -> None:
    seed(dsn)
    url = f"/a/{token()}/answer"
    for _ in range(10):
        assert (await client.post(url, json={"answer": "call_me"})).status_code == 200
    refused = await client.post(url, data={"answer": "left"})
    assert refused.status_code == 429
    assert "已收到您的多次答复" in refused.text
    assert HOTLINE in refused.text
    no_personal_data(refused.text)
    assert (await client.post(url, json={"answer": "left"})).status_code == 429
    other = await client.post(f"/a/{token(contact=1)}/answer", json={"answer": "left"})
    assert other.status_code == 200  # another contact's link has its own allowance
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM timeline").fetchone() == (11,)


def test_limiter_per_client_and_window() -> None:
    now = [0.0]
    limiter = AnswerLimiter(per_link=2, per_client=3, window_s=60, clock=lambda: now[0])
    assert limiter.allow("a", "1.2.3.4")
    assert limiter.allow("a", "1.2.3.4")
    assert not limiter.allow("a", "1.2.3.4")  # the link's allowance
    assert limiter.allow("b", "1.2.3.4")
    assert not limiter.allow("c", "1.2.3.4")  # the client's allowance, whatever the link
    assert limiter.allow("c", "5.6.7.8")
    now[0] = 61.0
    assert limiter.allow("a", "1.2.3.4")  # the window moved on


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_forged_altered_expired_links(dsn: str, client: httpx.AsyncClient, lang: str) -> None:
    seed(dsn)
    good = token(lang=lang)
    forged = issue(b"another secret", AlertGrant(ALARM, 0, lang, datetime.now(UTC) + timedelta(1)))
    altered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    expired = token(lang=lang, ttl_s=-120)
    bodies = []
    for bad, status in ((forged, 404), (altered, 404), ("nonsense!", 404), (expired, 410)):
        page = (await get(client, f"/a/{bad}", status)).text
        for secret_thing in ("老王饭店", "燃气泄漏", "Gas leak", ALARM, "r-0001", "Xuhui"):
            assert secret_thing not in page
        assert "如果您闻到燃气味" in page
        assert "If you smell gas" in page
        bodies.append(page)
        assert (await get(client, f"/a/{bad}/status", status)).json() == {"valid": False}
        answered = await client.post(f"/a/{bad}/answer", data={"answer": "left"})
        assert answered.status_code == status
    assert bodies[0] == bodies[1] == bodies[2]  # forged or altered: one page, nothing told
    assert "此链接已失效" in bodies[0]
    assert "This link is no longer valid" in bodies[0]
    assert "此链接已过期" in bodies[3]
    assert "This link has expired" in bodies[3]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM timeline").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM site_answers").fetchone() == (0,)


async def test_no_secret_configured_means_no_valid_link(
    dsn: str, pool: AsyncConnectionPool[Any]
) -> None:
    seed(dsn)
    transport = httpx.ASGITransport(app=app_for(pool, secret=""))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        page = (await get(http, f"/a/{token()}", 404)).text
    assert "老王饭店" not in page


async def test_a_maintenance_alarm_is_calm(dsn: str, client: httpx.AsyncClient) -> None:
    seed(dsn, alarm_type="low_battery", valve_state=None, category="maintenance")
    page = (await get(client, f"/a/{token()}")).text
    assert "燃气设备需要检修" in page
    assert word("alarm_type", "low_battery", "zh") in page
    assert "请立即离开" not in page
    assert "切断" not in page  # no valve to speak of: no red box
    assert "拨打燃气公司电话 95158" in page
    assert "请给我回电话" in page
    assert "所有人已撤离" not in page


async def test_served_by_the_control_rooms_app(dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    """The one line in ``central.api.create_app``: the page reads the control room's context."""
    from central.api.app import create_app  # noqa: PLC0415
    from central.notify import Hub  # noqa: PLC0415

    seed(dsn)
    settings = SimpleNamespace(
        silent_after_s=60.0, timezone="Asia/Shanghai", alert_secret=SecretStr(SECRET), hotline=""
    )
    app = create_app(pool, settings, Hub(dsn))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        page = await http.get(f"/a/{token()}")
        assert page.status_code == 200
        assert "老王饭店" in page.text
        assert 'href="tel:119"' in page.text  # no hotline configured: 119
        assert '<meta name="referrer" content="no-referrer">' in page.text
        assert page.headers["referrer-policy"] == "no-referrer"  # the control room's kept out
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert (await http.get("/static/alert.js")).status_code == 200
        answered = await http.post(f"/a/{token()}/answer", data={"answer": "false_alarm"})
        assert answered.status_code == 303


async def test_a_closed_alarm_does_not_send_people_running(
    dsn: str, client: httpx.AsyncClient
) -> None:
    seed(dsn, state="closed", resolved_at=local(12, 50), cause="loose_connection",
         closed_at=local(12, 55), active=False)  # fmt: skip
    page = (await get(client, f"/a/{token(lang='en')}")).text
    assert "This alarm is over" in page
    assert "Leave now!" not in page
    assert "Dealt with by the gas company at 12:50: loose connection" in page
    assert "This alarm is closed" in page
    assert "Call the gas company: 95158" in page
    assert "NOT shut off" not in page
    assert "no longer senses gas" not in page
    assert "Call me" in page
    assert "Everyone has left" not in page


async def test_an_answer_while_the_alarm_is_being_stored(
    dsn: str, client: httpx.AsyncClient
) -> None:
    """The alarm's transaction has inserted it but not committed when the answer comes: the
    answer waits for it (the trigger's lock) and lands on the timeline once, never stranded."""
    with psycopg.connect(dsn) as ingest:  # a transaction left open, like ingest mid-batch
        row = ingest.execute(
            "INSERT INTO incidents (kind, category, gateway_id, site_id, severity, title,"
            " opened_at, updated_at) VALUES ('site', 'emergency', 'gw1', 'r-0001', 'critical',"
            " '{}', now(), now()) RETURNING incident_id"
        ).fetchone()
        assert row is not None
        ingest.execute(
            "INSERT INTO alarms (alarm_id, gateway_id, site_id, incident_id, revision, alarm_type,"
            " severity, state, active, event, raised_at, updated_at) VALUES (%s, 'gw1', 'r-0001',"
            " %s, 1, 'leak_low', 'high', 'unack_active', true, %s, now(), now())",
            (ALARM, row[0], json.dumps(event("leak_low", None))),
        )
        answering = asyncio.create_task(
            client.post(f"/a/{token()}/answer", json={"answer": "left"})
        )
        await asyncio.sleep(0.5)
        assert not answering.done()  # held by the alarm's transaction
        ingest.commit()
        response = await asyncio.wait_for(answering, 10)
    assert response.json()["at_center"] is True
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT incident_id, kind FROM timeline").fetchall() == [
            (row[0], "site_answer")
        ]
        assert conn.execute("SELECT count(*) FROM site_answers").fetchone() == (0,)


async def test_without_the_database_the_page_still_says_what_to_do(dsn: str) -> None:
    closed: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, open=False)  # never opened
    transport = httpx.ASGITransport(app=app_for(closed))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        page = (await get(http, f"/a/{token()}")).text
        assert "所有人立即离开" in page
        assert "正在通知燃气公司" in page
        assert (await get(http, f"/a/{token()}/status", 503)).json() == {"error": "try again"}
        answered = await http.post(f"/a/{token()}/answer", data={"answer": "need_help"})
        assert answered.status_code == 503
        assert "没能发送您的答复" in answered.text
        assert HOTLINE in answered.text


async def test_the_ingest_of_the_alarm_attaches_an_early_answer(
    dsn: str, pool: AsyncConnectionPool[Any], client: httpx.AsyncClient
) -> None:
    """The real path: answered from the SMS link first, then the gateway's event is ingested."""
    from central.inbound import parse  # noqa: PLC0415
    from central.ingest import Ingest  # noqa: PLC0415

    answered = await client.post(f"/a/{token()}/answer", json={"answer": "left"})
    assert answered.json()["at_center"] is False
    body = event("leak_high", "closed") | {
        "schema": "gasgate/gasco/alarm-event/1", "gateway_id": "gw1", "revision": 1,
        "alarm_revision": 1, "transition": "raised", "state": "unack_active", "active": True,
        "latched": True, "severity": "critical", "message": "gas at 55 %LEL", "source": "d1",
        "device_id": "d1", "rule_id": "leak.high", "readings": {"lel_pct": 55.0},
        "valves": [{"device_id": "v1", "state": "closed"}], "escalation": None, "by": None,
        "note": None, "suppressed": False,
        "times": {"raised_at": "2026-11-28T10:00:00+00:00",
                  "updated_at": "2026-11-28T10:00:00+00:00", "acked_at": None,
                  "cleared_at": None, "closed_at": None,
                  "event_at": "2026-11-28T10:00:00+00:00"},
    }  # fmt: skip
    inbound = parse("gasco/v1", "gasco/v1/gw1/alarms/events", json.dumps(body).encode())
    await Ingest(pool, "test").apply([inbound])
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT t.actor, t.detail ->> 'answer' FROM timeline AS t"
            " JOIN alarms AS a USING (incident_id) WHERE t.kind = 'site_answer'"
        ).fetchall()
    assert rows == [(f"site contact #1 {NAMES[0]}", "left")]
    status = (await get(client, f"/a/{token()}/status")).json()
    assert status["valve_closed"] is True
    assert [a[-6:] for a in status["answers"]] == ["所有人已撤离"]


class _Text(HTMLParser):
    """What a person reads: text outside tags, scripts and styles, plus button labels."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def readable(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


@pytest.mark.parametrize(
    ("alarm_type", "valve", "state", "category"),
    [
        ("leak_high", "closed", "dispatched", "emergency"),
        ("valve_failed_to_close", "open", "new", "emergency"),
        ("overflow", None, "on_site", "emergency"),
        ("low_battery", None, "new", "maintenance"),
        ("leak_low", "closed", "closed", "emergency"),
    ],
)
async def test_every_word_in_its_language(
    dsn: str, client: httpx.AsyncClient, alarm_type: str, valve: str | None, state: str,
    category: str,
) -> None:  # fmt: skip
    """No raw code and no English in the Chinese page; no Chinese in the English one (the
    site's own name and the other language's link apart)."""
    seed(dsn, alarm_type=alarm_type, valve_state=valve, category=category, state=state,
         acknowledged_at=local(9, 1), dispatched_at=local(9, 2), eta=local(9, 30),
         on_site_at=local(9, 20), resolved_at=local(9, 40), cause="other",
         closed_at=local(9, 45))  # fmt: skip
    for url in (f"/a/{token()}", f"/a/{token()}?thanks=false_alarm", f"/a/{token()}xx"):
        zh = readable((await client.get(url)).text).replace("老王饭店", "")
        zh = zh.replace("English", "").replace("This link is no longer valid", "")
        zh = zh.split("If you smell gas")[0]  # the invalid page says it in both languages
        assert not re.findall(r"[A-Za-z_]{2,}", zh), zh
    for url in (f"/a/{token(lang='en')}", f"/a/{token(lang='en')}?thanks=need_help"):
        en = readable((await client.get(url)).text).replace("老王饭店", "").replace("中文", "")
        assert not re.findall(r"[\u4e00-\u9fff]", en), en
        assert not re.findall(r"\b[a-z]+_[a-z_]+\b", en), en  # no codes


# -- on a phone, in a real browser --------------------------------------------------------------

PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture
async def served(pool: AsyncConnectionPool[Any]) -> AsyncIterator[str]:
    """A real HTTP server on a free port (the page's script polls it every half second)."""
    app = FastAPI()
    app.state.alert_page = AlertPage(pool, SECRET.encode(), HOTLINE, poll_s=0.5)
    app.include_router(alert_page.router)
    app.mount("/static", StaticFiles(directory=alert_page.__file__.rsplit("/", 1)[0] + "/static"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def shot(page: Page, tmp_path: Path, name: str, *, full: bool = True) -> None:
    path = tmp_path / f"alert-{name}.png"
    await page.screenshot(path=str(path), full_page=full)
    shutil.copy(path, f"/tmp/alert-{name}.png")


async def test_on_a_phone_in_zh_then_en(
    dsn: str, served: str, tmp_path: Path, browser: Browser
) -> None:
    """The household opens the SMS link on a phone, sees the technician dispatched without a
    reload, taps "everyone has left"; then English, and the invalid pages."""
    now = datetime.now(UTC)
    incident = seed(dsn, state="acknowledged", acknowledged_at=now - timedelta(minutes=1))
    phone = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
        locale="zh-CN", timezone_id="Asia/Shanghai",
    )  # fmt: skip
    page = await phone.new_page()
    await page.goto(f"{served}/a/{token()}")
    await shot(page, tmp_path, "1-zh-first-screen", full=False)
    await shot(page, tmp_path, "2-zh-whole-page")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the officer dispatches a crew
        conn.execute(
            "UPDATE incidents SET state = 'dispatched', dispatched_at = now(), crew = 'Crew 3',"
            " eta = %s WHERE incident_id = %s",
            (local(12, 30), incident),
        )
    await expect(page.locator("#steps")).to_contain_text("预计 12:30 到达", timeout=5000)
    await shot(page, tmp_path, "3-zh-dispatched-live")
    await page.get_by_role("button", name="所有人已撤离").tap()
    await page.wait_for_url("**thanks=left**")
    await expect(page.locator(".thanks")).to_contain_text("已收到：所有人已撤离")  # noqa: RUF001
    await expect(page.locator("#told")).to_contain_text("所有人已撤离")
    await shot(page, tmp_path, "4-zh-answered", full=False)
    with psycopg.connect(dsn) as conn:
        told = conn.execute("SELECT detail ->> 'answer' FROM timeline").fetchall()
    assert told == [("left",)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE incidents SET valve_state = 'open'")
    await page.goto(f"{served}/a/{token(contact=1, lang='en')}")
    await expect(page.locator("#valve")).to_contain_text("NOT shut off yet")
    await shot(page, tmp_path, "5-en-valve-open")
    await page.goto(f"{served}/a/{token(alarm='gw9-01M8H09XPA38TN4GSSMJYWZEA9')}")
    await expect(page.locator("#steps")).to_contain_text("正在通知燃气公司")
    await shot(page, tmp_path, "6-zh-not-at-center-yet")
    await page.goto(f"{served}/a/{token()[:-2]}xx")
    await shot(page, tmp_path, "7-invalid")
    await page.goto(f"{served}/a/{token(ttl_s=-60)}")
    await shot(page, tmp_path, "8-expired")
    no_personal_data(await page.content())
