"""Authorisation over every endpoint and every role (and no credentials), against the gateway's
real HTTP server: allowed → the request reaches the operation (2xx for reads), otherwise
401/403. A site_user guessing another site's ids gets exactly the answer for an id that
does not exist. The table below is written out by hand, not derived from the code, and must
name every route the application has."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from gateway.api import console, ops, routes
from gateway.api.app import create_app
from tests.support.api_world import HOUSE, HOUSE_DETECTOR, ROLES, World, running_world
from tests.support.kit_site import DETECTOR, SITE
from tests.support.services import Mosquitto

ALL = frozenset(ROLES)
STAFF = ALL - {"houseowner"}
ANSWER = frozenset({"officer", "super"})
SUPPRESS = frozenset({"super"})
AUDIT = frozenset({"super", "regulator"})
INSTALL = frozenset({"installer"})
PUBLIC = None  # no credentials needed

# (method, route template, allowed roles or PUBLIC, is_read)
MATRIX: list[tuple[str, str, frozenset[str] | None, bool]] = [
    ("GET", "/healthz", PUBLIC, True),
    ("GET", "/readyz", PUBLIC, True),
    ("GET", "/metrics", PUBLIC, True),
    ("GET", "/openapi.json", PUBLIC, True),
    ("GET", "/docs", PUBLIC, True),
    ("GET", "/", PUBLIC, False),
    ("GET", "/login", PUBLIC, True),
    ("POST", "/login", PUBLIC, False),
    ("POST", "/api/login", PUBLIC, False),
    ("POST", "/logout", ALL, False),
    ("GET", "/api/me", ALL, True),
    ("GET", "/api/sites", ALL, True),
    ("GET", "/api/sites/{site_id}", ALL, True),
    ("GET", "/api/kits", ALL, True),
    ("GET", "/api/devices", ALL, True),
    ("GET", "/api/devices/{device_id}", ALL, True),
    ("GET", "/api/alarms", ALL, True),
    ("GET", "/api/alarms/{alarm_id}", ALL, True),
    ("GET", "/api/alarms/{alarm_id}/history", ALL, True),
    ("GET", "/api/alarms/{alarm_id}/trail", ALL, True),
    ("GET", "/api/events", ALL, True),
    ("POST", "/api/alarms/{alarm_id}/acknowledge", ANSWER, False),
    ("POST", "/api/alarms/{alarm_id}/resolve", ANSWER, False),
    ("POST", "/api/alarms/{alarm_id}/shelve", SUPPRESS, False),
    ("POST", "/api/alarms/{alarm_id}/unshelve", SUPPRESS, False),
    ("POST", "/api/alarms/{alarm_id}/out-of-service", SUPPRESS, False),
    ("POST", "/api/registry/import", INSTALL, False),
    ("GET", "/api/audit", AUDIT, True),
    ("GET", "/api/writes", AUDIT, True),
    ("GET", "/console/alarms", ALL, True),
    ("GET", "/console/alarms/queue", ALL, True),
    ("GET", "/console/fleet", ALL, True),
    ("GET", "/console/sites/{site_id}", ALL, True),
    ("POST", "/console/alarms/{alarm_id}/{action}", ANSWER, False),
    ("POST", "/console/incidents/acknowledge", ANSWER, False),
]
BODIES = {
    "/shelve": {"reason": "test", "duration_s": 60},
    "/out-of-service": {"reason": "test"},
    "/api/login": {"name": "nobody", "password": "wrong password"},
}


def test_matrix_names_every_route() -> None:
    app = create_app(None)  # type: ignore[arg-type] - routes only, nothing is served
    every = [*app.routes, *routes.router.routes, *ops.router.routes, *console.router.routes]
    found = {
        (method, r.path)
        for r in every
        if isinstance(r, APIRoute | Route)
        for method in (r.methods or ())
        if method != "HEAD"
    }
    assert found == {(m, p) for m, p, _, _ in MATRIX}
    # No endpoint opens a valve: none even names one (the only writes are alarm operations,
    # the registry import and logins), and no operation's schema takes a valve command.
    assert not [p for _, p, _, _ in MATRIX if re.search(r"valve|/open\b|cmd|command", p)]
    document = str(app.openapi()).lower()
    assert "open_valve" not in document
    assert "close_valve" not in document


@pytest.fixture
async def world(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[World]:
    async with running_world(tmp_path, mosquitto.url) as w:
        yield w


def _fill(template: str, site: str, device: str, alarm: str) -> str:
    return (
        template.replace("{site_id}", site)
        .replace("{device_id}", device)
        .replace("{alarm_id}", alarm)
        .replace("{action}", "acknowledge")
    )


async def _call(world: World, who: str | None, method: str, path: str) -> int:
    async with world.client(who) as client:
        if path == "/api/events":
            async with client.stream("GET", path) as answer:
                return answer.status_code
        if path == "/api/registry/import":
            files = {"files": ("sites.csv", b"site_id\n", "text/csv")}
            return (await client.post(path, files=files)).status_code
        if method == "GET":
            return (await client.get(path)).status_code
        body = next((b for suffix, b in BODIES.items() if path.endswith(suffix)), {})
        if path.startswith("/console/") or path in ("/login", "/logout"):
            return (await client.post(path, data=body)).status_code
        return (await client.post(path, json=body)).status_code


async def test_every_endpoint_for_every_role(world: World) -> None:
    house_alarm = await world.wait_alarm(HOUSE_DETECTOR, "past_service_life")
    failures = []
    for method, template, roles, is_read in MATRIX:
        path = _fill(template, HOUSE, HOUSE_DETECTOR, house_alarm.alarm_id)
        for who in (None, *sorted(ROLES)):
            status = await _call(world, who, method, path)
            if roles is PUBLIC:
                ok = status < 400 or (template.endswith("login") and status in (401, 422, 429))
            elif who is None:
                ok = status == 401
            elif who in roles:
                # Reads answer 200; writes reach the operation (it may refuse the state).
                ok = status == 200 if is_read else status in (200, 303, 404, 409, 422)
            else:
                ok = status == 403
            if not ok:
                failures.append(f"{who or 'anonymous'} {method} {path} -> {status}")
    assert failures == []


async def test_site_user_cannot_read_another_site_by_guessing(world: World) -> None:
    leak = await world.leak()
    guesses = [
        f"/api/sites/{SITE}",
        f"/api/devices/{DETECTOR}",
        f"/api/alarms/{leak.alarm_id}",
        f"/api/alarms/{leak.alarm_id}/history",
        f"/api/alarms/{leak.alarm_id}/trail",
        f"/console/sites/{SITE}",
    ]
    async with world.client("houseowner") as owner, world.client("officer") as officer:
        for path in guesses:
            assert (await officer.get(path)).status_code == 200, path
            theirs = await owner.get(path)
            missing = await owner.get(path.replace(SITE, "no-such").replace(leak.alarm_id, "x")
                                      .replace(DETECTOR, "no-such"))  # fmt: skip
            assert theirs.status_code == missing.status_code == 404, path
            if path.startswith("/console/"):  # a page, the same for both but its own path
                assert theirs.text.replace(SITE, "?") == missing.text.replace("no-such", "?")
                continue
            assert theirs.json()["detail"].replace(SITE, "?").replace(DETECTOR, "?").replace(
                leak.alarm_id, "?"
            ) == missing.json()["detail"].replace("no-such", "?").replace("'x'", "'?'")
        answer = await owner.post(f"/api/alarms/{leak.alarm_id}/acknowledge", json={})
        assert answer.status_code == 403
        listed = (await owner.get("/api/alarms")).json()
        assert listed
        assert {a["site_id"] for a in listed} == {HOUSE}
        assert {s["site_id"] for s in (await owner.get("/api/sites")).json()} == {HOUSE}
        assert {d["site_id"] for d in (await owner.get("/api/devices")).json()} == {HOUSE}
        queue = (await owner.get("/console/alarms")).text
        assert leak.alarm_id not in queue
        assert HOUSE_DETECTOR in (await owner.get("/api/alarms")).text
