"""The center's API on a real PostgreSQL: who may do what, the officer lifecycle with its gateway
commands and its refusals, district limits, gateways and sites, operations endpoints."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg
import pytest

from central.users import issue_token
from tests.central.control_seed import PASSWORD, City, city_app


@pytest.fixture
async def city(pg_dsn: str) -> AsyncIterator[City]:
    async with city_app(pg_dsn) as c:
        yield c


async def test_no_token_is_401_and_an_unknown_token_too(city: City) -> None:
    async with city.client() as anyone:
        assert (await anyone.get("/api/incidents")).status_code == 401
        answer = await anyone.get("/api/incidents", headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401


async def test_a_regulator_reads_without_phones_but_may_not_acknowledge(city: City) -> None:
    async with city.client("zhao") as zhao:
        listed = (await zhao.get("/api/incidents")).json()
        assert {i["incident_id"] for i in listed} == {
            city.emergency,
            city.maintenance,
            city.offline,
        }
        detail = (await zhao.get(f"/api/incidents/{city.emergency}")).json()
        assert detail["contacts"] == [
            {"name": "王老板", "phone": None, "role": "owner", "lang": "zh"}
        ]
        answer = await zhao.post(f"/api/incidents/{city.emergency}/acknowledge", json={})
        assert answer.status_code == 403
    async with city.client("wang") as wang:
        detail = (await wang.get(f"/api/incidents/{city.emergency}")).json()
        assert detail["contacts"][0]["phone"] == "13800000001"
        assert detail["alarm_details"][0]["valves"] == [
            {"device_id": "valve-1", "state": "closed"},
            {"device_id": "bad", "state": None},
        ]


async def test_a_session_writes_only_with_its_csrf_token(city: City) -> None:
    async with city.client() as browser:
        bad = await browser.post("/api/login", json={"name": "wang", "password": "wrong one!"})
        assert bad.status_code == 401
        login = await browser.post("/api/login", json={"name": "wang", "password": PASSWORD})
        assert login.status_code == 200, login.text
        csrf = login.json()["csrf"]
        assert (await browser.get("/api/incidents")).status_code == 200  # reads need none
        path = f"/api/incidents/{city.emergency}/acknowledge"
        assert (await browser.post(path, json={})).status_code == 403
        wrong = await browser.post(path, json={}, headers={"X-CSRF-Token": "x" + csrf})
        assert wrong.status_code == 403
        done = await browser.post(path, json={"note": "on it"}, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        assert done.json()["acknowledged_by"] == "wang"


async def test_the_list_says_what_an_officer_needs(city: City) -> None:
    async with city.client("wang") as wang:
        listed = (await wang.get("/api/incidents")).json()
        first = listed[0]
        assert first["incident_id"] in (city.emergency, city.offline)  # critical first
        leak = next(i for i in listed if i["incident_id"] == city.emergency)
        assert leak["alarms"] == ["gw1-a1", "gw1-a2"]
        assert leak["valve_state"] == "closed"
        assert leak["category"] == "emergency"
        assert leak["kind"] == "site"
        assert leak["site_name"] == "老王饭店"
        assert leak["district"] == "Xuhui"
        assert leak["state"] == "new"
        emergencies = (await wang.get("/api/incidents?category=emergency")).json()
        assert {i["incident_id"] for i in emergencies} == {city.emergency, city.offline}
        assert [i["incident_id"] for i in (await wang.get("/api/incidents?q=13800000")).json()] == [
            city.emergency
        ]
        by_device = (await wang.get("/api/incidents?q=det-1")).json()
        assert {i["incident_id"] for i in by_device} == {city.emergency, city.maintenance}
        by_name = (await wang.get("/api/incidents?q=老王")).json()
        assert [i["incident_id"] for i in by_name] == [city.emergency]
        minhang = (await wang.get("/api/incidents?district=Minhang")).json()
        assert [i["incident_id"] for i in minhang] == [city.offline]
    async with city.client("zhao") as zhao:  # no phones: no search by phone either
        assert (await zhao.get("/api/incidents?q=13800000")).json() == []


async def test_the_queue_puts_what_is_still_to_do_before_the_resolved(city: City) -> None:
    """A critical incident resolved (its alarms cleared, not yet closed at the gateway) sorts
    after a low one still to be dealt with, in the list and in the console's live rows."""
    city.rows(
        "UPDATE alarms SET active = false, state = 'unack_cleared' WHERE incident_id = %s"
        " RETURNING 1",
        city.emergency,
    )
    path = f"/api/incidents/{city.emergency}"
    async with city.client("wang") as wang:
        before = [i["incident_id"] for i in (await wang.get("/api/incidents")).json()]
        assert before.index(city.emergency) < before.index(city.maintenance)  # critical first
        await wang.post(f"{path}/acknowledge", json={})
        done = await wang.post(f"{path}/resolve", json={"cause": "loose_connection"})
        assert done.json()["state"] == "resolved"
        after = [i["incident_id"] for i in (await wang.get("/api/incidents")).json()]
        rows = (await wang.get("/console/rows")).text
    assert after == [city.offline, city.maintenance, city.emergency]
    ranks = dict(re.findall(r'data-id="(\d+)"[^>]*data-rank="(\d+)"', rows))
    assert ranks == {str(city.offline): "0", str(city.maintenance): "3", str(city.emergency): "5"}


