"""The monitoring center end to end, every part a real process: a PostgreSQL, a site Mosquitto, a
gas company Mosquitto, three ``gasgate run`` gateways with registries of their own and two
``gasgate central run`` instances in one ``$share`` group.

* A leak at gateway 2 is one open incident in either instance's API within 1 s; an officer
  acknowledging it at instance B acknowledges the alarm at gateway 2 (its API and its next event
  name the officer).
* ``kill -9`` of gateway 3 is a "gateway offline" incident naming its sites.
* ``kill -9`` of instance A while 1,000 events flow: after A's restart every event is in the
  database exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice
from gateway.mqtturl import parse_mqtt_url
from tests.support import postgres
from tests.support.services import Mosquitto, free_port

pytestmark = pytest.mark.timeout(420)

GASGATE = Path(sys.executable).parent / "gasgate"
DISTRICTS = {1: "Xuhui", 2: "Minhang", 3: "Pudong"}
SITES_PER_GATEWAY = 3
OFFICER = "wang"


@dataclass
class Proc:
    """One child process, its output in a log file of its own."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env={**os.environ, **self.env}, stdout=log, stderr=log
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(GASGATE), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"gasgate {' '.join(args)}: {done.stderr}"
    return done.stdout


def _registry(directory: Path, n: int) -> dict[str, list[str]]:
    """Gateway n's registry: SITES_PER_GATEWAY restaurants, the first with a detector and a
    linked valve that report; returns the site ids and the first site's devices."""
    directory.mkdir(parents=True)
    sites = [f"g{n}-r{i}" for i in range(1, SITES_PER_GATEWAY + 1)]
    (directory / "sites.csv").write_text(
        "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang\n"
        + "".join(
            f"{s},Restaurant {s},restaurant,four_piece,{DISTRICTS[n]},{i} Road {n},"
            f"Owner {s},1380013{n}{i:03d},zh\n"
            for i, s in enumerate(sites, start=1)
        ),
        encoding="utf-8",
    )
    detector, valve = f"g{n}-det", f"g{n}-valve"
    (directory / "components.csv").write_text(
        "site_id,component,device_id,model,installed_on,links,report_interval_s\n"
        f"{sites[0]},leak_detector,{detector},KD-210C,2025-03-01,,60\n"
        f"{sites[0]},shutoff_valve,{valve},SV-25E,2025-03-01,{detector},60\n",
        encoding="utf-8",
    )
    return {"sites": sites, "devices": [detector, valve]}


@dataclass
class Gateway:
    n: int
    gateway_id: str
    http_port: int
    sites: list[str]
    devices: list[str]
    proc: Proc
    data_dir: Path
    token: str = ""

    def api(self, path: str) -> Any:
        response = httpx.get(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


@dataclass
class Center:
    name: str
    http_port: int
    proc: Proc
    token: str = ""

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str) -> Any:
        response = httpx.get(self._url(path), headers=self._auth(), timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self._url(path), json=body, headers=self._auth(), timeout=10)

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self._url("/readyz"), timeout=2).status_code == 200
        return False

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class City:
    dsn: str
    site: Mosquitto
    gasco: Mosquitto
    gateways: dict[int, Gateway]
    centers: dict[str, Center]
    workdir: Path

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, args).fetchall()


async def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            found = check()
            if found:
                return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


def _center(workdir: Path, city_dsn: str, gasco: Mosquitto, name: str) -> Center:
    port = free_port()
    args = [
        str(GASGATE), "central", "run", "--db", city_dsn, "--gasco-mqtt", gasco.url,
        "--http-port", str(port), "--instance", name, "--group", "e2e",
    ]  # fmt: skip
    env = {"GASGATE_LOG_FORMAT": "text", "GASGATE_CENTRAL_SILENT_AFTER_S": "30"}
    return Center(name, port, Proc(f"center-{name}", args, workdir / f"center-{name}.log", env))


def _gateway(workdir: Path, n: int, site: Mosquitto, gasco: Mosquitto) -> Gateway:
    gateway_id = f"gw{n}-{uuid.uuid4().hex[:6]}"
    registry = _registry(workdir / f"registry-{n}", n)
    data_dir, port = workdir / f"data-{n}", free_port()
    args = [
        str(GASGATE), "run", "--registry", str(workdir / f"registry-{n}"), "--mqtt", site.url,
        "--data-dir", str(data_dir), "--gateway-id", gateway_id, "--gasco-mqtt", gasco.url,
    ]  # fmt: skip
    env = {"GASGATE_LOG_FORMAT": "text", "GASGATE_HTTP_PORT": str(port)}
    proc = Proc(f"gateway-{n}", args, workdir / f"gateway-{n}.log", env)
    return Gateway(n, gateway_id, port, registry["sites"], registry["devices"], proc, data_dir)


