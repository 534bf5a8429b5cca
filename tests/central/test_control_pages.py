"""The control room's pages: login, the queue in two tabs with counts and the valve in words,
the incident page with its forms, a refused step as a page in the user's language with the note
kept, language by ``?lang=`` or Accept-Language; and ``gasgate central user``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from click.testing import CliRunner

from central.api import create_app
from central.cli import central
from tests.central.control_seed import PASSWORD, City, Settings, city_app


@pytest.fixture
async def city(pg_dsn: str) -> AsyncIterator[City]:
    async with city_app(pg_dsn) as c:
        yield c


async def _login(client: httpx.AsyncClient, name: str = "wang") -> str:
    answer = await client.post("/login", data={"name": name, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    page = await client.get("/")
    found = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_a_page_without_a_session_is_the_login_form(city: City) -> None:
    async with city.client() as browser:
        page = await browser.get("/")
        assert page.status_code == 401
        assert 'action="/login"' in page.text
        assert "登录" in page.text
        wrong = await browser.post("/login", data={"name": "wang", "password": "not it at all"})
        assert wrong.status_code == 401
        assert "用户名或密码不对" in wrong.text


async def test_the_queue_in_two_tabs_with_words_not_codes(city: City) -> None:
    async with city.client() as browser:
        await _login(browser)
        page = (await browser.get("/")).text
        assert 'id="count-emergency">2<' in page
        assert 'id="count-maintenance">1<' in page
        assert "紧急事件" in page
        assert "维护事项" in page
        assert "已关闭" in page  # the valve, in words
        assert "valve-closed" in page  # and colour
        for row in re.findall(r'<tr class="incident.*?</tr>', page, re.S):  # right after "what"
            cells = re.findall(r'<td data-label="([^"]*)"', row)
            assert cells[:3] == ["级别", "内容", "阀门"], cells
        assert "新事件" in page
        assert "燃气泄漏" in page  # leak types by their SMS titles
        for code in ("leak_high", "unack_active", "duty_officer"):
            assert code not in re.sub(r'(class|data-[a-z]+)="[^"]*"', "", page), code
        english = (await browser.get("/?lang=en")).text
        assert "Emergencies" in english
        assert "Maintenance" in english
        assert "closed" in english
        again = (await browser.get("/")).text  # the choice is kept in a cookie
        assert "Emergencies" in again
        assert 'id="sound-banner"' in again
        sound = await browser.get("/sound/alarm.wav")
        assert sound.status_code == 200
        assert sound.headers["content-type"] == "audio/wav"


async def test_accept_language_picks_english(city: City) -> None:
    async with city.client() as browser:
        page = await browser.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"})
        assert "Log in" in page.text


async def test_live_rows_for_the_stream(city: City) -> None:
    async with city.client() as browser:
        await _login(browser)
        rows = (await browser.get(f"/console/rows?ids={city.maintenance}")).text
        assert rows.count("<tr") == 1
        assert f'data-id="{city.maintenance}"' in rows
        assert 'data-category="maintenance"' in rows
    async with city.client() as stranger:
        assert (await stranger.get("/console/rows")).status_code == 401


async def test_each_valve_as_strongly_as_the_events_say(city: City) -> None:
    """A valve reported closed: "closed, confirmed" with the time of the event that first said
    so (the queue's row, its live patch and the incident page); one never heard from; one open
    after the gateway's close commands, the count from the valve_failed_to_close alarm. An "ok"
    to a command is never "closed"."""
    city.rows(
        "INSERT INTO alarms (alarm_id, gateway_id, site_id, incident_id, revision, alarm_type,"
        " severity, state, active, valve_state, event, raised_at, updated_at) VALUES"
        " ('gw1-a9', 'gw1', 'r1', %s, 1, 'valve_failed_to_close', 'critical', 'unack_active',"
        " true, 'open', %s, now(), now()) RETURNING 1",
        city.emergency,
        json.dumps({
            "device_id": "valve-2", "readings": {"tries": 3, "valve_state": "open"},
            "valves": [{"device_id": "valve-2", "state": "open"}],
            "times": {"event_at": "2026-12-04T04:03:09+00:00"},
        }),
    )  # fmt: skip
    for revision, state, at in ((1, "open", "04:03:00"), (2, "closed", "04:03:05"),
                                (3, "closed", "04:03:07")):  # fmt: skip
        event = {"valves": [{"device_id": "valve-1", "state": state}],
                 "times": {"event_at": f"2026-12-04T{at}+00:00"}}  # fmt: skip
        city.rows(
            "INSERT INTO alarm_events (alarm_id, revision, gateway_id, transition, received_at,"
            " received_by, event) VALUES ('gw1-a2', %s, 'gw1', 'valve_changed', now(), 't', %s)"
            " RETURNING 1",
            revision,
            json.dumps(event),
        )
    async with city.client() as browser:
        await _login(browser)
        row = (await browser.get("/")).text
        page = (await browser.get(f"/incidents/{city.emergency}")).text
        english = (await browser.get(f"/incidents/{city.emergency}?lang=en")).text
        upkeep = (await browser.get(f"/console/rows?ids={city.maintenance}")).text
        patch = (await browser.get(f"/console/rows?ids={city.emergency}&lang=en")).text
    assert 'class="valve ' not in upkeep  # a low battery's valves: how a kitchen works, not news
    assert "仍开启：3 次关阀指令未换来“已关闭”" in row  # noqa: RUF001
    assert "阀门未上报状态" in row  # "bad" listed with no state
    assert '<div class="valve valve-closed" data-valve="valve-1">' in row
    assert "已关闭，12:03:05 北京时间 确认" in row  # noqa: RUF001 - the queue says when, too
    assert "closed, confirmed 12:03:05 Beijing time" in patch
    assert "已关闭，12:03:05 北京时间 确认" in page  # noqa: RUF001 - Asia/Shanghai
    assert "closed, confirmed 12:03:05 Beijing time" in english
    # One label per language: the header's is the one every time on the page carries.
    assert "时间：北京时间" in page  # noqa: RUF001
    assert "Times: Beijing time" in english
    for said in (row, page, english, patch):
        assert "CST" not in said
    assert "OPEN — 3 close commands not answered with closed" in english


async def test_a_run_of_valve_changes_is_one_line_and_commands_name_alarm_types(
    city: City,
) -> None:
    """A stuck valve's five reports, repeated by both alarms: one line saying how often and
    what it is now (its ten lines behind it; all ten on the printable record). Commands name
    the alarm's type and its number in the incident, not its id."""
    states = ("open", "moving", "open", "moving", "open")
    for n, state in enumerate(states, 2):
        for alarm in ("gw1-a1", "gw1-a2"):
            event = {"valves": [{"device_id": "valve-1", "state": state}]}
            city.rows(
                "INSERT INTO alarm_events (alarm_id, revision, gateway_id, transition,"
                " received_at, received_by, event) VALUES (%s, %s, 'gw1', 'valve_changed', now(),"
                " 't', %s) RETURNING 1",
                alarm, n, json.dumps(event),
            )  # fmt: skip
            said = {"alarm_id": alarm, "revision": n, "transition": "valve_changed",
                    "alarm_type": "leak_low", "state": "unack_active"}  # fmt: skip
            city.rows(
                "INSERT INTO timeline (incident_id, at, kind, detail) VALUES"
                " (%s, now() + %s * interval '1 second', 'alarm_event', %s) RETURNING 1",
                city.emergency, n, json.dumps(said),
            )  # fmt: skip
    async with city.client() as browser:
        csrf = await _login(browser)
        path = f"/incidents/{city.emergency}"
        await browser.post(f"{path}/acknowledge", data={"csrf": csrf})
        page = (await browser.get(path)).text
        record = (await browser.get(f"/console/incidents/{city.emergency}/record")).text
    assert page.count('class="kind-alarm_event valve-run"') == 1
    assert "阀门状态变化 10 条" in page
    assert "valve-1 变化 5 次，现为开启" in page  # noqa: RUF001
    assert page.count('<li class="kind-alarm_event">') == 10  # behind the line, expandable
    assert "valve-run" not in record
    assert record.count('<li class="kind-alarm_event">') == 10
    assert '燃气泄漏(高报) <small title="gw1-a2">#2</small>' in page  # the command rows
    assert ">gw1-a2<" not in page


async def test_a_command_is_one_line_whose_state_moves(city: City) -> None:
    """Queued, sent and answered are three entries of the timeline; the page says each command
    once, at its first time, with the time of each step; the record keeps all three."""
    for cmd, answer in (
        ("gc-1", {"accepted": True}),
        ("gc-2", {"accepted": False, "reason": "not_active"}),
    ):
        said = {"cmd_id": cmd, "alarm_id": "gw1-a2", "action": "acknowledge"}
        for second, kind, detail in ((1, "command", said), (2, "command", said | {"event": "sent"}),
                                     (4, "reply", said | answer)):  # fmt: skip
            city.rows(
                "INSERT INTO timeline (incident_id, at, kind, actor, detail) VALUES"
                " (%s, '2026-12-04T04:03:00Z'::timestamptz + %s * interval '1 second', %s,"
                " 'wang', %s) RETURNING 1",
                city.emergency, second, kind, json.dumps(detail),
            )  # fmt: skip
    async with city.client() as browser:
        await _login(browser)
        page = (await browser.get(f"/incidents/{city.emergency}")).text
        english = (await browser.get(f"/incidents/{city.emergency}?lang=en")).text
        record = (await browser.get(f"/console/incidents/{city.emergency}/record")).text
    assert page.count('<li class="kind-command"') == 2
    assert 'class="kind-reply"' not in page
    steps = "{} <time>12:03:01</time> → {} <time>12:03:02</time> → {} <time>12:03:04</time>"
    assert steps.format("已排队", "已发出", "网关已执行") in page
    assert steps.format("queued", "sent", "done by the gateway") in english
    assert '<b class="bad">refused by the gateway</b>' in english
    assert record.count('<li class="kind-command"') == 4
    assert record.count('<li class="kind-reply"') == 2


async def test_the_officer_steps_from_the_incident_page(city: City) -> None:
    async with city.client() as browser:
        csrf = await _login(browser)
        page = (await browser.get(f"/incidents/{city.emergency}")).text
        assert "老王饭店" in page
        assert 'href="tel:13800000001"' in page
        assert "接警" in page
        path = f"/incidents/{city.emergency}"
        no_csrf = await browser.post(f"{path}/acknowledge", data={"note": "x"})
        assert no_csrf.status_code == 403
        done = await browser.post(f"{path}/acknowledge", data={"csrf": csrf, "note": "calling"})
        assert done.status_code == 303
        again = await browser.post(f"{path}/acknowledge", data={"csrf": csrf, "note": "my note"})
        assert again.status_code == 409
        assert "已由 wang 于" in again.text
        assert "接警" in again.text
        assert 'value="my note"' in again.text  # the note is kept
        assert 'href="/"' in again.text  # the way back
        no_crew = await browser.post(f"{path}/dispatch", data={"csrf": csrf, "crew": " "})
        assert no_crew.status_code == 422
        assert "请填写处置人员" in no_crew.text
        late = await browser.post(
            f"{path}/dispatch", data={"csrf": csrf, "crew": "Team 3", "eta_minutes": "soon"}
        )
        assert late.status_code == 422
        assert 'value="Team 3"' in late.text  # what was typed stays
        sent = await browser.post(
            f"{path}/dispatch", data={"csrf": csrf, "crew": "Team 3", "eta_minutes": "15"}
        )
        assert sent.status_code == 303
        waiting = (await browser.get(path)).text  # leak_high still active: no resolve button
        assert 'data-waits="燃气泄漏(高报)仍在报警（探测器 det-1）' in waiting  # noqa: RUF001
        assert re.search(r'<p class="waits">燃气泄漏\(高报\)仍在报警[^<]*</p>', waiting)
        assert "<button hidden>处置完毕</button>" in waiting
        early = await browser.post(
            f"{path}/resolve", data={"csrf": csrf, "cause": "loose_connection", "note": "拧紧了"}
        )
        assert early.status_code == 409
        assert "燃气泄漏(高报)仍在报警" in early.text
        assert 'value="拧紧了"' in early.text  # the note is kept
        assert 'href="/"' in early.text  # the way back
        english = (await browser.get(f"{path}?lang=en")).text
        assert "Gas leak (high level) is still active (detector det-1)" in english
        city.rows("UPDATE alarms SET active = false WHERE alarm_id = 'gw1-a2' RETURNING 1")
        assert 'data-waits=""' in (await browser.get(f"{path}?lang=zh-CN")).text
        resolved = await browser.post(
            f"{path}/resolve", data={"csrf": csrf, "cause": "loose_connection"}
        )
        assert resolved.status_code == 303
        live = (await browser.get(f"{path}/live")).text
        assert "接口松动" in live  # the cause in words
        assert "Team 3" in live
        assert "待发送" in live  # commands not yet taken by the broker
        english = (await browser.get(f"{path}/live?lang=en")).text
        assert "loose connection" in english


async def test_a_regulator_gets_no_forms(city: City) -> None:
    async with city.client() as browser:
        await _login(browser, "zhao")
        page = (await browser.get(f"/incidents/{city.emergency}")).text
        assert '<form method="post" action="/incidents/' not in page
        assert "tel:" not in page


def test_users_cli(city_dsn: str) -> None:
    runner = CliRunner()
    added = runner.invoke(
        central,
        ["user", "add", "chen", "--role", "duty_officer", "--db", city_dsn, "--password-stdin",
         "--district", "Xuhui", "--district", "Minhang"],
        input="a long enough password\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "chen added: duty_officer in Minhang, Xuhui" in added.output
    twice = runner.invoke(
        central, ["user", "add", "chen", "--role", "supervisor", "--db", city_dsn,
                  "--password-stdin"], input="a long enough password\n",
    )  # fmt: skip
    assert twice.exit_code != 0
    assert "already exists" in twice.output
    short = runner.invoke(
        central, ["user", "add", "lin", "--role", "regulator", "--db", city_dsn,
                  "--password-stdin"], input="short\n",
    )  # fmt: skip
    assert "at least 10 characters" in short.output
    site_user = runner.invoke(
        central, ["user", "add", "x", "--role", "site_user", "--db", city_dsn, "--password-stdin"],
        input="a long enough password\n",
    )  # fmt: skip
    assert site_user.exit_code != 0
    token = runner.invoke(central, ["user", "token", "chen", "--db", city_dsn])
    assert token.exit_code == 0
    assert token.output.startswith("ggc_")
    nobody = runner.invoke(central, ["user", "token", "nobody", "--db", city_dsn])
    assert nobody.exit_code != 0
    assert "no user nobody" in nobody.output


@pytest.fixture
def city_dsn(pg_dsn: str) -> str:
    from central.db import upgrade  # noqa: PLC0415

    upgrade(pg_dsn)
    return pg_dsn


async def test_a_cli_token_works_at_the_api(city: City) -> None:
    runner = CliRunner()
    runner.invoke(
        central, ["user", "add", "chen", "--role", "supervisor", "--db", city.dsn,
                  "--password-stdin", "--district", "Minhang"], input="a long enough password\n",
    )  # fmt: skip
    token = runner.invoke(central, ["user", "token", "chen", "--db", city.dsn]).output.strip()
    async with city.client() as client:
        me = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"name": "chen", "role": "supervisor", "districts": ["Minhang"]}


async def test_a_session_opened_at_one_instance_works_at_another(city: City) -> None:
    other = create_app(city.pool, Settings(), city.hub)  # a second instance, same database
    transport = httpx.ASGITransport(app=other)
    async with (
        city.client() as at_a,
        httpx.AsyncClient(transport=transport, base_url="http://center") as at_b,
    ):
        csrf = await _login(at_a)
        at_b.cookies = at_a.cookies
        assert (await at_b.get("/api/me")).json()["name"] == "wang"
        path = f"/api/incidents/{city.offline}/acknowledge"
        answer = await at_b.post(path, json={}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 200
        assert (await at_b.post("/logout", data={"csrf": csrf})).status_code == 303
        assert (await at_a.get("/api/me")).status_code == 401
    assert city.rows("SELECT count(*) FROM sessions") == [(0,)]
