"""What the fleet simulator publishes is what the center takes in (central.ingest, real
PostgreSQL): the summary's new gasco/v1 fields land in ``sites`` (``protected``, lat/lon), and
a leak's whole story (raised → valve_changed → ... → resolved) is one alarm of one incident
with the valve closed."""

from __future__ import annotations

from datetime import UTC, datetime

from central import db, inbound
from central.fleet import FleetSpec, Story, availability, summaries
from central.ingest import Ingest

AT = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


def _parsed(spec: FleetSpec, messages: list[tuple[str, bytes]]) -> list[inbound.Inbound]:
    return [inbound.parse(spec.prefix, topic, payload) for topic, payload in messages]


async def test_fleet_messages_are_taken_in_by_the_center(pg_dsn: str) -> None:
    db.upgrade(pg_dsn)
    spec = FleetSpec(2, 30)
    story = Story.begin(spec, 1, 4, AT)
    events = []
    while (message := story.next(AT)) is not None:
        events.append(message)
    pool = await db.open_pool(pg_dsn)
    try:
        ingest = Ingest(pool, "fleet-test")
        messages = availability(spec) + summaries(spec, AT)
        applied = await ingest.apply(_parsed(spec, messages))
        assert applied.summaries_applied == 60
        applied = await ingest.apply(_parsed(spec, events))
        assert applied.events_new == 6
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE protected),"
                " count(*) FILTER (WHERE protected IS NULL), count(lat), count(lon) FROM sites"
            )
            total, protected, unsaid, lats, lons = await cur.fetchone() or ()
            cur = await conn.execute(
                "SELECT a.revision, a.state, i.valve_state, i.site_id FROM alarms a"
                " JOIN incidents i USING (incident_id) WHERE a.alarm_id = %s",
                (story.alarm_id,),
            )
            alarm = await cur.fetchone()
    finally:
        await pool.close()
    expected = [s for s in (m.summary for m in _parsed(spec, messages[2:])) if s["protected"]]
    assert (total, protected, unsaid, lats, lons) == (60, len(expected), 0, 60, 60)
    assert alarm == (6, "normal", "closed", spec.site_id(1, 4))
