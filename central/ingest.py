"""What the gateways said, into PostgreSQL: one transaction per batch, set-based statements.

Several instances ingest at once (shared subscriptions share the live streams; every instance
reads the retained summaries and availability itself), so every step is idempotent and takes
its locks in one global order, each class sorted, so two instances never deadlock:

0. new gateway rows (inserted, sorted by id);
1. advisory locks of the batch's group keys (``central.grouping.group_key``; sorted by hash);
2. site rows (sorted by gateway and site);
3. incidents and alarms (under the keys' locks; incident rows locked sorted by id);
4. command rows (sorted by cmd_id);
5. gateway rows (sorted by id), then NOTIFY.

Events are idempotent on (alarm_id, revision): a duplicate has no effect at all; a lower
revision than the alarm's is recorded in ``alarm_events`` and its incident's timeline but never
changes the alarm. A summary older than the stored one never wins.

Rows travel as arrays unnested by the server, one statement per step whatever the batch's size
(site summaries: one per 500 rows, so that a storm's batch lets an alarm through between two);
the arrays are binary parameters (``%b``): PostgreSQL parsing 10,000 JSON texts out of a text
array literal took three times as long as the upsert itself.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from central import grouping, outbox, watch
from central.db import notify
from central.inbound import AlarmEvent, Availability, CommandReply, Inbound, SiteSummary

__all__ = ["Applied", "Ingest", "settle"]

# Text PostgreSQL refuses (NUL; a lone surrogate a JSON escape can produce): one such message
# must not fail its whole batch again and again.
_UNSTORABLE: Final = re.compile("\\\\u0000|[\ud800-\udfff]")
# Transitions that make an alarm active again: a resolved incident is not reopened by them,
# a new one starts.
_RAISES: Final = frozenset({"raised", "reactivated"})
_ACTIVE_STATES: Final = frozenset({"unack_active", "ack_active"})
_SUMMARY_SLICE: Final = 500  # site rows per statement


@dataclass(slots=True)
class Applied:
    """What one batch did."""

    events_new: int = 0  # applied to their alarm
    events_duplicate: int = 0  # (alarm_id, revision) already taken in: no effect at all
    events_stale: int = 0  # recorded, but the alarm had a higher revision already
    summaries_applied: int = 0
    summaries_stale: int = 0  # older than the stored one (or than another in the batch)
    availability: int = 0
    replies: int = 0  # applied to their command
    replies_duplicate: int = 0  # the command had its reply already
    replies_unknown: int = 0  # no command with that cmd_id from that gateway: recorded nowhere
    incidents_opened: int = 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ingest:
    """Applies batches of parsed ``gasco/v1`` messages; ``instance`` names this center instance
    in ``alarm_events.received_by``."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        instance: str,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._pool = pool
        self._instance = instance
        self._clock = clock

    async def apply(self, batch: Sequence[Inbound]) -> Applied:
        """The whole batch in one transaction: it all took effect once this returns, or none of
        it did (the error propagates; the caller retries the batch)."""
        applied = Applied()
        if batch:
            # Pipelined: a statement whose result is not read goes out without waiting for the
            # one before (an alarm's batch took ~15 round trips, ~25 ms each on a busy box).
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                await _Batch(conn, self._clock(), self._instance, applied).run(batch)
        return applied


async def settle(conn: AsyncConnection, incident_id: int, now: datetime) -> bool:
    """Close a site incident that is ``resolved`` and whose alarms are all ``normal`` at the
    gateway; whichever of the two happens last calls it. True when it closed it."""
    cur = await conn.execute(
        "SELECT state, kind FROM incidents WHERE incident_id = %s FOR NO KEY UPDATE",
        (incident_id,),
    )
    row = await cur.fetchone()
    if row is None or row[0] != "resolved" or row[1] != "site":
        return False
    # read after the row lock: an ingest that changed an alarm of it has committed by now
    cur = await conn.execute(
        "SELECT count(*) FROM alarms WHERE incident_id = %s AND state <> 'normal'", (incident_id,)
    )
    still_open = await cur.fetchone()
    if still_open is None or still_open[0]:
        return False
    await conn.execute(
        "UPDATE incidents SET state = 'closed', closed_at = %s, updated_at = %s"
        " WHERE incident_id = %s",
        (now, now, incident_id),
    )
    why = {"from": "resolved", "to": "closed", "why": "resolved, and every alarm closed"}
    await conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, detail) VALUES (%s, %s, 'transition', %s)",
        (incident_id, now, json.dumps(why)),
    )
    await notify(conn, incidents=[incident_id])
    return True