async def test_acknowledge_queues_one_command_per_unacknowledged_alarm(city: City) -> None:
    async with await psycopg.AsyncConnection.connect(city.dsn, autocommit=True) as listener:
        await listener.execute("LISTEN gasgate_central_cmd")
        async with city.client("wang") as wang:
            answer = await wang.post(
                f"/api/incidents/{city.emergency}/acknowledge", json={"note": "calling"}
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["state"] == "acknowledged"
        commands = body["commands"]
        assert sorted(c["alarm_id"] for c in commands) == ["gw1-a1", "gw1-a2"]
        assert {(c["action"], c["officer"], c["status"], c["note"]) for c in commands} == {
            ("acknowledge", "wang", "pending", "calling")
        }
        woken = set()
        async for note in listener.notifies(timeout=5, stop_after=2):
            woken.add(note.payload)
        assert woken == {c["cmd_id"] for c in commands}
    rows = city.rows("SELECT gateway_id, incident_id, sent_at FROM commands ORDER BY alarm_id")
    assert rows == [("gw1", city.emergency, None)] * 2
    kinds = [(e["kind"], e["actor"]) for e in body["timeline"]]
    assert kinds == [("transition", "wang"), ("command", "wang"), ("command", "wang")]


async def test_a_step_from_the_wrong_state_is_409_with_the_reason(city: City) -> None:
    path = f"/api/incidents/{city.emergency}"
    async with city.client("wang") as wang:
        early = await wang.post(f"{path}/dispatch", json={"crew": "Team 3"})
        assert early.status_code == 409
        assert early.json()["detail"] == "not acknowledged yet: acknowledge it first"
        assert (await wang.post(f"{path}/on-site", json={})).status_code == 409
        assert (await wang.post(f"{path}/acknowledge", json={})).status_code == 200
        again = await wang.post(f"{path}/acknowledge", json={})
    assert again.status_code == 409
    refused = again.json()
    ((acked_at,),) = city.rows(
        "SELECT acknowledged_at FROM incidents WHERE incident_id = %s", city.emergency
    )
    local = acked_at.astimezone(ZoneInfo("Asia/Shanghai"))
    assert refused["detail"] == f"already acknowledged by wang at {local:%H:%M}"
    assert refused["reason"] == "already"
    assert refused["by"] == "wang"
    assert refused["words"]["zh-CN"] == f"已由 wang 于 {local:%H:%M} 接警"


async def test_the_lifecycle_to_closed(city: City) -> None:
    path = f"/api/incidents/{city.emergency}"
    async with city.client("wang") as wang:
        assert (await wang.post(f"{path}/acknowledge", json={})).status_code == 200
        bad = await wang.post(f"{path}/dispatch", json={"crew": "  "})
        assert bad.status_code == 422
        sent = await wang.post(f"{path}/dispatch", json={"crew": "Team 3", "eta_minutes": 20})
        assert sent.status_code == 200, sent.text
        assert sent.json()["crew"] == "Team 3"
        assert sent.json()["eta"] is not None
        assert (await wang.post(f"{path}/on-site", json={"note": "there"})).status_code == 200
        unknown = await wang.post(f"{path}/resolve", json={"cause": "gremlins"})
        assert unknown.status_code == 422
        city.rows(  # leak_high's gas is gone (leak_low cleared before)
            "UPDATE alarms SET active = false, state = 'unack_cleared' WHERE alarm_id = 'gw1-a2'"
            " RETURNING 1"
        )
        done = await wang.post(
            f"{path}/resolve", json={"cause": "loose_connection", "note": "fixed"}
        )
        assert done.status_code == 200, done.text
        body = done.json()
        # both cleared, not closed: resolved at the gateway, which closes them
        resolves = [c for c in body["commands"] if c["action"] == "resolve"]
        assert sorted(c["alarm_id"] for c in resolves) == ["gw1-a1", "gw1-a2"]
        assert body["state"] == "resolved"  # alarms still open at the gateway
        assert body["cause"] == "loose_connection"
        assert body["resolution_note"] == "fixed"
        steps = [
            e["detail"].get("transition") for e in body["timeline"] if e["kind"] == "transition"
        ]
        assert steps == ["acknowledge", "dispatch", "on_site", "resolve"]
        late = await wang.post(f"{path}/dispatch", json={"crew": "Team 4"})
        assert late.status_code == 409
        assert late.json()["detail"].startswith("already dispatched by wang at ")


async def test_no_resolve_while_an_alarm_is_still_active(city: City) -> None:
    """The detector still reads 55 %LEL: the resolve is refused with which alarm and what it
    reads, nothing changes and nothing goes to the gateway; the other steps go on."""
    city.rows(
        'UPDATE alarms SET event = event || \'{"readings": {"lel_pct": 55.0}}\''
        " WHERE alarm_id = 'gw1-a2' RETURNING 1"
    )
    path = f"/api/incidents/{city.emergency}"
    resolve = {"cause": "loose_connection", "note": "hose tightened"}
    async with city.client("wang") as wang:
        assert (await wang.post(f"{path}/acknowledge", json={})).status_code == 200
        refused = await wang.post(f"{path}/resolve", json=resolve)
        assert refused.status_code == 409
        said = refused.json()
        assert said["reason"] == "active"
        assert said["state"] == "acknowledged"
        assert said["detail"] == (
            "Gas leak (high level) is still active (detector det-1: 55 %LEL):"
            " resolve once it has cleared"
        )
        assert said["words"]["zh-CN"].startswith("燃气泄漏(高报)仍在报警（探测器 det-1，55 %LEL）")  # noqa: RUF001
        detail = (await wang.get(path)).json()
        assert detail["state"] == "acknowledged"
        assert detail["resolved_at"] is None
        assert [a["alarm_id"] for a in detail["still_active"]] == ["gw1-a2"]
        dispatched = await wang.post(f"{path}/dispatch", json={"crew": "Team 3"})
        assert dispatched.status_code == 200
        assert (await wang.post(f"{path}/on-site", json={})).status_code == 200
        assert (await wang.post(f"{path}/resolve", json=resolve)).status_code == 409
    assert city.rows("SELECT count(*) FROM commands WHERE action = 'resolve'") == [(0,)]


async def test_resolve_closes_an_incident_whose_alarms_are_all_closed(city: City) -> None:
    city.rows(
        "UPDATE alarms SET state = 'normal', active = false WHERE incident_id = %s RETURNING 1",
        city.emergency,
    )
    path = f"/api/incidents/{city.emergency}"
    async with city.client("wang") as wang:
        await wang.post(f"{path}/acknowledge", json={})
        done = await wang.post(f"{path}/resolve", json={"cause": "cooking_or_false_alarm"})
        assert done.json()["state"] == "closed"
        assert done.json()["commands"] == []  # nothing left to change at the gateway
        closed = await wang.post(f"{path}/acknowledge", json={})
        assert closed.status_code == 409
        assert closed.json()["detail"].startswith("the incident was closed at ")
        assert (await wang.get("/api/incidents")).json()[0]["incident_id"] != city.emergency
        all_ = (await wang.get("/api/incidents?state=all")).json()
        assert city.emergency in {i["incident_id"] for i in all_}


async def test_a_gateway_offline_incident_names_its_sites_and_sends_nothing(city: City) -> None:
    async with city.client("wang") as wang:
        detail = (await wang.get(f"/api/incidents/{city.offline}")).json()
        assert [s["site_id"] for s in detail["sites"]] == ["m1", "m2"]
        assert detail["alarms"] == []
        assert "Minhang" in detail["title"]["en"]
        answer = await wang.post(f"/api/incidents/{city.offline}/acknowledge", json={})
        assert answer.status_code == 200
        assert answer.json()["commands"] == []
    assert city.rows("SELECT count(*) FROM commands") == [(0,)]


async def test_a_district_limited_officer_sees_and_changes_only_their_district(city: City) -> None:
    async with city.client("li") as li:
        listed = (await li.get("/api/incidents?state=all")).json()
        assert [i["incident_id"] for i in listed] == [city.offline]
        assert (await li.get(f"/api/incidents/{city.emergency}")).status_code == 404
        answer = await li.post(f"/api/incidents/{city.emergency}/acknowledge", json={})
        assert answer.status_code == 404
        assert (
            await li.post(f"/api/incidents/{city.offline}/acknowledge", json={})
        ).status_code == 200
        gateways = (await li.get("/api/gateways")).json()
        assert [g["gateway_id"] for g in gateways] == ["gw2"]
        sites = (await li.get("/api/sites")).json()
        assert {s["site_id"] for s in sites} == {"m1", "m2"}
        assert (await li.get("/api/sites?district=Xuhui")).json() == []
    assert city.rows("SELECT state FROM incidents WHERE incident_id = %s", city.emergency) == [
        ("new",)
    ]


async def test_gateways_and_sites(city: City) -> None:
    async with city.client("zhao") as zhao:
        gateways = {g["gateway_id"]: g for g in (await zhao.get("/api/gateways")).json()}
        assert gateways["gw2"]["online"] is False
        assert gateways["gw1"]["online"] is True
        assert gateways["gw1"]["sites"] == 2
        assert gateways["gw1"]["silent"] is False
        assert gateways["gw1"]["last_seen"]
        sites = {s["site_id"]: s for s in (await zhao.get("/api/sites?district=Minhang")).json()}
        assert set(sites) == {"m1", "m2"}
        assert sites["m1"]["status"] == "unknown"  # its gateway is offline: never "protected"
        xuhui = (await zhao.get("/api/sites?district=Xuhui")).json()
        assert {s["status"] for s in xuhui} == {"protected"}
        assert {s["open_incidents"] for s in xuhui} == {1}


async def test_operations_endpoints(city: City) -> None:
    async with city.client() as anyone:
        assert (await anyone.get("/healthz")).json() == {"status": "alive"}
        ready = await anyone.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": True, "listen": True}
        metrics = (await anyone.get("/metrics")).text
        assert "gasgate_central_officer_steps" in metrics
        assert "gasgate_central_live_consoles 0.0" in metrics
        docs = await anyone.get("/docs")
        assert "/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text  # no CDN
        assert "unsafe-inline" in docs.headers["content-security-policy"]
        assert (await anyone.get("/vendor/swagger-ui/swagger-ui.css")).status_code == 200
        assert (await anyone.get("/openapi.json")).json()["info"]["title"] == "gasgate central"
        page_csp = (await anyone.get("/login")).headers["content-security-policy"]
        assert "script-src" not in page_csp  # pages run only their own script file
        await city.hub.stop()
        assert (await anyone.get("/readyz")).status_code == 503


async def test_audit_is_mounted_for_auditors_only(city: City) -> None:
    async with city.client("zhao") as zhao:
        answer = await zhao.get("/api/audit?format=json")
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.text)["schema"] == "gasgate/central/audit/1"
    async with city.client("wang") as wang:
        assert (await wang.get("/api/audit")).status_code == 403
    city.rows("INSERT INTO users (name, role, districts, created_at)"
              " VALUES ('qian', 'regulator', '{Minhang}', now()) RETURNING 1")  # fmt: skip
    async with city.client() as qian:
        with psycopg.connect(city.dsn, autocommit=True) as conn:
            token = issue_token(conn, "qian", datetime.now(UTC))
        qian.headers["Authorization"] = f"Bearer {token}"
        own = await qian.get("/api/audit?format=json")
        assert own.status_code == 200
        assert json.loads(own.text)["district"] == "Minhang"  # their one district, unasked
        assert (await qian.get("/api/audit?district=Xuhui")).status_code == 403
        csv = await qian.get("/api/audit?format=csv")
        assert csv.headers["content-disposition"].startswith("attachment;")


