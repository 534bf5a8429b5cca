"""central/ingest.py against a real PostgreSQL: once per event, highest revision wins, one incident
per site episode, newest summary wins, replies, NOTIFY, and two instances at once."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from central import db
from central.inbound import Inbound
from central.ingest import Ingest, settle
from tests.central.ingest_messages import add_command, availability, event, reply, rows, summary

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TABLES = {
    "alarm_events": "SELECT alarm_id, revision, gateway_id, transition, received_by, event",
    "alarms": "SELECT alarm_id, incident_id, revision, state, severity, valve_state",
    "incidents": "SELECT incident_id, kind, category, site_id, severity, state, valve_state, title",
    "timeline": "SELECT incident_id, kind, actor, detail",
    "sites": "SELECT gateway_id, site_id, name, district, protected, lat, lon, summary_at",
    "gateways": "SELECT gateway_id, online, last_seen, last_alarm_id",
    "commands": "SELECT cmd_id, accepted, reason, replied_at",
}


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    db.upgrade(pg_dsn)
    opened = await db.open_pool(pg_dsn, min_size=1, max_size=6)
    yield opened
    await opened.close()


def ingest(pool: AsyncConnectionPool, instance: str = "a", now: datetime = NOW) -> Ingest:
    return Ingest(pool, instance, clock=lambda: now)


async def snapshot(pool: AsyncConnectionPool) -> dict[str, list[str]]:
    return {t: sorted(map(repr, await rows(pool, f"{q} FROM {t}"))) for t, q in TABLES.items()}


async def open_incidents(pool: AsyncConnectionPool) -> list[tuple[object, ...]]:
    return await rows(
        pool,
        "SELECT gateway_id, site_id, category, count(*) FROM incidents WHERE state <> 'closed'"
        " AND kind = 'site' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )


async def test_the_same_batch_twice_changes_nothing_the_second_time(
    pool: AsyncConnectionPool,
) -> None:
    await add_command(pool, "c-1", "gw1", None)
    batch: list[Inbound] = [
        summary("gw1", "r-1"),
        summary("gw1", "r-2", district="Minhang"),
        availability("gw1", True),
        event("gw1", "a-1", 1),
        event("gw1", "a-1", 2, transition="escalated"),
        event("gw1", "a-2", 1, alarm_type="low_battery", severity="low", site="r-2"),
        reply("gw1", "c-1"),
        reply("gw1", "c-unknown"),
    ]
    first = await ingest(pool).apply(batch)
    assert (first.events_new, first.events_duplicate, first.events_stale) == (3, 0, 0)
    assert (first.summaries_applied, first.summaries_stale, first.availability) == (2, 0, 1)
    assert (first.replies, first.replies_unknown, first.incidents_opened) == (1, 1, 2)
    before = await snapshot(pool)
    second = await ingest(pool, "b").apply(batch)
    assert (second.events_new, second.events_duplicate, second.incidents_opened) == (0, 3, 0)
    assert (second.summaries_applied, second.summaries_stale) == (0, 2)
    assert (second.replies, second.replies_duplicate, second.replies_unknown) == (0, 1, 1)
    assert await snapshot(pool) == before
    assert await rows(pool, "SELECT DISTINCT received_by FROM alarm_events") == [("a",)]


async def test_a_duplicate_inside_one_batch_counts_once(pool: AsyncConnectionPool) -> None:
    applied = await ingest(pool).apply([event("gw1", "a-1", 1), event("gw1", "a-1", 1)])
    assert (applied.events_new, applied.events_duplicate) == (1, 1)
    assert await rows(pool, "SELECT count(*) FROM timeline") == [(1,)]


async def test_a_lower_revision_never_overwrites_a_higher_one(pool: AsyncConnectionPool) -> None:
    three = event("gw1", "a-1", 3, state="ack_active", transition="acknowledged", by="officer-7")
    await ingest(pool).apply([three])
    late = await ingest(pool).apply([event("gw1", "a-1", 2, transition="escalated")])
    assert (late.events_new, late.events_stale, late.events_duplicate) == (0, 1, 0)
    assert await rows(pool, "SELECT revision, state FROM alarms") == [(3, "ack_active")]
    assert await rows(pool, "SELECT revision FROM alarm_events ORDER BY 1") == [(2,), (3,)]
    details = [d for (d,) in await rows(pool, "SELECT detail FROM timeline ORDER BY entry_id")]
    assert [(d["revision"], d.get("late")) for d in details] == [(3, None), (2, True)]
    # both orders inside one batch end the same way
    applied = await ingest(pool).apply(
        [event("gw1", "b-1", 2, state="normal"), event("gw1", "b-1", 1)]
    )
    assert (applied.events_new, applied.events_stale) == (2, 0)
    assert await rows(pool, "SELECT revision, state FROM alarms WHERE alarm_id = 'b-1'") == [
        (2, "normal")
    ]


async def test_one_site_episode_is_one_incident_and_upkeep_is_apart(
    pool: AsyncConnectionPool,
) -> None:
    run = ingest(pool)
    await run.apply([event("gw1", "low", 1, valve_state="closed")])
    await run.apply(
        [
            event(
                "gw1", "high", 1, alarm_type="leak_high", severity="critical", valve_state="closed"
            ),
            event(
                "gw1",
                "fail",
                1,
                alarm_type="valve_failed_to_close",
                severity="critical",
                valve_state="open",
            ),
            event("gw1", "bat", 1, alarm_type="low_battery", severity="low"),
            event("gw1", "other-site", 1, site="r-2"),
        ]
    )
    assert await open_incidents(pool) == [
        ("gw1", "r-1", "emergency", 1),
        ("gw1", "r-1", "maintenance", 1),
        ("gw1", "r-2", "emergency", 1),
    ]
    (incident,) = await rows(
        pool,
        "SELECT severity, valve_state, title, district FROM incidents"
        " WHERE site_id = 'r-1' AND category = 'emergency'",
    )
    assert incident[:2] == ("critical", "open")
    assert incident[2]["en"] == "valve_failed_to_close en at Site r-1"  # first critical
    assert incident[3] == "Xuhui"
    members = await rows(
        pool,
        "SELECT a.alarm_id FROM alarms a JOIN incidents i USING (incident_id)"
        " WHERE i.site_id = 'r-1' AND i.category = 'emergency' ORDER BY 1",
    )
    assert members == [("fail",), ("high",), ("low",)]


async def test_an_incident_closes_once_resolved_and_every_alarm_normal(
    pool: AsyncConnectionPool,
) -> None:
    run = ingest(pool)
    applied = await run.apply(
        [event("gw1", "a-1", 1), event("gw1", "a-2", 1, alarm_type="leak_high")]
    )
    assert applied.incidents_opened == 1
    ((incident_id,),) = await rows(pool, "SELECT incident_id FROM incidents")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE incidents SET state = 'resolved' WHERE incident_id = %s", (incident_id,)
        )
        assert not await settle(conn, incident_id, NOW)  # the alarms are still open
    await run.apply([event("gw1", "a-1", 2, state="normal", transition="resolved")])
    assert await rows(pool, "SELECT state FROM incidents") == [("resolved",)]
    await run.apply([event("gw1", "a-2", 2, state="normal", transition="resolved")])
    assert await rows(pool, "SELECT state, closed_at FROM incidents") == [("closed", NOW)]
    last = await rows(
        pool, "SELECT kind, detail->>'to' FROM timeline ORDER BY entry_id DESC LIMIT 1"
    )
    assert last == [("transition", "closed")]
    # raised again afterwards: a new incident, the closed one stays closed
    reraised = await run.apply([event("gw1", "a-1", 3, transition="raised")])
    assert reraised.incidents_opened == 1
    assert await rows(pool, "SELECT state FROM incidents ORDER BY incident_id") == [
        ("closed",),
        ("new",),
    ]


async def test_settle_closes_when_the_officer_resolves_last(pool: AsyncConnectionPool) -> None:
    await ingest(pool).apply([event("gw1", "a-1", 1), event("gw1", "a-1", 2, state="normal")])
    ((incident_id,),) = await rows(pool, "SELECT incident_id FROM incidents")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE incidents SET state = 'resolved' WHERE incident_id = %s", (incident_id,)
        )
        assert await settle(conn, incident_id, NOW)
        assert not await settle(conn, incident_id, NOW)  # once


async def test_a_new_leak_does_not_hide_under_a_resolved_incident(
    pool: AsyncConnectionPool,
) -> None:
    run = ingest(pool)
    await run.apply([event("gw1", "a-1", 1)])
    async with pool.connection() as conn:
        await conn.execute("UPDATE incidents SET state = 'resolved'")
    applied = await run.apply([event("gw1", "a-2", 1, alarm_type="leak_high")])
    assert applied.incidents_opened == 1


async def test_a_summary_older_than_the_stored_one_is_ignored(pool: AsyncConnectionPool) -> None:
    run = ingest(pool)
    newer = summary("gw1", "r-1", at=10, protected=True, location={"lat": 31.2, "lon": 121.4})
    applied = await run.apply([newer, summary("gw1", "r-1", at=5, district="Old")])
    assert (applied.summaries_applied, applied.summaries_stale) == (1, 1)
    older = await run.apply([summary("gw1", "r-1", at=9, district="Old")])
    assert (older.summaries_applied, older.summaries_stale) == (0, 1)
    assert await rows(pool, "SELECT district, protected, lat, lon FROM sites") == [
        ("Xuhui", True, 31.2, 121.4)
    ]
    odd = summary("gw1", "r-1", at=20, protected="yes", location={"lat": 1e9, "lon": "121"})
    await run.apply([odd])
    assert await rows(pool, "SELECT protected, lat, lon FROM sites") == [(None, None, None)]


async def test_a_batch_of_more_summaries_than_one_statement_takes_them_all(
    pool: AsyncConnectionPool,
) -> None:
    """Summaries are upserted some hundreds per statement: every slice counts, a newer summary
    of a site in another slice still wins, and the stored ones stay the newest."""
    run = ingest(pool)
    await run.apply([summary("gw1", "s-0007", at=50, district="Kept")])
    batch = [summary(f"gw{i % 3}", f"s-{i:04d}", at=10) for i in range(1_300)]
    batch.append(summary("gw1", "s-0001", at=20, district="Newer"))  # same site, later slot
    applied = await run.apply(batch)
    # s-0001 twice (the older one never tried), s-0007 older than the stored one
    assert (applied.summaries_applied, applied.summaries_stale) == (1_299, 2)
    assert await rows(pool, "SELECT count(*) FROM sites") == [(1_300,)]
    assert await rows(
        pool, "SELECT site_id, district FROM sites WHERE district <> 'Xuhui' ORDER BY site_id"
    ) == [("s-0001", "Newer"), ("s-0007", "Kept")]


async def test_text_postgresql_refuses_does_not_fail_the_batch(pool: AsyncConnectionPool) -> None:
    bad = event("gw1", "a-1", 1)
    bad.event["message"] = "gas\x00 \ud800"
    applied = await ingest(pool).apply([bad, summary("gw1", "r-1")])
    assert applied.events_new == 1
    assert await rows(pool, "SELECT event->>'message' FROM alarm_events") == [("gas ?",)]


async def test_a_reply_updates_its_command_and_the_incident_timeline(
    pool: AsyncConnectionPool,
) -> None:
    await ingest(pool).apply([event("gw1", "a-1", 1)])
    ((incident_id,),) = await rows(pool, "SELECT incident_id FROM incidents")
    await add_command(pool, "c-1", "gw1", incident_id)
    await add_command(pool, "c-2", "gw2", incident_id)
    applied = await ingest(pool).apply([reply("gw1", "c-1", accepted=False), reply("gw1", "c-2")])
    assert (applied.replies, applied.replies_unknown) == (1, 1)  # c-2 is another gateway's
    assert await rows(
        pool, "SELECT cmd_id, accepted, reason, replied_at FROM commands ORDER BY 1"
    ) == [
        ("c-1", False, "wrong_state", NOW),
        ("c-2", None, None, None),
    ]
    entry = await rows(pool, "SELECT actor, detail FROM timeline WHERE kind = 'reply'")
    assert entry == [
        (
            "officer-7",
            {
                "cmd_id": "c-1",
                "alarm_id": "a-1",
                "action": "acknowledge",
                "accepted": False,
                "reason": "wrong_state",
                "detail": None,
                "state": "ack_active",
            },
        )
    ]


async def test_gateways_are_known_from_anything_they_say(pool: AsyncConnectionPool) -> None:
    await ingest(pool).apply(
        [event("gw1", "a-1", 1), summary("gw2", "r-1"), availability("gw3", True)]
    )
    later = NOW + timedelta(seconds=5)
    # a retained summary read again (an instance starting) is no sign of life
    await ingest(pool, now=later).apply([event("gw1", "a-2", 1), summary("gw2", "r-1")])
    assert await rows(
        pool,
        "SELECT gateway_id, online, last_seen, last_alarm_id, first_seen FROM gateways ORDER BY 1",
    ) == [
        ("gw1", None, later, "a-2", NOW),
        ("gw2", None, NOW, None, NOW),
        ("gw3", True, NOW, None, NOW),
    ]


async def test_changes_are_notified_on_commit(pool: AsyncConnectionPool, pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {db.CHANNEL}")
        await ingest(pool).apply([event("gw1", "a-1", 1)])
        (note,) = [n async for n in listener.notifies(timeout=2, stop_after=1)]
    ((incident_id,),) = await rows(pool, "SELECT incident_id FROM incidents")
    assert json.loads(note.payload) == {
        "incidents": [incident_id],
        "gateways": ["gw1"],
        "commands": [],
    }


async def test_two_instances_with_overlapping_batches_make_one_incident_per_episode(
    pool: AsyncConnectionPool,
) -> None:
    rng = random.Random(13)
    messages: list[Inbound] = []
    for g in range(4):
        for s in range(5):
            for a, kind in enumerate(
                ("leak_low", "leak_high", "valve_failed_to_close", "low_battery")
            ):
                alarm = f"gw{g}-r{s}-{a}"
                for revision in (1, 2, 3):
                    state = "normal" if revision == 3 else "unack_active"
                    messages.append(
                        event(f"gw{g}", alarm, revision, alarm_type=kind, site=f"r{s}", state=state)
                    )
            messages.append(summary(f"gw{g}", f"r{s}", at=s))
        messages.append(availability(f"gw{g}", g != 2))
    a, b = ingest(pool, "a"), ingest(pool, "b")
    for _ in range(3):
        one, two = messages[:], messages[:]
        rng.shuffle(one)
        rng.shuffle(two)
        results = await asyncio.gather(
            *(a.apply(one[i : i + 40]) for i in range(0, len(one), 40)),
            *(b.apply(two[i : i + 40]) for i in range(0, len(two), 40)),
        )
        assert all(r is not None for r in results)
    assert await rows(
        pool, "SELECT count(*), count(DISTINCT (alarm_id, revision)) FROM alarm_events"
    ) == [(240, 240)]
    assert await rows(
        pool, "SELECT count(*) FROM alarms WHERE revision = 3 AND state = 'normal'"
    ) == [(80,)]
    counts = await rows(
        pool,
        "SELECT category, count(*), count(DISTINCT (gateway_id, site_id)) FROM incidents"
        " WHERE kind = 'site' GROUP BY 1 ORDER BY 1",
    )
    assert counts == [("emergency", 20, 20), ("maintenance", 20, 20)]
    assert await rows(pool, "SELECT gateway_id FROM incidents WHERE kind = 'gateway_offline'") == [
        ("gw2",)
    ]
    assert await rows(pool, "SELECT count(*) FROM sites") == [(20,)]


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[tuple[int, int, int]]]:
    """(site, alarm, revision) events of 2 sites x 2 alarms x up to 4 revisions, some twice, in
    any order, cut into batches."""
    events = [
        (s, a, r) for s in range(2) for a in range(2) for r in range(1, draw(st.integers(1, 4)) + 1)
    ]
    sent = draw(st.permutations(events + draw(st.lists(st.sampled_from(events), max_size=4))))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(sent) - 1)), max_size=4)))
    return [sent[i:j] for i, j in zip([0, *cuts], [*cuts, len(sent)], strict=True)]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries())
def test_any_order_any_duplicates_end_the_same(
    pg_dsn: str, batches: list[list[tuple[int, int, int]]]
) -> None:
    run = uuid.uuid4().hex[:8]  # one database for every example: each its own gateway

    def message(site: int, alarm: int, revision: int) -> Inbound:
        kind = ("leak_low", "leak_high")[alarm]
        return event(
            run, f"{run}-{site}-{alarm}", revision, alarm_type=kind, site=f"r{site}", at=revision
        )

    async def scenario() -> None:
        db.upgrade(pg_dsn)
        pool = await db.open_pool(pg_dsn, min_size=1, max_size=2)
        try:
            for batch in batches:
                await ingest(pool).apply([message(*m) for m in batch])
            sent = {m for batch in batches for m in batch}
            top = {(s, a): max(r for s2, a2, r in sent if (s2, a2) == (s, a)) for s, a, _ in sent}
            got = await rows(
                pool, "SELECT alarm_id, revision FROM alarms WHERE gateway_id = %s", run
            )
            assert dict(got) == {f"{run}-{s}-{a}": r for (s, a), r in top.items()}
            assert await rows(
                pool, "SELECT count(*) FROM alarm_events WHERE gateway_id = %s", run
            ) == [(len(sent),)]
            per_site = await rows(
                pool,
                "SELECT site_id, count(*) FROM incidents WHERE gateway_id = %s"
                " GROUP BY 1 ORDER BY 1",
                run,
            )
            assert per_site == [("r0", 1), ("r1", 1)]
            entries = await rows(
                pool,
                "SELECT count(*) FROM timeline t JOIN incidents i USING (incident_id)"
                " WHERE i.gateway_id = %s",
                run,
            )
            assert entries == [(len(sent),)]
        finally:
            await pool.close()

    asyncio.run(scenario())


async def test_alarms_of_no_site_group_under_the_gateway(pool: AsyncConnectionPool) -> None:
    run = ingest(pool)
    await run.apply([event("gw1", "rx-1", 1, alarm_type="receiver_offline", site=None)])
    await run.apply([event("gw1", "rx-2", 1, alarm_type="receiver_offline", site=None)])
    assert await open_incidents(pool) == [("gw1", None, "emergency", 1)]


async def test_resolve_and_the_last_normal_event_at_once_always_close(
    pool: AsyncConnectionPool,
) -> None:
    """An officer's resolve (as central/incidents.py takes it: group lock, row lock, settle) and
    the event that makes the last alarm normal, racing: whichever commits last closes it."""
    run = ingest(pool)

    async def resolve(incident_id: int) -> None:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(gateway_id || '/' || coalesce(site_id, '')"
                " || '/' || category)) FROM incidents WHERE incident_id = %s",
                (incident_id,),
            )
            await conn.execute(
                "SELECT 1 FROM incidents WHERE incident_id = %s FOR UPDATE", (incident_id,)
            )
            await conn.execute(
                "UPDATE incidents SET state = 'resolved' WHERE incident_id = %s", (incident_id,)
            )
            await settle(conn, incident_id, NOW)

    for n in range(12):
        await run.apply([event("gw1", f"a-{n}", 1, site=f"r{n}")])
        ((incident_id,),) = await rows(
            pool, "SELECT incident_id FROM alarms WHERE alarm_id = %s", f"a-{n}"
        )
        normal = run.apply(
            [event("gw1", f"a-{n}", 2, site=f"r{n}", state="normal", transition="resolved")]
        )
        if n % 2:
            await asyncio.gather(normal, resolve(incident_id))
        else:
            await asyncio.gather(resolve(incident_id), normal)
        assert await rows(
            pool, "SELECT state FROM incidents WHERE incident_id = %s", incident_id
        ) == [("closed",)]
