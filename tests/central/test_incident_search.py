"""GET /api/incidents?q=...'s search (``central.incidents.list_incidents``) against a real
PostgreSQL with migration 0005's trigram indexes: by the site's name and address (from its
summary, or from the alarm's event when the center has no summary of it), its ids, a device
id, and a contact's phone for those who may read phones; a search text is text, never a
pattern."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from central import db
from central.inbound import AlarmEvent
from central.incidents import Query, list_incidents
from central.ingest import Ingest
from central.users import Officer
from gateway.users import Role
from tests.central.ingest_messages import event, rows, summary

WANG = Officer("wang", Role.DUTY_OFFICER)  # may read phones
ZHAO = Officer("zhao", Role.REGULATOR)  # may not


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    db.upgrade(pg_dsn)
    opened = await db.open_pool(pg_dsn, min_size=1, max_size=2)
    yield opened
    await opened.close()


def _leak(gateway: str, alarm: str, site: str, device_id: str, **facts: Any) -> AlarmEvent:
    """An alarm event whose site and device say more than ``event`` does."""
    message = event(gateway, alarm, 1, site=site)
    body = message.event | {"device_id": device_id}
    body["site"] = body["site"] | facts
    return dataclasses.replace(message, event=body)


@pytest.fixture
async def city(pool: AsyncConnectionPool) -> dict[str, int]:
    """Three sites' open incidents: one known by its summary, two only by their events."""
    await Ingest(pool, "a", clock=lambda: datetime.now(UTC)).apply([
        summary("gw1", "r-1", name="老王饭店", address="漕溪北路 88 号"),
        _leak("gw1", "a-1", "r-1", device_id="1a2b3c4d", contacts=[
            {"name": "王老板", "phone": "13800000001", "lang": "zh", "role": "owner"}]),
        _leak("gw2", "a-2", "h-7", device_id="5e6f7a8b", name="Zhang's flat",
              address="12 Hongqiao Road", contacts=[{"name": "Zhang", "phone": "13900000002"}]),
        _leak("gw3", "a-3", "x-100%", device_id="dev_9", name="Noodle bar 50%",
              address="1 Tianlin Road"),
    ])  # fmt: skip
    ids = await rows(pool, "SELECT site_id, incident_id FROM incidents")
    return {str(site): int(incident) for site, incident in ids}


async def found(pool: AsyncConnectionPool, text: str, officer: Officer = WANG) -> list[str]:
    async with pool.connection() as conn:
        listed = await list_incidents(conn, officer, Query(search=text))
    return sorted(i.site_id or "" for i in listed)


@pytest.mark.parametrize(
    ("text", "sites"),
    [
        ("老王", ["r-1"]),  # the summary's name
        ("漕溪北路", ["r-1"]),  # the summary's address
        ("zhang's FLAT", ["h-7"]),  # the event's name, any case
        ("hongqiao road", ["h-7"]),  # the event's address
        ("Road", ["h-7", "x-100%"]),
        ("5e6f7a", ["h-7"]),  # a device id
        ("h-7", ["h-7"]),  # a site id
        ("gw3", ["x-100%"]),  # a gateway id
        ("13800000001", ["r-1"]),  # a contact's phone
        ("王老板", ["r-1"]),  # a contact's name
        ("50%", ["x-100%"]),  # % and _ are text, not patterns
        ("dev_9", ["x-100%"]),
        ("dev%9", []),
        ("r_1", []),
        ("nowhere", []),
    ],
)
async def test_the_search_finds_by_what_an_officer_knows(
    pool: AsyncConnectionPool, city: dict[str, int], text: str, sites: list[str]
) -> None:
    assert len(city) == 3
    assert await found(pool, text) == sites


async def test_no_phone_search_for_who_may_not_read_phones(
    pool: AsyncConnectionPool, city: dict[str, int]
) -> None:
    assert await found(pool, "13900000002") == ["h-7"]
    assert await found(pool, "13900000002", ZHAO) == []
    assert await found(pool, "Zhang", ZHAO) == ["h-7"]  # the site's name, not the contact's
    assert await found(pool, "王老板", ZHAO) == []


async def test_a_closed_incident_is_found_only_among_all(
    pool: AsyncConnectionPool, city: dict[str, int]
) -> None:
    await rows(
        pool, "UPDATE incidents SET state = 'closed' WHERE incident_id = %s RETURNING 1",
        city["h-7"],
    )  # fmt: skip
    assert await found(pool, "Hongqiao") == []
    async with pool.connection() as conn:
        every = await list_incidents(conn, WANG, Query(state="all", search="Hongqiao"))
    assert [i.incident_id for i in every] == [city["h-7"]]