@contextlib.contextmanager
def _processes(procs: list[Proc]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def city(tmp_path: Path, pg_server: str) -> AsyncIterator[City]:
    dsn = postgres.fresh_database(pg_server)
    _cli("central", "db", "upgrade", "--db", dsn)
    _cli("central", "user", "add", OFFICER, "--role", "duty_officer", "--db", dsn,
         "--password-stdin", stdin="a long enough password 1\n")  # fmt: skip
    token = _cli("central", "user", "token", OFFICER, "--db", dsn).strip()
    for broker in ("site", "gasco"):
        (tmp_path / broker).mkdir()
    with (
        Mosquitto(tmp_path / "site").running() as site,
        Mosquitto(tmp_path / "gasco").running() as gasco,
    ):
        gateways = {n: _gateway(tmp_path, n, site, gasco) for n in (1, 2, 3)}
        centers = {name: _center(tmp_path, dsn, gasco, name) for name in ("a", "b")}
        procs = [g.proc for g in gateways.values()] + [c.proc for c in centers.values()]
        with _processes(procs):
            for center in centers.values():
                center.token = token
                center.proc.start()
            for gateway in gateways.values():
                gateway.proc.start()
            world = City(dsn, site, gasco, gateways, centers, tmp_path)
            try:
                await _all_up(world)
                yield world
            except BaseException:
                for proc in procs:
                    print(f"--- {proc.name}\n{proc.tail()}")
                raise


async def _all_up(city: City) -> None:
    for center in city.centers.values():
        await eventually(center.ready, 60, f"center {center.name} ready")
    ids = {g.gateway_id for g in city.gateways.values()}
    center = city.centers["a"]

    def all_online() -> bool:
        seen = {g["gateway_id"]: g for g in center.get("/api/gateways")}
        return all(seen.get(i, {}).get("online") for i in ids)

    await eventually(all_online, 60, "three gateways online at the center")


async def _kit(city: City, gateway: Gateway) -> tuple[SimDetector, list[MqttDevice]]:
    detector = SimDetector(1, battery_mv=0, interval_s=0.5)
    valve = SimValve(2, interval_s=0.5, close_time_s=0.2)
    devices = [
        MqttDevice(city.site.url, gateway.devices[0], detector.kind, model=detector),
        MqttDevice(city.site.url, gateway.devices[1], valve.kind, model=valve),
    ]
    for device in devices:
        await device.start()
    return detector, devices


def _open_emergencies(center: Center, gateway: Gateway) -> list[dict[str, Any]]:
    return [
        i
        for i in center.get("/api/incidents?state=open")
        if i["gateway_id"] == gateway.gateway_id and i.get("category") == "emergency"
    ]


async def test_a_leak_is_one_incident_at_both_instances_and_acknowledged_at_the_gateway(
    city: City,
) -> None:
    g2 = city.gateways[2]
    a, b = city.centers["a"], city.centers["b"]
    _cli("user", "add", "g2sup", "--role", "supervisor", "--data-dir", str(g2.data_dir),
         "--password-stdin", stdin="another long password 2\n")  # fmt: skip
    g2.token = _cli("user", "token", "g2sup", "--data-dir", str(g2.data_dir)).strip()
    detector, devices = await _kit(city, g2)
    try:
        await asyncio.sleep(1.5)  # the kit reports normal first
        start = time.monotonic()
        detector.set_lel(55.0)
        (incident,) = await eventually(lambda: _open_emergencies(a, g2), 10, "incident at A")
        seen_at_a = time.monotonic() - start
        (at_b,) = await eventually(lambda: _open_emergencies(b, g2), 10, "incident at B")
        seen_at_b = time.monotonic() - start
        assert at_b["incident_id"] == incident["incident_id"]
        assert incident["site_id"] == g2.sites[0]
        assert incident["state"] == "new"
        # The must-show: within 1 s at either instance (the bench measures it precisely).
        assert min(seen_at_a, seen_at_b) < 1.0, (seen_at_a, seen_at_b)

        # 55 %LEL raises leak_low and leak_high: acknowledge once both are in the incident, as an
        # officer acknowledges what the page shows.
        def both_leaks() -> bool:
            return len(b.get(f"/api/incidents/{incident['incident_id']}")["alarms"]) >= 2

        await eventually(both_leaks, 10, "leak_low and leak_high in the incident")
        answer = b.post(f"/api/incidents/{incident['incident_id']}/acknowledge", {"note": "on it"})
        assert answer.status_code == 200, answer.text
        leak = await _acknowledged_at_gateway(g2)
        assert leak["acked_by"] == OFFICER

        def acked_event() -> list[Any]:
            return city.rows(
                "SELECT event FROM alarm_events WHERE alarm_id = %s AND transition = %s",
                leak["alarm_id"], "acknowledged",
            )  # fmt: skip

        ((event,),) = await eventually(acked_event, 15, "the acknowledged event at the center")
        assert event["by"] == OFFICER
        detail = a.get(f"/api/incidents/{incident['incident_id']}")
        assert detail["state"] == "acknowledged"
        assert leak["alarm_id"] in detail["alarms"] or any(
            x.get("alarm_id") == leak["alarm_id"] for x in detail["alarms"]
        )
        assert len(_open_emergencies(a, g2)) == 1  # still one incident: leak_low + leak_high
    finally:
        for device in devices:
            await device.stop()


async def _acknowledged_at_gateway(gateway: Gateway) -> dict[str, Any]:
    def acked() -> list[dict[str, Any]]:
        return [
            x
            for x in gateway.api("/api/alarms")
            if x["alarm_type"] == "leak_high" and x["acked_by"]
        ]

    (leak,) = await eventually(acked, 15, "leak_high acknowledged at gateway 2")
    return dict(leak)


async def test_a_killed_gateway_is_an_offline_incident_naming_its_sites(city: City) -> None:
    g3 = city.gateways[3]
    g3.proc.kill9()

    def offline() -> list[dict[str, Any]]:
        return [
            i
            for i in city.centers["b"].get("/api/incidents?state=open")
            if i["gateway_id"] == g3.gateway_id and i.get("kind") == "gateway_offline"
        ]

    (incident,) = await eventually(offline, 30, "gateway offline incident")
    assert incident["severity"] == "critical"
    detail = json.dumps(city.centers["a"].get(f"/api/incidents/{incident['incident_id']}"))
    for site in g3.sites:
        assert site in detail
    assert DISTRICTS[3] in json.dumps(incident, ensure_ascii=False)
    gateways = {g["gateway_id"]: g for g in city.centers["a"].get("/api/gateways")}
    assert gateways[g3.gateway_id]["online"] is False


def _event(gateway_id: str, n: int) -> bytes:
    at = datetime.now(UTC).isoformat()
    return json.dumps(
        {
            "schema": "gasgate/gasco/alarm-event/1", "gateway_id": gateway_id,
            "alarm_id": f"{gateway_id}-flow-{n:05d}", "revision": 1, "alarm_revision": 1,
            "transition": "raised", "state": "unack_active", "active": True, "latched": False,
            "alarm_type": "low_battery", "title": {"zh": "电池电量低", "en": "Low battery"},
            "severity": "low", "message": "battery low",
            "site": {"site_id": f"flow-site-{n % 50}", "name": "s", "address": "a",
                     "district": "Flow", "site_type": "household", "contacts": []},
            "source": f"dev-{n}", "device_id": f"dev-{n}", "rule_id": None, "readings": {},
            "valves": [], "valve_state": None, "escalation": None, "by": None, "note": None,
            "suppressed": False,
            "times": {"raised_at": at, "updated_at": at, "acked_at": None, "cleared_at": None,
                      "closed_at": None, "event_at": at},
        }
    ).encode()  # fmt: skip


async def test_an_instance_killed_mid_flow_loses_and_doubles_nothing(city: City) -> None:
    total, gateway_id = 1000, f"flow-{uuid.uuid4().hex[:6]}"
    a = city.centers["a"]
    async with parse_mqtt_url(city.gasco.url).client(identifier=f"flow-{gateway_id}") as client:
        for n in range(total):
            await client.publish(f"gasco/v1/{gateway_id}/alarms/events", _event(gateway_id, n), 1)
            if n == total // 3:
                a.proc.kill9()  # mid-flow, with events in flight to it
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # a flow, not one burst
    a.proc.start()  # same instance name: its persistent sessions hand over what waited
    await eventually(a.ready, 60, "instance A back")

    def all_in() -> bool:
        ((count,),) = city.rows(
            "SELECT count(*) FROM alarm_events WHERE gateway_id = %s", gateway_id
        )
        return bool(count >= total)

    await eventually(all_in, 60, f"{total} events in the database")
    await asyncio.sleep(1.0)  # anything redelivered late would land now
    rows = city.rows(
        "SELECT alarm_id, revision FROM alarm_events WHERE gateway_id = %s", gateway_id
    )
    assert len(rows) == total
    assert {r[0] for r in rows} == {f"{gateway_id}-flow-{n:05d}" for n in range(total)}
    ((alarms,),) = city.rows("SELECT count(*) FROM alarms WHERE gateway_id = %s", gateway_id)
    assert alarms == total
    by = city.rows(
        "SELECT received_by, count(*) FROM alarm_events WHERE gateway_id = %s GROUP BY 1",
        gateway_id,
    )
    assert {name for name, _ in by} == {"a", "b"}, by  # the $share group split the flow
