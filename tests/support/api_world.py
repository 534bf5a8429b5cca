"""A registry for the API, console and audit tests: the end-to-end restaurant of
``kit_site`` (complete kit, in Futian), a household whose parts are past their service life
with a cylinder overdue (Futian), and a restaurant missing its hose and regulator (Nanshan);
and one user per role (a site_user of the household)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from firmware_bridge.ksp import DeviceKind, Event
from gateway.app import Gateway, GatewaySettings
from gateway.contract import KitReport, report_topic
from gateway.model import Alarm
from gateway.mqtturl import parse_mqtt_url
from gateway.store import Store
from gateway.users import Role, Users
from tests.support.kit_site import DETECTOR, SITE, write_registry

__all__ = [
    "HOUSE",
    "HOUSE_DETECTOR",
    "HOUSE_VALVE",
    "PARTIAL",
    "PARTIAL_DETECTOR",
    "PASSWORD",
    "PHONE",
    "ROLES",
    "World",
    "add_users",
    "running_world",
    "world_settings",
    "write_world",
]

HOUSE: Final = "h-old"
HOUSE_DETECTOR, HOUSE_VALVE = "det-h", "valve-h"
PARTIAL: Final = "rest-part"
PARTIAL_DETECTOR, PARTIAL_VALVE = "det-p", "valve-p"
PHONE: Final = "13800138000"  # the restaurant's contact (kit_site)
PASSWORD: Final = "correct horse battery"
ROLES: Final = {
    "officer": Role.DUTY_OFFICER,
    "super": Role.SUPERVISOR,
    "regulator": Role.REGULATOR,
    "installer": Role.INSTALLER,
    "houseowner": Role.SITE_USER,
}


def write_world(directory: Path, interval_s: int = 60) -> Path:
    write_registry(directory, interval_s)
    with (directory / "sites.csv").open("a", encoding="utf-8") as f:
        f.write(
            f"{HOUSE},Zhang household,household,two_piece,Futian,3-401 Xili Garden,"
            "Zhang Min,13900139000,zh\n"
            f"{PARTIAL},Noodle Bar,restaurant,four_piece,Nanshan,8 Keyuan Rd,"
            "Chen Bo,13700137000,en\n"
        )
    with (directory / "components.csv").open("a", encoding="utf-8") as f:
        f.write(
            f"{HOUSE},leak_detector,{HOUSE_DETECTOR},KD-210C,2015-01-10,,{interval_s}\n"
            f"{HOUSE},shutoff_valve,{HOUSE_VALVE},SV-25E,2015-01-10,{HOUSE_DETECTOR},{interval_s}\n"
            f"{PARTIAL},leak_detector,{PARTIAL_DETECTOR},KD-210C,2025-06-01,,{interval_s}\n"
            f"{PARTIAL},shutoff_valve,{PARTIAL_VALVE},SV-25E,2025-06-01,{PARTIAL_DETECTOR},"
            f"{interval_s}\n"
        )
    (directory / "cylinders.csv").write_text(
        "site_id,cylinder_id,capacity_kg,next_inspection_due\n"
        f"{HOUSE},CYL-OLD,15,2020-01-01\n"
        f"{SITE},CYL-OK,50,2099-01-01\n",
        encoding="utf-8",
    )
    return directory


def add_users(store: Store) -> Users:
    users = Users(store)
    users.prepare()
    for name, role in ROLES.items():
        site = HOUSE if role is Role.SITE_USER else None
        users.add(name, role, PASSWORD, datetime.now(UTC), site)
    return users


@dataclass
class World:
    """A running gateway (real broker, real store, real HTTP server) and a token per role."""

    gateway: Gateway
    users: Users
    tokens: dict[str, str]
    url: str
    mqtt_url: str

    def client(self, name: str | None = None, **more: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.tokens[name]}"} if name else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20, **more)

    async def leak(self, device: str = DETECTOR, lel: float = 55.0, seq: int = 1) -> Alarm:
        """A leak report from ``device`` over the site broker; the alarm it raises."""
        report = KitReport(
            kind=DeviceKind.DETECTOR, seq=seq, event=Event.ALARM, detector={"lel_pct": lel}
        )
        async with parse_mqtt_url(self.mqtt_url).client(identifier=f"t-{uuid.uuid4().hex}") as c:
            await c.publish(report_topic(device), report.to_json(), qos=1)
        return await self.wait_alarm(device, "leak_high")

    async def wait_alarm(self, source: str, alarm_type: str) -> Alarm:
        async with asyncio.timeout(20):
            while True:
                for a in self.gateway.alarms.open_alarms():
                    if a.source == source and a.alarm_type == alarm_type:
                        return a
                await asyncio.sleep(0.02)


def world_settings(tmp_path: Path, mqtt_url: str, **more: object) -> GatewaySettings:
    return GatewaySettings.load(
        None,
        {
            "mqtt": mqtt_url,
            "data_dir": tmp_path / "data",
            "registry": write_world(tmp_path / "registry"),
            "gateway_id": f"gw-{uuid.uuid4().hex[:12]}",
            "log_format": "text",
            "http_port": 0,
            **more,
        },
    )


@asynccontextmanager
async def running_world(tmp_path: Path, mqtt_url: str, **more: object) -> AsyncIterator[World]:
    gateway = Gateway(world_settings(tmp_path, mqtt_url, **more))
    await gateway.start()
    try:
        users = add_users(gateway.store)
        tokens = {name: users.issue_token(name, datetime.now(UTC)) for name in ROLES}
        async with asyncio.timeout(20):
            while not gateway.site_mqtt.connected.is_set():  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.02)
        yield World(gateway, users, tokens, gateway.api.url, mqtt_url)
    finally:
        await gateway.stop()
