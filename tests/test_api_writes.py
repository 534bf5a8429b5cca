"""Refused writes are recorded (issue 15, item 5): a role without the permission (403) and an
unknown alarm (404), over the API and the console's forms, each a ``user_writes`` row with the
user, the action, the target and why; and a flood of them is bounded (per user a minute, and
the newest rows kept). A real gateway, broker and store; the bound also on a real store alone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.users import REFUSED_PER_MINUTE, Role, User, Users
from tests.support.api_world import PASSWORD, World, running_world
from tests.support.services import Mosquitto

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.fixture
async def world(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[World]:
    async with running_world(tmp_path, mosquitto.url) as w:
        yield w


def _rows(world: World) -> list[tuple[str, str, str, str]]:
    return [(w.name, w.action, w.target, w.result) for w in world.users.writes()]


async def test_refused_writes_are_recorded(world: World) -> None:
    leak = await world.leak()
    path = f"/api/alarms/{leak.alarm_id}"
    async with (
        world.client("regulator") as regulator,
        world.client("officer") as officer,
        world.client("installer") as installer,
    ):
        assert (await regulator.post(f"{path}/acknowledge", json={})).status_code == 403
        shelve = {"reason": "noisy", "duration_s": 60}
        assert (await officer.post(f"{path}/shelve", json=shelve)).status_code == 403
        unknown = await officer.post("/api/alarms/no-such-alarm/acknowledge", json={})
        assert unknown.status_code == 404
        files = [("files", ("sites.csv", b"site_id\n", "text/csv"))]
        assert (await regulator.post("/api/registry/import", files=files)).status_code == 403
        assert (await installer.get("/api/writes")).status_code == 403  # a read: not a write
    assert _rows(world) == [
        ("regulator", "registry_import", "registry", "forbidden"),
        ("officer", "acknowledge", "no-such-alarm", "unknown_alarm"),
        ("officer", "shelve", leak.alarm_id, "forbidden"),
        ("regulator", "acknowledge", leak.alarm_id, "forbidden"),
    ]
    assert world.users.writes()[-1].detail == "role regulator may not answer"
    still = world.gateway.alarms.get(leak.alarm_id)
    assert still is not None
    assert still.acked_by is None


async def test_a_refused_console_form_is_recorded(world: World) -> None:
    leak = await world.leak()
    async with world.client() as browser:
        login = await browser.post("/login", data={"name": "regulator", "password": PASSWORD})
        assert login.status_code == 303
        page = (await browser.get("/console/alarms")).text
        found = re.search(r'<meta name="csrf" content="([^"]+)">', page)
        assert found
        form = {"note": "not mine to answer", "csrf": found.group(1)}
        refused = await browser.post(f"/console/alarms/{leak.alarm_id}/acknowledge", data=form)
        assert refused.status_code == 403
    assert _rows(world) == [("regulator", "acknowledge", leak.alarm_id, "forbidden")]


async def test_a_flood_of_refusals_is_bounded(world: World) -> None:
    async with world.client("regulator") as regulator:
        for n in range(REFUSED_PER_MINUTE + 10):
            answer = await regulator.post(f"/api/alarms/a-{n}/acknowledge", json={})
            assert answer.status_code == 403  # every one answered, whether recorded or not
    # Unless the minute turned over during the loop, exactly the limit is recorded.
    assert REFUSED_PER_MINUTE <= len(_rows(world)) <= REFUSED_PER_MINUTE + 11
    assert world.gateway.api.users.counts["refused_write_not_recorded"] >= 9


def test_refusals_are_capped_per_minute_and_in_total(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    try:
        users = Users(store, refused_per_minute=3, refused_kept=40)
        users.prepare()
        mallory, officer = User("mallory", Role.REGULATOR), User("zhou", Role.DUTY_OFFICER)
        for _ in range(5):
            users.record_write(T0, mallory, "acknowledge", "a-1", result="forbidden")
        users.record_write(T0, officer, "acknowledge", "a-1", result="ok")
        users.record_write(T0, officer, "resolve", "a-1", result="wrong_state")  # own limit
        assert [(w.name, w.result) for w in users.writes()] == [
            ("zhou", "wrong_state"),
            ("zhou", "ok"),
            *[("mallory", "forbidden")] * 3,
        ]
        assert users.counts["refused_write_not_recorded"] == 2
        # The next minute's first refusal says how many of the last were not recorded.
        users.record_write(T0 + timedelta(seconds=61), mallory, "resolve", "a-1", result="x")
        newest = users.writes(limit=2)
        assert [w.action for w in newest] == ["resolve", "refused_not_recorded"]
        assert newest[1].detail.startswith("2 more refused write(s)")
        # Over many minutes: the newest refused rows are kept, accepted ones all.
        for minute in range(2, 60):
            for _ in range(3):
                at = T0 + timedelta(minutes=minute)
                users.record_write(at, mallory, "acknowledge", "a-2", result="forbidden")
        rows = users.writes(limit=10_000)
        refused = [w for w in rows if w.result != "ok"]
        assert 40 <= len(refused) <= 40 + 40 // 20
        assert [w.name for w in rows if w.result == "ok"] == ["zhou"]
        assert refused[0].at == T0 + timedelta(minutes=59)  # the newest are the ones kept
    finally:
        store.close()