@dataclass(frozen=True, slots=True)
class _Event:
    """An alarm event with what grouping needs read out of it (defensively: the gateway's
    schema may grow)."""

    gateway_id: str
    alarm_id: str
    revision: int
    body: dict[str, Any]
    text: str  # body as JSON
    site_id: str | None
    district: str
    key: str
    category: grouping.Category
    raised_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, message: AlarmEvent) -> _Event:
        body, text = _storable(message.event)
        site = _obj(body.get("site"))
        site_id = _str(site.get("site_id")) or None
        kind = grouping.category(_str(body.get("alarm_type")), _str(body.get("severity")))
        times = _obj(body.get("times"))
        return cls(
            gateway_id=message.gateway_id,
            alarm_id=_str(body.get("alarm_id")),
            revision=message.revision,
            body=body,
            text=text,
            site_id=site_id,
            district=_str(site.get("district")),
            key=grouping.group_key(message.gateway_id, site_id, kind),
            category=kind,
            raised_at=datetime.fromisoformat(times["raised_at"]),  # checked by inbound.parse
            updated_at=datetime.fromisoformat(times["updated_at"]),
        )

    def field(self, name: str) -> str:
        return _str(self.body.get(name))

    @property
    def active(self) -> bool:
        given = self.body.get("active")
        return given if isinstance(given, bool) else self.field("state") in _ACTIVE_STATES

    def timeline(self, late: bool) -> dict[str, Any]:
        b = self.body
        detail = {
            "alarm_id": self.alarm_id,
            "revision": self.revision,
            "transition": self.field("transition"),
            "state": self.field("state"),
            "alarm_type": self.field("alarm_type"),
            "severity": self.field("severity"),
            "title": b.get("title"),
            "message": b.get("message"),
            "valve_state": _str(b.get("valve_state")) or None,
            "by": _str(b.get("by")) or None,
            "note": b.get("note"),
            "event_at": _obj(b.get("times")).get("event_at"),
        }
        return detail | {"late": True} if late else detail


@dataclass(slots=True)
class _Plan:
    """One alarm's fresh events in this batch and where they go."""

    alarm_id: str
    events: list[_Event]  # fresh (not duplicates), by revision
    last: _Event | None = None  # the newest applied; None: all were stale
    incident_id: int | None = None  # None: needs the open incident of its key (or a new one)
    late: set[int] = field(default_factory=set)  # revisions older than the alarm's


