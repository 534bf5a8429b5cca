"""The API's behaviour on the gateway's real HTTP server, with a real broker and store:
sessions and CSRF, the login rate limit, writes recorded with the user, phone numbers hidden
from the regulator, the registry import, /metrics, /healthz, /readyz, and acknowledging over
the API and over the gas company's MQTT path being one operation with one audit."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.escalation import trail
from gateway.model import AlarmState
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import (
    HOUSE,
    PARTIAL_DETECTOR,
    PASSWORD,
    PHONE,
    World,
    running_world,
    write_world,
)
from tests.support.kit_site import SITE
from tests.support.services import Mosquitto


@pytest.fixture
async def world(tmp_path: Path, own_mosquitto: Mosquitto) -> AsyncIterator[World]:
    # One broker plays both: the gas company link needs a client id of its own on it (its
    # default, gasgate-<gateway id>, is the site link's too).
    gasco = {"gasco": {"client_id": f"gasco-{uuid.uuid4().hex[:8]}"}}
    async with running_world(
        tmp_path, own_mosquitto.url, gasco_mqtt=own_mosquitto.url, escalation=gasco
    ) as w:
        yield w


async def test_session_writes_need_the_csrf_token(world: World) -> None:
    leak = await world.leak()
    async with world.client() as browser:
        login = await browser.post("/api/login", json={"name": "officer", "password": PASSWORD})
        assert login.status_code == 200
        csrf = login.json()["csrf"]
        assert (await browser.get("/api/me")).json()["name"] == "officer"
        path = f"/api/alarms/{leak.alarm_id}/acknowledge"
        assert (await browser.post(path, json={})).status_code == 403
        wrong = await browser.post(path, json={}, headers={"X-CSRF-Token": csrf[::-1]})
        assert wrong.status_code == 403
        assert leak.state is AlarmState.UNACK_ACTIVE
        assert world.gateway.alarms.get(leak.alarm_id) == leak  # unchanged
        right = await browser.post(path, json={"note": "on it"}, headers={"X-CSRF-Token": csrf})
        assert right.status_code == 200
        assert right.json()["state"] == "ack_active"
        assert right.json()["acked_by"] == "officer"
        again = await browser.post(path, json={}, headers={"X-CSRF-Token": csrf})
        assert again.status_code == 409
        out = await browser.post("/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        assert (await browser.get("/api/me")).status_code == 401
    writes = [(w.name, w.action, w.target, w.result, w.detail) for w in world.users.writes()]
    assert writes[:2] == [
        ("officer", "acknowledge", leak.alarm_id, "wrong_state", ""),
        ("officer", "acknowledge", leak.alarm_id, "ok", "on it"),
    ]


async def test_login_is_rate_limited(world: World) -> None:
    async with world.client() as client:
        for _ in range(5):
            bad = await client.post("/api/login", json={"name": "super", "password": "nope"})
            assert bad.status_code == 401
        good = await client.post("/api/login", json={"name": "super", "password": PASSWORD})
        assert good.status_code == 429
        # When to try again: once the oldest failure leaves the 5-minute window.
        assert 0 < int(good.headers["retry-after"]) <= 300
        # The console's form says so in words, and keeps refusing.
        form = await client.post("/login", data={"name": "super", "password": PASSWORD})
        assert form.status_code == 429
        assert "wait a few minutes" in form.text or "几分钟" in form.text
        assert 0 < int(form.headers["retry-after"]) <= 300
        # Another name from the same address still gets in ...
        other = await client.post("/api/login", json={"name": "officer", "password": PASSWORD})
        assert other.status_code == 200
        # ... until the address itself has failed 20 times.
        for n in range(15):
            guess = {"name": f"guess{n}", "password": "nope"}
            assert (await client.post("/api/login", json=guess)).status_code == 401
        again = await client.post("/api/login", json={"name": "officer", "password": PASSWORD})
        assert again.status_code == 429


async def test_regulator_sees_no_phone_numbers(world: World) -> None:
    await world.leak()
    async with world.client("regulator") as regulator, world.client("officer") as officer:
        for client, expected in ((regulator, None), (officer, PHONE)):
            site = (await client.get(f"/api/sites/{SITE}")).json()
            assert [c["phone"] for c in site["contacts"]] == [expected]
            alarms = (await client.get("/api/alarms", params={"site": SITE})).json()
            assert {c["phone"] for a in alarms for c in a["contacts"]} == {expected}
        page = await regulator.get("/console/alarms?lang=en")
        assert PHONE not in page.text
        assert PHONE in (await officer.get("/console/alarms")).text


async def test_alarm_filters_and_history(world: World) -> None:
    leak = await world.leak()
    async with world.client("super") as client:
        critical = (await client.get("/api/alarms", params={"severity": "critical"})).json()
        assert [a["alarm_id"] for a in critical] == [leak.alarm_id]
        in_nanshan = (await client.get("/api/alarms", params={"district": "Nanshan"})).json()
        assert in_nanshan == []
        at_house = (await client.get("/api/alarms", params={"site": HOUSE})).json()
        assert at_house
        assert {a["site_id"] for a in at_house} == {HOUSE}
        bad = await client.get("/api/alarms", params={"state": "burning"})
        assert bad.status_code == 422
        ack = await client.post(f"/api/alarms/{leak.alarm_id}/acknowledge", json={"note": "x"})
        assert ack.status_code == 200
        history = (await client.get(f"/api/alarms/{leak.alarm_id}/history")).json()
        assert [(h["transition"], h["by"]) for h in history] == [
            ("raised", None),
            ("acknowledged", "super"),
        ]
        latched = await client.post(
            f"/api/alarms/{leak.alarm_id}/shelve", json={"reason": "noisy", "duration_s": 60}
        )
        assert latched.status_code == 409  # a latched leak cannot be shelved
        assert "latched" in latched.json()["detail"]
        audit = await client.get("/api/audit", params={"format": "csv", "district": "Nanshan"})
        assert audit.headers["content-type"].startswith("text/csv")
        assert audit.text.splitlines()[1].startswith("rest-part,Noodle Bar,Nanshan")
        assert (await client.get("/api/audit", params={"since": "soon"})).status_code == 422


async def test_closed_alarms_are_listed_since_a_date(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "quick.yaml").write_text("leak:\n  clear_hold_s: 0.5\n", encoding="utf-8")
    async with running_world(tmp_path, mosquitto.url, rules_dir=rules) as world:
        leak = await world.leak()
        async with world.client("officer") as client:
            path = f"/api/alarms/{leak.alarm_id}"
            assert (await client.post(f"{path}/acknowledge", json={})).status_code == 200
            gas = await client.post(f"{path}/resolve", json={})
            assert gas.status_code == 409  # the condition is still active
            async with asyncio.timeout(20):
                for seq in range(2, 100):  # the gas clears; a latched leak waits for a person
                    await world.leak(lel=0.0, seq=seq)
                    if not world.gateway.alarms.get(leak.alarm_id).active:
                        break
                    await asyncio.sleep(0.3)
            done = await client.post(f"{path}/resolve", json={"note": "valve reopened by hand"})
            assert done.status_code == 200
            assert done.json()["state"] == "normal"
            open_now = (await client.get("/api/alarms")).json()
            assert leak.alarm_id not in {a["alarm_id"] for a in open_now}
            since = (await client.get("/api/alarms", params={"since": "2000-01-01"})).json()
            closed = [a for a in since if a["alarm_id"] == leak.alarm_id]
            assert [(a["state"], a["closed_by"]) for a in closed] == [("normal", "officer")]
            site = (await client.get(f"/console/sites/{SITE}?lang=en")).text
            assert re.search(r"Gas leak \(high level\)</b>[^·]*· closed \(officer\)", site)
            bad = await client.get("/api/alarms", params={"since": "later"})
            assert bad.status_code == 422


async def test_acknowledge_over_api_and_gas_company_is_one_operation(world: World) -> None:
    by_api = await world.leak()
    by_gasco = await world.leak(PARTIAL_DETECTOR)
    async with world.client("officer") as client:
        answer = await client.post(
            f"/api/alarms/{by_api.alarm_id}/acknowledge", json={"note": "same words"}
        )
        assert answer.status_code == 200
    command = {
        "cmd_id": uuid.uuid4().hex,
        "alarm_id": by_gasco.alarm_id,
        "action": "acknowledge",
        "officer_id": "officer",
        "note": "same words",
    }
    topic = f"gasco/v1/{world.gateway.settings.gateway_id}/cmd/officer"
    async with parse_mqtt_url(world.mqtt_url).client(identifier=f"t-{uuid.uuid4().hex}") as c:
        await c.publish(topic, json.dumps(command).encode(), qos=1)
    async with asyncio.timeout(20):
        while world.gateway.alarms.get(by_gasco.alarm_id).acked_by is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await world.gateway.bus.join()

    def audit_of(alarm_id: str) -> tuple[object, ...]:
        last = world.gateway.alarms.history(alarm_id)[-1]
        entries = trail(world.gateway.store, alarm_id)
        # The MQTT path also records the command it received; upstream delivery is timing.
        after = [(e.kind, e.result) for e in entries if e.at >= last.at]
        return (last.transition, last.state, last.by, last.note, after)

    def without_channel(audit: tuple[object, ...]) -> tuple[object, ...]:
        kept = [x for x in audit[-1] if x[0] not in ("command", "event")]
        return (*audit[:-1], kept)

    api, gasco = audit_of(by_api.alarm_id), audit_of(by_gasco.alarm_id)
    assert without_channel(api) == without_channel(gasco)
    assert without_channel(api)[-1] == [
        ("alarm_changed", "acknowledged"),
        ("escalation", "stopped"),
    ]
    assert ("command", "accepted") in gasco[-1]


async def test_registry_import(world: World, tmp_path: Path) -> None:
    source = write_world(tmp_path / "upload")
    with (source / "sites.csv").open("a", encoding="utf-8") as f:
        f.write("new-1,Tea House,restaurant,four_piece,Nanshan,1 Tea St,Wu Fei,13600136000,zh\n")
    files = [("files", (p.name, p.read_bytes(), "text/csv")) for p in sorted(source.iterdir())]
    before = world.gateway.registry.generation
    async with world.client("installer") as installer, world.client("super") as sup:
        answer = await installer.post("/api/registry/import", files=files)
        assert answer.status_code == 200, answer.text
        assert answer.json()["counts"]["sites"] == 4
        assert world.gateway.registry.generation > before
        sites = {s["site_id"] for s in (await sup.get("/api/sites")).json()}
        assert "new-1" in sites
        assert (await sup.post("/api/registry/import", files=files)).status_code == 403
        broken = [("files", ("sites.csv", b"site_id,name\nx-1,No kit\n", "text/csv"))]
        refused = await installer.post("/api/registry/import", files=broken)
        assert refused.status_code == 422
        assert any("sites.csv" in p for p in refused.json()["detail"])
        assert "new-1" in {s["site_id"] for s in (await sup.get("/api/sites")).json()}
        writes = (await sup.get("/api/writes")).json()
        assert [(w["name"], w["action"], w["result"]) for w in writes[:3]] == [
            ("installer", "registry_import", "refused"),
            ("super", "registry_import", "forbidden"),  # refused writes are recorded too
            ("installer", "registry_import", "ok"),
        ]
    shutil.rmtree(source)


async def test_operations_endpoints(world: World, own_mosquitto: Mosquitto) -> None:
    await world.leak()
    async with world.client() as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "alive"}
        ready = await anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": True, "site_broker": True, "registry": True}
        metrics = await anonymous.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE gasgate_alarms gauge" in metrics.text
        own_mosquitto.stop()
        async with asyncio.timeout(20):
            while (await anonymous.get("/readyz")).status_code != 503:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        down = (await anonymous.get("/readyz")).json()
        assert down == {
            "ready": False,
            "checks": {"store": True, "site_broker": False, "registry": True},
        }
        assert (await anonymous.get("/healthz")).status_code == 200
        own_mosquitto.start()
        async with asyncio.timeout(30):
            while (await anonymous.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)


async def test_http_port_in_use_leaves_the_gateway_running(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with running_world(tmp_path / "a", mosquitto.url) as first:
        port = first.gateway.api.port
        async with running_world(tmp_path / "b", mosquitto.url, http_port=port) as second:
            assert second.gateway.api.port is None  # the console is off, loudly
            leak = await second.leak()  # the safety path runs regardless
            assert leak.state is AlarmState.UNACK_ACTIVE


async def test_a_console_that_cannot_load_leaves_the_gateway_running(
    tmp_path: Path,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "gateway.api.server", None)  # importing it now fails
    async with running_world(tmp_path, mosquitto.url) as world:
        leak = await world.leak()  # the safety path runs regardless
        assert leak.state is AlarmState.UNACK_ACTIVE
        async with asyncio.timeout(10):
            while "console and API NOT started" not in caplog.text:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with world.client() as client:
            with pytest.raises(httpx.ConnectError):  # refused at once, not left waiting
                await client.get("/healthz")


async def test_ipv6_loopback(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_world(tmp_path, mosquitto.url, http_host="::1") as world:
        assert world.url.startswith("http://[::1]:")
        async with world.client() as client:
            assert (await client.get("/healthz")).status_code == 200
