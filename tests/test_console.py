"""The console's pages over the real HTTP server, without a browser: the login form and its
return path, Chinese by default and English on request, form writes needing the session's
CSRF token, the site and fleet pages showing what the registry and the devices say."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.model import AlarmState
from tests.support.api_world import HOUSE, HOUSE_DETECTOR, PASSWORD, World, running_world
from tests.support.services import Mosquitto


@pytest.fixture
async def world(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[World]:
    async with running_world(tmp_path, mosquitto.url) as w:
        yield w


async def _log_in(client: httpx.AsyncClient, name: str, page: str) -> str:
    """Log in through the form that ``page`` shows; the session's CSRF token."""
    form = await client.get(page)
    assert form.status_code == 401
    assert 'name="password"' in form.text
    answer = await client.post(
        "/login", data={"name": name, "password": PASSWORD, "next": page}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == page
    found = re.search(r'<meta name="csrf" content="([^"]+)">', (await client.get(page)).text)
    assert found
    return found.group(1)


async def test_login_returns_to_the_page_and_forms_need_the_csrf_token(world: World) -> None:
    alarm = await world.wait_alarm(HOUSE_DETECTOR, "past_service_life")
    async with world.client() as client:
        csrf = await _log_in(client, "officer", f"/console/sites/{HOUSE}")
        path = f"/console/alarms/{alarm.alarm_id}/acknowledge"
        refused = await client.post(path, data={"note": "no token"})
        assert refused.status_code == 403
        still = world.gateway.alarms.get(alarm.alarm_id)
        assert still is not None
        assert still.state is AlarmState.UNACK_ACTIVE
        done = await client.post(
            path, data={"note": "replacing it", "csrf": csrf}, follow_redirects=False
        )
        assert done.status_code == 303
        acked = world.gateway.alarms.get(alarm.alarm_id)
        assert acked is not None
        assert (acked.state, acked.acked_by) == (AlarmState.ACK_ACTIVE, "officer")
        assert world.gateway.alarms.history(alarm.alarm_id)[-1].note == "replacing it"
        bad_next = await client.post(
            "/login",
            data={"name": "officer", "password": PASSWORD, "next": "https://elsewhere.example/"},
            follow_redirects=False,
        )
        assert bad_next.headers["location"] == "/console/alarms"


async def test_chinese_by_default_english_on_request(world: World) -> None:
    async with world.client("officer") as client:
        zh = await client.get("/console/alarms")
        assert '<html lang="zh-CN">' in zh.text
        assert "确认" in zh.text  # acknowledge
        en = await client.get("/console/alarms?lang=en&tab=maintenance")
        assert '<html lang="en">' in en.text
        assert "Acknowledge" in en.text
        assert "确认" not in en.text
        assert en.cookies.get("gasgate_lang") == "en"
        assert en.headers["x-frame-options"] == "DENY"  # no acknowledging through a frame
        assert "frame-ancestors 'none'" in en.headers["content-security-policy"]
        remembered = await client.get("/console/fleet")  # the cookie remembers
        assert '<html lang="en">' in remembered.text


async def test_site_and_fleet_pages(world: World) -> None:
    await world.leak()
    async with world.client("super") as client:
        site = (await client.get(f"/console/sites/{HOUSE}?lang=en")).text
        assert "missing self-closing regulator, metal-clad hose" in site  # words, not codes
        assert site.count("past service life") == 2  # the detector and the valve
        assert "CYL-OLD" in site
        assert "overdue" in site
        fleet = (await client.get("/console/fleet?lang=en")).text
        assert re.search(r"\d+ online · \d+ offline · \d+ not heard yet · 0 low battery", fleet)
        assert "det-a" in fleet
        queue = (await client.get("/console/alarms/queue?lang=en")).text
        assert "Gas leak (high level)" in queue
        assert "leak_high" not in queue
        maintenance = (await client.get("/console/alarms/queue?lang=en&tab=maintenance")).text
        assert 'class="shelve"' in maintenance  # a supervisor may shelve maintenance alarms