class _Batch:
    def __init__(
        self, conn: AsyncConnection, now: datetime, instance: str, applied: Applied
    ) -> None:
        self.conn = conn
        self.now = now
        self.instance = instance
        self.applied = applied
        self.incidents: set[int] = set()  # touched: NOTIFY
        self.commands: list[str] = []

    async def run(self, batch: Sequence[Inbound]) -> None:
        events = _unique_events(batch, self.applied)
        online: dict[str, bool] = {}  # the last word of each gateway in the batch
        for m in batch:
            if isinstance(m, Availability):
                online[m.gateway_id] = m.online
                self.applied.availability += 1
        gateways = sorted({m.gateway_id for m in batch})
        await self.conn.execute(
            "INSERT INTO gateways (gateway_id, last_seen, first_seen)"
            " SELECT g, %s, %s FROM unnest(%b::text[]) AS g ORDER BY g ON CONFLICT DO NOTHING",
            (self.now, self.now, gateways),
        )
        keys = [e.key for e in events] + [grouping.offline_key(g) for g in online]
        await watch.lock_keys(self.conn, keys)
        # A retained summary read again at an instance's start is no sign of life; anything
        # else is (events and replies are never retained; availability is the broker's word).
        heard = await self._summaries([m for m in batch if isinstance(m, SiteSummary)])
        heard.update(m.gateway_id for m in batch if not isinstance(m, SiteSummary))
        await self._availability(online)
        await self._events(events)
        await self._replies([m for m in batch if isinstance(m, CommandReply)])
        await self._gateways(sorted(heard), online, events)
        await notify(
            self.conn,
            incidents=sorted(self.incidents),
            gateways=sorted(heard),
            commands=self.commands,
        )

    # -- sites ---------------------------------------------------------------------------------

    async def _summaries(self, summaries: list[SiteSummary]) -> set[str]:
        """Upsert the newest summary of each site; returns the gateways whose summaries won."""
        if not summaries:
            return set()
        newest: dict[tuple[str, str], SiteSummary] = {}
        for s in summaries:
            kept = newest.get((s.gateway_id, s.site_id))
            if kept is None or s.at >= kept.at:
                newest[(s.gateway_id, s.site_id)] = s
        # In slices, in the global order of the rows' locks: between two, the event loop takes
        # an alarm's turn (one statement of 2,000 rows held it ~50 ms in Python alone).
        ordered = [newest[k] for k in sorted(newest)]
        won: Counter[str] = Counter()
        for start in range(0, len(ordered), _SUMMARY_SLICE):
            won.update(await self._upsert_sites(ordered[start : start + _SUMMARY_SLICE]))
        self.applied.summaries_applied += won.total()
        self.applied.summaries_stale += len(summaries) - won.total()
        return set(won)

    async def _upsert_sites(self, summaries: list[SiteSummary]) -> dict[str, int]:
        """Sites won, by gateway. A summary that cannot win is not even tried: trying locks its
        row (and waits for the other instance writing the same retained summary in the same
        storm)."""
        cols: list[list[Any]] = [[] for _ in range(11)]
        for s in summaries:
            for col, value in zip(cols, _site_row(s), strict=True):
                col.append(value)
        cur = await self.conn.execute(
            "WITH won AS (INSERT INTO sites AS s (gateway_id, site_id, name, address, district,"
            " site_type, lat, lon, protected, summary, summary_at, received_at)"
            " SELECT g, i, n, a, d, t, la, lo, p, j::jsonb, at, %s FROM unnest(%b::text[],"
            " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[],"
            " %b::float8[], %b::bool[], %b::text[], %b::timestamptz[])"
            " AS u(g, i, n, a, d, t, la, lo, p, j, at) WHERE NOT EXISTS (SELECT FROM sites o"
            " WHERE o.gateway_id = g AND o.site_id = i AND o.summary_at >= at) ORDER BY g, i"
            " ON CONFLICT (gateway_id, site_id) DO UPDATE SET name = excluded.name,"
            " address = excluded.address, district = excluded.district,"
            " site_type = excluded.site_type, lat = excluded.lat, lon = excluded.lon,"
            " protected = excluded.protected, summary = excluded.summary,"
            " summary_at = excluded.summary_at, received_at = excluded.received_at"
            " WHERE excluded.summary_at > s.summary_at RETURNING gateway_id)"
            " SELECT gateway_id, count(*) FROM won GROUP BY gateway_id",
            (self.now, *cols),
        )
        return {str(g): int(n) for g, n in await cur.fetchall()}

    # -- availability --------------------------------------------------------------------------

    async def _availability(self, online: dict[str, bool]) -> None:
        down = {g: {"why": "said offline"} for g, up in online.items() if not up}
        opened = await watch.open_offline(self.conn, down, self.now)
        self.applied.incidents_opened += len(opened)
        self.incidents.update(opened)
        closed = await watch.close_offline(
            self.conn, [g for g, up in online.items() if up], self.now
        )
        self.incidents.update(closed)

    # -- alarm events --------------------------------------------------------------------------

    async def _events(self, events: list[_Event]) -> None:
        if not events:
            return
        cur = await self.conn.execute(
            "INSERT INTO alarm_events (alarm_id, revision, gateway_id, transition, received_at,"
            " received_by, event) SELECT a, r, g, t, %s, %s, e::jsonb"
            " FROM unnest(%b::text[], %b::int[], %b::text[], %b::text[], %b::text[])"
            " AS u(a, r, g, t, e) ON CONFLICT DO NOTHING RETURNING alarm_id, revision",
            (
                self.now,
                self.instance,
                [e.alarm_id for e in events],
                [e.revision for e in events],
                [e.gateway_id for e in events],
                [e.field("transition") for e in events],
                [e.text for e in events],
            ),
        )
        new = {(str(a), int(r)) for a, r in await cur.fetchall()}
        self.applied.events_duplicate += len(events) - len(new)
        fresh = [e for e in events if (e.alarm_id, e.revision) in new]
        if fresh:
            plans = await self._plan(fresh)
            await self._place(plans)
            await self._alarms([p for p in plans if p.last is not None])
            await self._event_timeline(plans)
            await self._recompute({p.incident_id for p in plans if p.last and p.incident_id})

    async def _plan(self, fresh: list[_Event]) -> list[_Plan]:
        """Which events change their alarm (the highest revision wins) and which alarms need an
        incident: a new alarm, or one raised again after its incident was resolved or closed."""
        by_alarm: dict[str, list[_Event]] = {}
        for e in sorted(fresh, key=lambda e: (e.alarm_id, e.revision)):
            by_alarm.setdefault(e.alarm_id, []).append(e)
        cur = await self.conn.execute(
            "SELECT a.alarm_id, a.revision, a.incident_id, i.state FROM alarms a"
            " JOIN incidents i USING (incident_id) WHERE a.alarm_id = ANY(%s)",
            (list(by_alarm),),
        )
        known = {str(a): (int(r), int(i), str(s)) for a, r, i, s in await cur.fetchall()}
        plans = []
        for alarm_id, events in by_alarm.items():
            revision, incident_id, state = known.get(alarm_id, (0, None, None))
            plan = _Plan(alarm_id, events, incident_id=incident_id)
            for e in events:
                if e.revision <= revision:
                    plan.late.add(e.revision)
                    continue
                revision, plan.last = e.revision, e
                if (state == "closed" and e.field("state") != "normal") or (
                    state == "resolved" and e.field("transition") in _RAISES
                ):
                    plan.incident_id = None
            self.applied.events_new += len(events) - len(plan.late)
            self.applied.events_stale += len(plan.late)
            plans.append(plan)
        return plans

    async def _place(self, plans: list[_Plan]) -> None:
        """Give each alarm that needs one the open incident of its key, or a new incident."""
        need: dict[str, _Event] = {}
        for p in plans:
            if p.incident_id is None and p.last is not None:
                need.setdefault(p.last.key, p.last)
        if not need:
            return
        found = await self._open_incidents(need)
        missing = [e for k, e in need.items() if k not in found]
        if missing:
            found |= await self._new_incidents(missing)
        for p in plans:
            if p.incident_id is None and p.last is not None:
                p.incident_id = found[p.last.key]

    async def _open_incidents(self, need: dict[str, _Event]) -> dict[str, int]:
        # a resolved incident is not joined: a new leak must not hide under "resolved"
        cur = await self.conn.execute(
            "SELECT DISTINCT ON (k.key) k.key, i.incident_id"
            " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS k(key, g, s, c)"
            " JOIN incidents i ON i.gateway_id = k.g AND i.site_id IS NOT DISTINCT FROM k.s"
            " AND i.category = k.c"
            " WHERE i.kind = 'site' AND i.state NOT IN ('resolved', 'closed')"
            " ORDER BY k.key, i.opened_at DESC, i.incident_id DESC",
            (
                list(need),
                [e.gateway_id for e in need.values()],
                [e.site_id for e in need.values()],
                [e.category for e in need.values()],
            ),
        )
        return {str(k): int(i) for k, i in await cur.fetchall()}

    async def _new_incidents(self, firsts: list[_Event]) -> dict[str, int]:
        cur = await self.conn.execute(
            "INSERT INTO incidents (kind, category, gateway_id, site_id, district, severity,"
            " title, opened_at, raised_at, updated_at)"
            " SELECT 'site', c, g, s, d, v, t::jsonb, %s, r, %s FROM unnest(%b::text[],"
            " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[])"
            " AS u(c, g, s, d, v, t, r)"
            " RETURNING incident_id, gateway_id, site_id, category",
            (
                self.now,
                self.now,
                [e.category for e in firsts],
                [e.gateway_id for e in firsts],
                [e.site_id for e in firsts],
                [e.district for e in firsts],
                [e.field("severity") for e in firsts],
                [json.dumps(_title(e.body)) for e in firsts],
                [e.raised_at for e in firsts],
            ),
        )
        made = {grouping.group_key(g, s, c): int(i) for i, g, s, c in await cur.fetchall()}
        self.applied.incidents_opened += len(made)
        return made

    async def _alarms(self, plans: list[_Plan]) -> None:
        rows = [(p.incident_id, p.last) for p in plans if p.last is not None]
        await self.conn.execute(
            "INSERT INTO alarms AS a (alarm_id, gateway_id, site_id, incident_id, revision,"
            " alarm_type, severity, state, active, valve_state, event, raised_at, updated_at)"
            " SELECT al, g, s, i, r, t, v, st, ac, vs, e::jsonb, ra, ua FROM unnest(%b::text[],"
            " %b::text[], %b::text[], %b::bigint[], %b::int[], %b::text[], %b::text[],"
            " %b::text[], %b::bool[], %b::text[], %b::text[], %b::timestamptz[],"
            " %b::timestamptz[]) AS u(al, g, s, i, r, t, v, st, ac, vs, e, ra, ua) ORDER BY al"
            " ON CONFLICT (alarm_id) DO UPDATE SET incident_id = excluded.incident_id,"
            " revision = excluded.revision, alarm_type = excluded.alarm_type,"
            " severity = excluded.severity, state = excluded.state, active = excluded.active,"
            " valve_state = excluded.valve_state, event = excluded.event,"
            " raised_at = excluded.raised_at, updated_at = excluded.updated_at"
            " WHERE excluded.revision > a.revision",
            (
                [e.alarm_id for _, e in rows],
                [e.gateway_id for _, e in rows],
                [e.site_id for _, e in rows],
                [i for i, _ in rows],
                [e.revision for _, e in rows],
                [e.field("alarm_type") for _, e in rows],
                [e.field("severity") for _, e in rows],
                [e.field("state") for _, e in rows],
                [e.active for _, e in rows],
                [_str(e.body.get("valve_state")) or None for _, e in rows],
                [e.text for _, e in rows],
                [e.raised_at for _, e in rows],
                [e.updated_at for _, e in rows],
            ),
        )

    async def _event_timeline(self, plans: list[_Plan]) -> None:
        entries = sorted(
            ((e.updated_at, e.alarm_id, e.revision), p.incident_id, e, e.revision in p.late)
            for p in plans
            for e in p.events
        )
        await self.conn.execute(
            "INSERT INTO timeline (incident_id, at, kind, actor, detail)"
            " SELECT i, %s, 'alarm_event', a, d::jsonb"
            " FROM unnest(%b::bigint[], %b::text[], %b::text[]) WITH ORDINALITY AS u(i, a, d, n)"
            " ORDER BY n",
            (
                self.now,
                [i for _, i, _, _ in entries],
                [_str(e.body.get("by")) or None for _, _, e, _ in entries],
                [json.dumps(e.timeline(late)) for _, _, e, late in entries],
            ),
        )
        self.incidents.update(i for _, i, _, _ in entries if i is not None)

    async def _recompute(self, incident_ids: set[int]) -> None:
        """Severity, valve state, title and raise time of the incidents whose alarms changed."""
        ids = sorted(incident_ids)
        cur = await self.conn.execute(
            "SELECT incident_id, state, category, resolved_by, resolution_note FROM incidents"
            " WHERE incident_id = ANY(%s) ORDER BY incident_id FOR NO KEY UPDATE",
            (ids,),
        )
        locked = {int(row[0]): row[1:] for row in await cur.fetchall()}
        cur = await self.conn.execute(
            "SELECT incident_id, alarm_type, severity, valve_state, event->'title',"
            " coalesce(event->'site'->>'name', ''), raised_at FROM alarms"
            " WHERE incident_id = ANY(%s) ORDER BY raised_at, alarm_id",
            (ids,),
        )
        alarms: dict[int, list[tuple[Any, ...]]] = {}
        for row in await cur.fetchall():
            alarms.setdefault(int(row[0]), []).append(row[1:])
        ids = [i for i in ids if i in alarms]  # (none if its alarms moved on meanwhile)
        views = [_view(alarms[i], locked[i][1] == "emergency") for i in ids]
        await self.conn.execute(
            "UPDATE incidents i SET severity = u.v, valve_state = u.vs, title = u.t::jsonb,"
            " raised_at = u.r, updated_at = %s FROM unnest(%b::bigint[], %b::text[],"
            " %b::text[], %b::text[], %b::timestamptz[]) AS u(id, v, vs, t, r)"
            " WHERE i.incident_id = u.id",
            (
                self.now,
                ids,
                [v[0] for v in views],
                [v[1] for v in views],
                [json.dumps(v[2]) for v in views],
                [v[3] for v in views],
            ),
        )
        self.incidents.update(ids)
        for incident_id in ids:
            state, _, officer, note = locked[incident_id]
            if state == "resolved":
                await self._resolve_cleared(incident_id, officer, note)
                await settle(self.conn, incident_id, self.now)

    async def _resolve_cleared(self, incident_id: int, officer: str, note: str | None) -> None:
        """An incident resolved while an alarm of it was still active (the gateway refuses to
        resolve that): once the alarm has cleared, the officer's resolve is sent for it, as
        the officer would have had it sent then."""
        alarms = await outbox.commandable(self.conn, incident_id, "resolve")
        if alarms:
            self.commands += await outbox.queue(
                self.conn, incident_id, officer, "resolve", note, alarms, self.now
            )

    # -- command replies -----------------------------------------------------------------------

    async def _replies(self, replies: list[CommandReply]) -> None:
        if not replies:
            return
        firsts: dict[str, tuple[CommandReply, dict[str, Any], str]] = {}
        for r in replies:
            body, text = _storable(r.reply)
            firsts.setdefault(_str(body.get("cmd_id")), (r, body, text))
        cur = await self.conn.execute(
            "SELECT cmd_id, gateway_id, replied_at IS NOT NULL, incident_id, alarm_id, officer,"
            " action FROM commands WHERE cmd_id = ANY(%s) ORDER BY cmd_id FOR NO KEY UPDATE",
            (sorted(firsts),),
        )
        known = {str(row[0]): row[1:] for row in await cur.fetchall()}
        take = []
        for cmd_id, (r, body, text) in sorted(firsts.items()):
            row = known.get(cmd_id)
            if row is None or row[0] != r.gateway_id:
                self.applied.replies_unknown += 1
            elif row[1]:
                self.applied.replies_duplicate += 1
            else:
                take.append((cmd_id, row, body, text))
        self.applied.replies_duplicate += len(replies) - len(firsts)
        if take:
            await self._take_replies(take)

    async def _take_replies(
        self, take: list[tuple[str, tuple[Any, ...], dict[str, Any], str]]
    ) -> None:
        accepted = [
            b.get("accepted") if isinstance(b.get("accepted"), bool) else None
            for _, _, b, _ in take
        ]
        await self.conn.execute(
            "UPDATE commands c SET accepted = u.ok, reason = u.why, reply = u.r::jsonb,"
            " replied_at = %s FROM unnest(%b::text[], %b::bool[], %b::text[], %b::text[])"
            " AS u(id, ok, why, r) WHERE c.cmd_id = u.id",
            (
                self.now,
                [c for c, _, _, _ in take],
                accepted,
                [_str(b.get("reason")) or None for _, _, b, _ in take],
                [t for _, _, _, t in take],
            ),
        )
        self.applied.replies += len(take)
        self.commands.extend(c for c, _, _, _ in take)
        entries = [
            (row[2], row[4], _reply_entry(cmd_id, row, body))
            for cmd_id, row, body, _ in take
            if row[2] is not None
        ]
        if entries:
            await self.conn.execute(
                "INSERT INTO timeline (incident_id, at, kind, actor, detail)"
                " SELECT i, %s, 'reply', a, d::jsonb"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[]) AS u(i, a, d)",
                (
                    self.now,
                    [i for i, _, _ in entries],
                    [a for _, a, _ in entries],
                    [json.dumps(d) for _, _, d in entries],
                ),
            )
            self.incidents.update(int(i) for i, _, _ in entries)

    # -- gateways ------------------------------------------------------------------------------

    async def _gateways(
        self, gateways: list[str], online: dict[str, bool], events: list[_Event]
    ) -> None:
        last_alarm = {e.gateway_id: e.alarm_id for e in events}
        await self.conn.execute(
            "UPDATE gateways g SET last_seen = greatest(g.last_seen, %s),"
            " online = CASE WHEN u.said THEN u.online ELSE g.online END,"
            " availability_at = CASE WHEN u.said THEN %s ELSE g.availability_at END,"
            " last_event_at = CASE WHEN u.alarm IS NULL THEN g.last_event_at ELSE %s END,"
            " last_alarm_id = coalesce(u.alarm, g.last_alarm_id)"
            " FROM (SELECT gateway_id FROM gateways WHERE gateway_id = ANY(%s)"
            "       ORDER BY gateway_id FOR NO KEY UPDATE) AS l,"
            " unnest(%b::text[], %b::bool[], %b::bool[], %b::text[]) AS u(id, said, online, alarm)"
            " WHERE g.gateway_id = l.gateway_id AND u.id = l.gateway_id",
            (
                self.now,
                self.now,
                self.now,
                gateways,
                gateways,
                [g in online for g in gateways],
                [online.get(g) for g in gateways],
                [last_alarm.get(g) for g in gateways],
            ),
        )


