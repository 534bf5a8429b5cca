"""A small city for the control-room tests (API, lifecycle, live stream), in plain SQL, and an
app on a real PostgreSQL.

* gw1 (Xuhui, online): site r1 "老王饭店" with an emergency incident of a leak_low (unacked,
  cleared) and a leak_high (unacked, active), valve closed; site r2 with a maintenance incident
  (low_battery, ack_active).
* gw2 (Minhang, offline): site m1; a gateway_offline incident naming its sites, no alarms.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from central.api import create_app
from central.db import upgrade
from central.notify import Hub
from central.users import add_user, issue_token
from gateway.users import Role

__all__ = ["City", "Settings", "city_app", "seed"]

PASSWORD = "a long enough password"


@dataclass(frozen=True)
class Settings:
    silent_after_s: float = 900.0
    timezone: str = "Asia/Shanghai"
    map_tile_url: str = ""


@dataclass
class City:
    dsn: str
    app: FastAPI
    hub: Hub
    pool: AsyncConnectionPool[Any]
    emergency: int
    maintenance: int
    offline: int
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, user: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://center", headers=headers
        )

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def _event(alarm_id: str, alarm_type: str, state: str, *, site: dict[str, Any]) -> str:
    return json.dumps({
        "alarm_id": alarm_id, "alarm_type": alarm_type, "state": state, "device_id": "det-1",
        "message": f"{alarm_type} at the kitchen", "site": site,
        "valves": [{"device_id": "valve-1", "state": "closed"}, {"device_id": "bad"}, "junk"],
    })  # fmt: skip


def seed(dsn: str) -> dict[str, int]:
    """Writes the city; returns the incident ids."""
    now = datetime.now(UTC)
    site = {
        "site_id": "r1", "name": "老王饭店", "address": "漕溪北路 88 号", "district": "Xuhui",
        "contacts": [{"name": "王老板", "phone": "13800000001", "lang": "zh", "role": "owner"}],
    }  # fmt: skip
    other = {
        "site_id": "r2",
        "name": "小李面馆",
        "address": "",
        "district": "Xuhui",
        "contacts": [],
    }
    sites = {"emergency": site, "maintenance": other}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for gw, online in (("gw1", True), ("gw2", False)):
            conn.execute(
                "INSERT INTO gateways (gateway_id, online, last_seen, first_seen)"
                " VALUES (%s, %s, %s, %s)",
                (gw, online, now, now - timedelta(days=1)),
            )
        for gw, sid, name, district in (
            ("gw1", "r1", "老王饭店", "Xuhui"),
            ("gw1", "r2", "小李面馆", "Xuhui"),
            ("gw2", "m1", "Minhang Noodles", "Minhang"),
            ("gw2", "m2", "Minhang Dumplings", "Minhang"),
        ):
            conn.execute(
                "INSERT INTO sites (gateway_id, site_id, name, address, district, site_type,"
                " protected, summary, summary_at, received_at)"
                " VALUES (%s, %s, %s, 'somewhere', %s, 'restaurant', true, '{}', %s, %s)",
                (gw, sid, name, district, now, now),
            )
        ids = {
            "emergency": _incident(conn, "site", "emergency", "gw1", "r1", "Xuhui", "critical",
                                   "closed", now),
            "maintenance": _incident(conn, "site", "maintenance", "gw1", "r2", "Xuhui", "low",
                                     None, now),
            "offline": _incident(conn, "gateway_offline", "emergency", "gw2", None, "Minhang",
                                 "critical", None, now),
        }  # fmt: skip
        for alarm_id, incident, alarm_type, severity, state, active in (
            ("gw1-a1", "emergency", "leak_low", "high", "unack_cleared", False),
            ("gw1-a2", "emergency", "leak_high", "critical", "unack_active", True),
            ("gw1-a3", "maintenance", "low_battery", "low", "ack_active", True),
        ):
            conn.execute(
                "INSERT INTO alarms (alarm_id, gateway_id, site_id, incident_id, revision,"
                " alarm_type, severity, state, active, valve_state, event, raised_at, updated_at)"
                " VALUES (%s, 'gw1', %s, %s, 1, %s, %s, %s, %s, 'closed', %s, %s, %s)",
                (alarm_id, sites[incident]["site_id"], ids[incident], alarm_type, severity,
                 state, active, _event(alarm_id, alarm_type, state, site=sites[incident]), now,
                 now),
            )  # fmt: skip
    return ids


def _incident(
    conn: psycopg.Connection[Any], kind: str, category: str, gateway: str, site: str | None,
    district: str, severity: str, valve: str | None, now: datetime,
) -> int:  # fmt: skip
    title = {"zh": f"{district} {category}", "en": f"{district} {category}"}
    if kind == "gateway_offline":
        title = {
            "zh": f"{district} 2 个地点失去监测",
            "en": f"2 sites unmonitored in district {district}",
        }
    row = conn.execute(
        "INSERT INTO incidents (kind, category, gateway_id, site_id, district, severity,"
        " valve_state, title, opened_at, raised_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING incident_id",
        (kind, category, gateway, site, district, severity, valve, json.dumps(title),
         now - timedelta(minutes=5), now - timedelta(minutes=5), now),
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def users(dsn: str) -> dict[str, str]:
    """wang (duty officer), li (duty officer, Minhang only), zhao (regulator): their tokens."""
    at = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_user(conn, "wang", Role.DUTY_OFFICER, PASSWORD, districts=[], at=at)
        add_user(conn, "li", Role.DUTY_OFFICER, PASSWORD, districts=["Minhang"], at=at)
        add_user(conn, "zhao", Role.REGULATOR, PASSWORD, districts=[], at=at)
        return {name: issue_token(conn, name, at) for name in ("wang", "li", "zhao")}


@asynccontextmanager
async def city_app(dsn: str) -> AsyncIterator[City]:
    upgrade(dsn)
    ids = seed(dsn)
    tokens = users(dsn)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    hub = Hub(dsn)
    await hub.start()
    try:
        await hub.wait_listening(10)
        app = create_app(pool, Settings(), hub)
        yield City(dsn, app, hub, pool, ids["emergency"], ids["maintenance"], ids["offline"],
                   tokens)  # fmt: skip
    finally:
        await hub.stop()
        await pool.close()
