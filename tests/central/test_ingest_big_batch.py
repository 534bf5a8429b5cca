"""One ingest transaction of 10,000 new alarms on a server whose lock table holds fewer locks
than that (about 7,500): every lock a transaction takes is held to its commit, so one per alarm
(the site-answers trigger of migration 0002) ran out of shared memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from central import db
from central.ingest import Ingest
from tests.central.ingest_messages import T0, event, rows
from tests.support.postgres import PostgreSQL, fresh_database

ALARMS = 10_000
SITES = 100  # one lock per site's group key: a hundred, far below the table's size


@pytest.fixture(scope="module")
def small_lock_server() -> Iterator[str]:
    """A private server (max_connections 200, as every test server) with 16 locks per
    transaction: 3,200 lock slots, which PostgreSQL's spare shared memory stretches to about
    7,500 locks."""
    cluster = PostgreSQL()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_locks_per_transaction = 16")
        cluster.stop()
        cluster.start()
        yield cluster.dsn
    finally:
        cluster.remove()


@pytest.fixture
async def pool(small_lock_server: str) -> AsyncIterator[AsyncConnectionPool]:
    dsn = fresh_database(small_lock_server)
    db.upgrade(dsn)
    opened = await db.open_pool(dsn, min_size=1, max_size=2)
    yield opened
    await opened.close()


async def test_ten_thousand_new_alarms_in_one_transaction(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO site_answers (alarm_id, contact, lang, answer, at)"
            " VALUES ('a-9999', 0, 'en', 'left', %s)",
            (T0,),
        )
    batch = [event(f"gw{i % SITES}", f"a-{i}", 1) for i in range(ALARMS)]
    applied = await Ingest(pool, "a", clock=lambda: T0).apply(batch)
    assert (applied.events_new, applied.incidents_opened) == (ALARMS, SITES)
    assert await rows(pool, "SELECT count(*) FROM alarms") == [(ALARMS,)]
    # the answer that waited for one of them is on its incident's timeline
    assert await rows(
        pool,
        "SELECT t.detail ->> 'answer', t.detail ->> 'before_alarm' FROM timeline t"
        " JOIN alarms a ON a.incident_id = t.incident_id AND a.alarm_id = 'a-9999'"
        " WHERE t.kind = 'site_answer'",
    ) == [("left", "true")]
    assert await rows(pool, "SELECT count(*) FROM site_answers") == [(0,)]
