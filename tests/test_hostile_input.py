"""Hostile input through the real gateway (real broker, store, HTTP server): a report that
claims another site, markup / SQL / template / spreadsheet-formula text in every text field a
person can type (registry import, notes, search), and no secret in logs or error pages.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from gateway.contract import report_topic
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import (
    HOUSE,
    HOUSE_DETECTOR,
    HOUSE_VALVE,
    PASSWORD,
    PHONE,
    World,
    running_world,
)
from tests.support.kit_site import DETECTOR, SITE, VALVES
from tests.support.receivers import HttpReceiver
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Spy, wait_until

SCRIPT = "<script>alert('x')</script>"
SQL = "'); DROP TABLE alarms; --"
TEMPLATE = "{{ 7*7 }}{% raw %}"
FORMULA = '=HYPERLINK("http://evil.example","click")'
HOSTILE = (SCRIPT, SQL, TEMPLATE, FORMULA, "\u202e\u0000\u200b气体")


@pytest.fixture
async def world(tmp_path: Path, own_mosquitto: Mosquitto) -> AsyncIterator[World]:
    async with running_world(tmp_path, own_mosquitto.url) as w:
        yield w


HOUSE_PHONE = "13900139000"  # the household's contact (api_world)


async def test_a_report_claiming_another_site_alarms_and_alerts_only_its_own(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    with HttpReceiver().running() as http:
        sms = {"kind": "webhook", "url": http.url("/sms"), "template": "sms", "timeout_s": 2}
        escalation = {"channels": {"sms": sms}}
        async with running_world(tmp_path, own_mosquitto.url, escalation=escalation) as world:
            await claim_another_site(world)
            await wait_until(lambda: http.received("/sms"))
            await asyncio.sleep(0.5)  # a text to the wrong site's contact would arrive by now
    texts = [r.json() for r in http.received("/sms")]
    assert {t["phone"] for t in texts} == {HOUSE_PHONE}  # leak_low and leak_high: one text each
    assert len({t["reference"] for t in texts}) == len(texts)
    assert PHONE != HOUSE_PHONE


async def claim_another_site(world: World) -> None:
    spy = Spy(world.mqtt_url)
    await spy.start()
    try:
        # The household detector's topic; the body names the restaurant and its detector.
        body = {
            "kind": "detector", "seq": 1, "event": "alarm", "site_id": SITE,
            "device_id": DETECTOR, "detector": {"lel_pct": 60.0, "flags": ["alarm_high"]},
        }  # fmt: skip
        async with parse_mqtt_url(world.mqtt_url).client(identifier=uuid.uuid4().hex) as c:
            await c.publish(report_topic(HOUSE_DETECTOR), json.dumps(body).encode(), qos=1)
        alarm = await world.wait_alarm(HOUSE_DETECTOR, "leak_high")
        assert alarm.site_id == HOUSE
        await wait_until(lambda: spy.to(HOUSE_VALVE))
        await world.gateway.bus.join()
        assert all(a.site_id == HOUSE for a in world.gateway.alarms.open_alarms())
        assert all(spy.to(v) == [] for v in VALVES)  # the restaurant's valves stay untouched
    finally:
        await spy.stop()
    spy.assert_no_open_command()


def hostile_registry(tmp_path: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The world's registry files plus one site whose every text field is hostile."""
    source = tmp_path / "registry"
    sites = (source / "sites.csv").read_text(encoding="utf-8")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        ["evil-1", SCRIPT, "household", "two_piece", FORMULA, SQL, TEMPLATE, "13600136000", "en"]
    )
    files = {"sites.csv": sites + out.getvalue()}
    for name in ("components.csv", "cylinders.csv"):
        files[name] = (source / name).read_text(encoding="utf-8")
    return [("files", (n, t.encode(), "text/csv")) for n, t in files.items()]


async def test_hostile_registry_text_is_stored_and_shown_inert(
    world: World, tmp_path: Path
) -> None:
    async with world.client("installer") as installer, world.client("super") as sup:
        answer = await installer.post("/api/registry/import", files=hostile_registry(tmp_path))
        assert answer.status_code == 200, answer.text
        detail = (await sup.get("/api/sites/evil-1")).json()
        site = detail["site"]
        assert (site["name"], site["district"], site["address"]) == (SCRIPT, FORMULA, SQL)
        assert [c["name"] for c in detail["contacts"]] == [TEMPLATE]

        page = (await sup.get("/console/sites/evil-1")).text
        assert SCRIPT not in page
        assert "&lt;script&gt;" in page
        assert "{{ 7*7 }}" in page  # shown as typed, not evaluated
        assert ">49<" not in page

        for params in ({"district": SQL}, {"site": SQL}, {"district": FORMULA}):
            found = await sup.get("/api/alarms", params=params)
            assert found.status_code == 200
            assert found.json() == []
        by_district = (await sup.get("/api/sites", params={"district": FORMULA})).json()
        assert [s["site_id"] for s in by_district] == ["evil-1"]

        audit = (await sup.get("/api/audit", params={"format": "csv"})).text
        cells = [c for row in csv.reader(io.StringIO(audit)) for c in row]
        assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), audit
        html = (await sup.get("/api/audit", params={"format": "html"})).text
        assert SCRIPT not in html

    await world.leak()  # the alarms table is still there and the gateway still acts
    rows = world.gateway.store.db.execute("SELECT count(*) FROM alarms").fetchone()[0]
    assert rows >= 1


