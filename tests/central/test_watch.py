"""central/watch.py: a gateway offline or silent is one critical incident naming its sites,
whichever instances notice; heard again, the incident closes by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import AsyncConnectionPool

from central import db
from central.ingest import Ingest
from central.watch import sweep
from tests.central.ingest_messages import availability, rows, summary

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SILENT = 600.0


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    db.upgrade(pg_dsn)
    opened = await db.open_pool(pg_dsn, min_size=1, max_size=6)
    yield opened
    await opened.close()


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


async def heard(pool: AsyncConnectionPool, when: float, *messages: object) -> None:
    await Ingest(pool, "a", clock=lambda: at(when)).apply(list(messages))  # type: ignore[arg-type]


async def offline_incidents(pool: AsyncConnectionPool) -> list[tuple[object, ...]]:
    return await rows(
        pool,
        "SELECT gateway_id, state, severity, category, district, title FROM incidents"
        " WHERE kind = 'gateway_offline' ORDER BY incident_id",
    )


async def test_a_silent_gateway_is_one_incident_across_concurrent_sweeps(
    pool: AsyncConnectionPool,
) -> None:
    await heard(pool, 0, *(summary("gw3", f"r-{i}", district="Xuhui") for i in range(3)))
    await heard(pool, 0, summary("gw4", "r-1"))
    await heard(pool, SILENT, summary("gw4", "r-1", at=1))
    assert await sweep(pool, at(SILENT), SILENT) == []  # not yet silent for long enough
    results = await asyncio.gather(*(sweep(pool, at(SILENT + 1), SILENT) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert await offline_incidents(pool) == [
        (
            "gw3",
            "new",
            "critical",
            "emergency",
            "Xuhui",
            {
                "zh": "网关离线：Xuhui 区 3 个场所无人监测",  # noqa: RUF001
                "en": "3 sites unmonitored in district Xuhui",
            },
        )
    ]
    ((kind, detail),) = await rows(pool, "SELECT kind, detail FROM timeline")
    assert kind == "gateway"
    assert detail["sites"] == ["r-0", "r-1", "r-2"]
    assert detail["why"] == "silent"
    assert await sweep(pool, at(SILENT + 2), SILENT) == []


async def test_a_last_will_opens_the_incident_at_once_and_online_closes_it(
    pool: AsyncConnectionPool,
) -> None:
    await heard(pool, 0, summary("gw3", "r-1"), summary("gw3", "r-2", district="Minhang"))
    both = await asyncio.gather(
        Ingest(pool, "a", clock=lambda: at(1)).apply([availability("gw3", False)]),
        Ingest(pool, "b", clock=lambda: at(1)).apply([availability("gw3", False)]),
    )
    assert sorted(a.incidents_opened for a in both) == [0, 1]
    ((gateway, state, *_, title),) = await offline_incidents(pool)
    assert (gateway, state) == ("gw3", "new")
    assert title["en"] == "2 sites unmonitored in districts Minhang, Xuhui"
    assert await sweep(pool, at(2), SILENT) == []  # already open
    await heard(pool, 3, availability("gw3", True))
    assert [s for _, s, *_ in await offline_incidents(pool)] == ["closed"]
    entries = await rows(pool, "SELECT kind, detail FROM timeline ORDER BY entry_id")
    assert [k for k, _ in entries] == ["gateway", "gateway", "transition"]
    assert entries[1][1]["text"]["en"] == "gateway back online"
    assert entries[2][1]["to"] == "closed"
    assert await rows(pool, "SELECT online FROM gateways") == [(True,)]
    # down again later: a new incident
    await heard(pool, 4, availability("gw3", False))
    assert [s for _, s, *_ in await offline_incidents(pool)] == ["closed", "new"]


async def test_a_gateway_heard_again_is_closed_by_the_sweep(pool: AsyncConnectionPool) -> None:
    await heard(pool, 0, summary("gw3", "r-1"))
    (opened,) = await sweep(pool, at(SILENT + 1), SILENT)
    await heard(pool, SILENT + 2, summary("gw3", "r-1", at=5))
    assert await sweep(pool, at(SILENT + 3), SILENT) == []
    assert await rows(
        pool, "SELECT state, closed_at FROM incidents WHERE incident_id = %s", opened
    ) == [("closed", at(SILENT + 3))]


async def test_a_gateway_without_sites_is_named(pool: AsyncConnectionPool) -> None:
    await heard(pool, 0, availability("gw9", False))
    ((*_, title),) = await offline_incidents(pool)
    assert title["en"] == "Gateway gw9 offline (no sites known)"