async def test_concurrent_acknowledgements_one_wins(city: City) -> None:
    path = f"/api/incidents/{city.emergency}/acknowledge"
    async with city.client("wang") as wang:
        answers = await asyncio.gather(*(wang.post(path, json={}) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert city.rows("SELECT count(*) FROM commands") == [(2,)]


async def test_an_alarm_joining_after_the_acknowledgement_is_acknowledged_again(
    city: City,
) -> None:
    path = f"/api/incidents/{city.emergency}"
    async with city.client("wang") as wang:
        first = (await wang.post(f"{path}/acknowledge", json={})).json()
        assert len(first["commands"]) == 2
        city.rows(
            "INSERT INTO alarms (alarm_id, gateway_id, site_id, incident_id, revision, alarm_type,"
            " severity, state, active, valve_state, event, raised_at, updated_at) VALUES"
            " ('gw1-a9', 'gw1', 'r1', %s, 1, 'valve_failed_to_close', 'critical', 'unack_active',"
            " true, 'open', '{}', now(), now()) RETURNING 1",
            city.emergency,
        )
        again = await wang.post(f"{path}/acknowledge", json={"note": "valve too"})
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["state"] == "acknowledged"
        assert body["again"] == []
        assert body["acknowledged_at"] == first["acknowledged_at"]  # the first one's time stays
        assert [c["alarm_id"] for c in body["commands"][2:]] == ["gw1-a9"]
        # every alarm now has its acknowledgement on the way: nothing more to send
        assert (await wang.post(f"{path}/acknowledge", json={})).status_code == 409
        assert (await wang.get(path)).json()["again"] == []


async def test_an_alarm_clearing_after_the_resolve_is_resolved_again(city: City) -> None:
    """The leak came back just after the resolve (its event raced the resolve): the gateway
    refused that alarm's resolve; once it clears again, the resolve is offered again."""
    path = f"/api/incidents/{city.emergency}"
    city.rows("UPDATE alarms SET active = false WHERE alarm_id = 'gw1-a2' RETURNING 1")
    async with city.client("wang") as wang:
        await wang.post(f"{path}/acknowledge", json={})
        done = (await wang.post(f"{path}/resolve", json={"cause": "other"})).json()
        resolves = sorted(c["alarm_id"] for c in done["commands"] if c["action"] == "resolve")
        assert resolves == ["gw1-a1", "gw1-a2"]
        city.rows(  # active again, and the gateway refused the resolve for it
            "UPDATE alarms SET active = true, state = 'ack_active' WHERE alarm_id = 'gw1-a2'"
            " RETURNING 1"
        )
        city.rows(
            "UPDATE commands SET replied_at = now(), accepted = false, reason = 'wrong_state'"
            " WHERE alarm_id = 'gw1-a2' AND action = 'resolve' RETURNING 1"
        )
        assert (await wang.get(path)).json()["again"] == []  # still active: nothing to send
        assert (await wang.post(f"{path}/resolve", json={"cause": "other"})).status_code == 409
        city.rows(
            "UPDATE alarms SET active = false, state = 'ack_cleared' WHERE alarm_id = 'gw1-a2'"
            " RETURNING 1"
        )
        assert (await wang.get(path)).json()["again"] == ["resolve"]
        page = (await wang.get(f"/incidents/{city.emergency}")).text
        assert 'data-again="resolve"' in page
        again = await wang.post(f"{path}/resolve", json={"cause": "other"})
        assert again.status_code == 200, again.text
        commands = again.json()["commands"]
        resolves = sorted(c["alarm_id"] for c in commands if c["action"] == "resolve")
        assert resolves == ["gw1-a1", "gw1-a2", "gw1-a2"]
        assert again.json()["state"] == "resolved"