async def test_hostile_notes_are_stored_exactly_and_returned_as_data(world: World) -> None:
    leak = await world.leak()
    note = " | ".join(HOSTILE)
    async with world.client("officer") as officer, world.client("super") as sup:
        ack = await officer.post(f"/api/alarms/{leak.alarm_id}/acknowledge", json={"note": note})
        assert ack.status_code == 200, ack.text
        history = (await sup.get(f"/api/alarms/{leak.alarm_id}/history")).json()
        assert history[-1]["note"] == note
        writes = (await sup.get("/api/writes")).json()
        assert writes[0]["detail"] == note
        page = (await officer.get("/console/alarms")).text
        assert SCRIPT not in page
    assert [h.note for h in world.gateway.alarms.history(leak.alarm_id)][-1] == note


MQTT_SECRET = "mqtt-pw-5f1e9c"
HMAC_SECRET = "hmac-key-a7b3d2"
WRONG_PASSWORD = "wrong-pw-0c4e"
URL_TOKEN = "url-token-93b0aa"


async def test_no_secret_in_logs_or_error_pages(
    tmp_path: Path, own_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = f"mqtt://gateway:{MQTT_SECRET}@127.0.0.1:{own_mosquitto.port}"
    with HttpReceiver().running() as http:
        sms = {
            # A robot webhook's URL carries its token (DingTalk, WeCom): a secret too.
            "kind": "webhook", "url": f"{http.url('/sms')}?access_token={URL_TOKEN}",
            "template": "sms", "secret": HMAC_SECRET, "timeout_s": 2,
        }  # fmt: skip
        sms_down = {**sms, "url": f"http://127.0.0.1:9/sms?access_token={URL_TOKEN}"}
        escalation: dict[str, object] = {
            "channels": {"sms": sms, "duty_room_im": sms_down},
            "duty_room": [{"name": "Duty room"}],
            "gasco": {"client_id": f"gasco-{uuid.uuid4().hex[:8]}", "password": MQTT_SECRET},
        }
        bodies, tokens = await provoke(tmp_path, url, escalation, http)
    secrets = [MQTT_SECRET, HMAC_SECRET, URL_TOKEN, PASSWORD, WRONG_PASSWORD, *tokens]
    logged = caplog.text
    assert "gateway" in logged  # the log was captured at all
    for secret in secrets:
        assert secret not in logged, f"a secret is in the log: {secret[:4]}..."
        for body in bodies:
            assert secret not in body, f"a secret is in an error page: {secret[:4]}..."


async def provoke(
    tmp_path: Path, url: str, escalation: Mapping[str, object], http: HttpReceiver
) -> tuple[list[str], list[str]]:
    """Connections, a leak notified through a working and a dead webhook, logins right and
    wrong, and a round of error pages; the pages' texts and the users' tokens."""
    bodies: list[str] = []
    async with running_world(tmp_path, url, gasco_mqtt=url, escalation=escalation) as world:
        await world.leak()
        await wait_until(lambda: http.received("/sms"))
        async with world.client() as anonymous, world.client("officer") as officer:
            for name, password in (("officer", WRONG_PASSWORD), ("officer", PASSWORD)):
                answer = await anonymous.post(
                    "/api/login", json={"name": name, "password": password}
                )
                bodies.append(answer.text)
            for path in ("/api/alarms/nope", "/api/sites/x'--", "/console/sites/%3Cx%3E"):
                bodies.append((await officer.get(path)).text)
            bodies.append((await officer.get("/api/alarms", params={"state": "x"})).text)
            bodies.append((await officer.post("/api/alarms/nope/shelve", json={})).text)
            bodies.append((await anonymous.get("/api/me")).text)
            bodies.append((await anonymous.get("/metrics")).text)
            bodies.append((await anonymous.get("/readyz")).text)
        return bodies, list(world.tokens.values())
