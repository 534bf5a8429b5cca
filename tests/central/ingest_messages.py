"""gasco/v1 messages for the ingest tests, built the way the link gets them (``inbound.parse``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from central.inbound import AlarmEvent, Availability, CommandReply, SiteSummary, parse

__all__ = ["T0", "add_command", "availability", "event", "reply", "rows", "summary"]

PREFIX = "gasco/v1"
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def event(
    gateway: str,
    alarm: str,
    revision: int,
    *,
    alarm_type: str = "leak_low",
    severity: str = "high",
    state: str = "unack_active",
    transition: str = "raised",
    site: str | None = "r-1",
    district: str = "Xuhui",
    valve_state: str | None = None,
    by: str | None = None,
    at: float = 0.0,
) -> AlarmEvent:
    body: dict[str, Any] = {
        "schema": "gasgate/gasco/alarm-event/1",
        "gateway_id": gateway,
        "alarm_id": alarm,
        "revision": revision,
        "transition": transition,
        "state": state,
        "active": state in ("unack_active", "ack_active"),
        "alarm_type": alarm_type,
        "title": {"zh": f"{alarm_type} zh", "en": f"{alarm_type} en"},
        "severity": severity,
        "site": None
        if site is None
        else {
            "site_id": site,
            "name": f"Site {site}",
            "district": district,
            "site_type": "restaurant",
        },
        "valve_state": valve_state,
        "by": by,
        "times": {"raised_at": _at(0), "updated_at": _at(at), "event_at": _at(at)},
    }
    message = parse(PREFIX, f"{PREFIX}/{gateway}/alarms/events", json.dumps(body).encode())
    assert isinstance(message, AlarmEvent)
    return message


def summary(
    gateway: str, site: str, *, at: float = 0.0, district: str = "Xuhui", **extra: Any
) -> SiteSummary:
    body = {
        "schema": "gasgate/gasco/site-summary/1",
        "gateway_id": gateway,
        "site_id": site,
        "name": f"Site {site}",
        "district": district,
        "site_type": "restaurant",
        "kit": {"complete": True, "missing": []},
        "devices": {"total": 2, "online": 2, "offline": 0},
        "open_alarms": [],
        "at": _at(at),
        **extra,
    }
    message = parse(PREFIX, f"{PREFIX}/{gateway}/sites/{site}/summary", json.dumps(body).encode())
    assert isinstance(message, SiteSummary)
    return message


def availability(gateway: str, online: bool) -> Availability:
    word = b"online" if online else b"offline"
    message = parse(PREFIX, f"{PREFIX}/{gateway}/availability", word)
    assert isinstance(message, Availability)
    return message


def reply(
    gateway: str, cmd_id: str, *, accepted: bool = True, officer: str = "officer-7"
) -> CommandReply:
    body = {
        "schema": "gasgate/gasco/command-reply/1",
        "cmd_id": cmd_id,
        "alarm_id": "a-1",
        "action": "acknowledge",
        "officer_id": officer,
        "accepted": accepted,
        "reason": None if accepted else "wrong_state",
        "state": "ack_active",
        "at": _at(5),
    }
    message = parse(PREFIX, f"{PREFIX}/{gateway}/reply/{officer}", json.dumps(body).encode())
    assert isinstance(message, CommandReply)
    return message


async def rows(pool: AsyncConnectionPool, query: str, *params: object) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall()


async def add_command(
    pool: AsyncConnectionPool, cmd_id: str, gateway: str, incident_id: int | None
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO commands (cmd_id, incident_id, gateway_id, alarm_id, officer, action,"
            " created_at) VALUES (%s, %s, %s, 'a-1', 'officer-7', 'acknowledge', now())",
            (cmd_id, incident_id, gateway),
        )