def _unique_events(batch: Sequence[Inbound], applied: Applied) -> list[_Event]:
    """The batch's alarm events, each (alarm_id, revision) once."""
    seen: dict[tuple[str, int], _Event] = {}
    for m in batch:
        if isinstance(m, AlarmEvent):
            e = _Event.of(m)
            if (e.alarm_id, e.revision) in seen:
                applied.events_duplicate += 1
            else:
                seen[(e.alarm_id, e.revision)] = e
    return list(seen.values())


def _view(
    alarms: list[tuple[Any, ...]], emergency: bool
) -> tuple[str, str | None, dict[str, str], datetime]:
    """An incident's severity, valve state, title and raise time from its alarms (type,
    severity, valve state, title, site name, raised at), oldest first."""
    severity = grouping.highest(a[1] for a in alarms)
    top = next(a for a in alarms if a[1] == severity)
    valve = grouping.valve_summary(a[2] for a in alarms) if emergency else None
    return (
        severity,
        valve,
        grouping.site_title(_obj(top[3]), top[0], top[4]),
        min(a[5] for a in alarms),
    )


def _title(body: dict[str, Any]) -> dict[str, str]:
    return grouping.site_title(
        _obj(body.get("title")),
        _str(body.get("alarm_type")),
        _str(_obj(body.get("site")).get("name")),
    )


def _reply_entry(cmd_id: str, row: tuple[Any, ...], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "cmd_id": cmd_id,
        "alarm_id": row[3],
        "action": row[5],
        "accepted": body.get("accepted"),
        "reason": body.get("reason"),
        "detail": body.get("detail"),
        "state": body.get("state"),
    }


def _site_row(s: SiteSummary) -> tuple[Any, ...]:
    body, text = _storable(s.summary)
    where = _obj(body.get("location"))
    protected = body.get("protected")
    return (
        s.gateway_id,
        s.site_id,
        _str(body.get("name")),
        _str(body.get("address")),
        _str(body.get("district")),
        _str(body.get("site_type")) or "other",
        _coordinate(where.get("lat", body.get("lat")), 90),
        _coordinate(where.get("lon", body.get("lon")), 180),
        protected if isinstance(protected, bool) else None,
        text,
        s.at,
    )


def _coordinate(value: object, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and -limit <= number <= limit else None


def _storable(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The body and its JSON, without what PostgreSQL's text and jsonb refuse."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if _UNSTORABLE.search(text):
        body = _clean(body)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return body, text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
