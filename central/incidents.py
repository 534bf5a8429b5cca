"""Incidents for the officers: the queue and one incident's page (read queries), and the officer
lifecycle new → acknowledged → dispatched → on site → resolved (→ closed, by
:func:`central.ingest.settle` once every alarm under it is normal at the gateway).

Each transition is one transaction: the incident's columns, a timeline entry naming the officer,
the gateway commands it implies (acknowledge: every alarm still unacknowledged; resolve: every
alarm cleared but not closed; an outbox the link sends, woken by ``NOTIFY gasgate_central_cmd``)
and ``NOTIFY gasgate_central`` so every instance's consoles see it. A transition from the wrong
state is refused with what happened instead ("already acknowledged by wang at 12:04"). An
incident of a gateway gone offline has no alarms: its transitions send nothing to a gateway.

Officer times are the center's clock. A user limited to some districts neither sees nor changes
an incident of another district.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from central import outbox
from central.db import CHANNEL
from central.grouping import CAUSES
from central.ingest import settle
from central.users import Officer
from gateway.api.auth import Permission
from gateway.words import word

__all__ = [
    "ACTIONS",
    "STATES",
    "ActiveAlarm",
    "AlarmView",
    "CommandView",
    "Conflict",
    "Contact",
    "IncidentDetail",
    "IncidentView",
    "NotFound",
    "Query",
    "SiteRef",
    "Step",
    "TimelineEntry",
    "ValveLine",
    "ValveView",
    "detail",
    "list_incidents",
    "transition",
]

STATES: Final = ("new", "acknowledged", "dispatched", "on_site", "resolved", "closed")
Action = Literal["acknowledge", "dispatch", "on_site", "resolve"]
ACTIONS: Final[tuple[Action, ...]] = ("acknowledge", "dispatch", "on_site", "resolve")
# The state each action leads to, and the states it may start from. Resolving needs no
# dispatch: a false alarm settled on the phone is resolved straight after acknowledging.
_TO: Final[dict[Action, str]] = {
    "acknowledge": "acknowledged",
    "dispatch": "dispatched",
    "on_site": "on_site",
    "resolve": "resolved",
}
_FROM: Final[dict[Action, tuple[str, ...]]] = {
    "acknowledge": ("new",),
    "dispatch": ("acknowledged",),
    "on_site": ("dispatched",),
    "resolve": ("acknowledged", "dispatched", "on_site"),
}
# The officer columns of each state reached ("at", "by").
_STAMPS: Final = {
    "acknowledged": ("acknowledged_at", "acknowledged_by"),
    "dispatched": ("dispatched_at", "dispatched_by"),
    "on_site": ("on_site_at", "on_site_by"),
    "resolved": ("resolved_at", "resolved_by"),
}
_AGAIN: Final[dict[Action, tuple[str, ...]]] = {
    "acknowledge": ("acknowledged", "dispatched", "on_site", "resolved"),
    "resolve": ("resolved",),
}
_NOTIFY_IDS: Final = 100  # command ids per notification: well under PostgreSQL's 8,000 bytes
_RETRIES: Final = 3


# --- what the API returns ----------------------------------------------------------------------


class ValveLine(BaseModel):
    """One shut-off valve of the incident as strongly as the events support: its last reported
    state (None: not heard yet), since when (the event that first said it) and the close
    commands the gateway sent it that did not make it report closed (the
    ``tries`` of an active ``valve_failed_to_close``). Said by the gateway console's ``valve``
    macro."""

    valve_id: str
    state: str | None
    since: datetime | None = None
    unanswered: int = 0


class IncidentView(BaseModel):
    incident_id: int
    kind: str  # site / gateway_offline
    category: str  # emergency / maintenance
    gateway_id: str
    site_id: str | None
    site_name: str
    site_address: str
    district: str
    state: str
    severity: str
    valve_state: str | None
    title: dict[str, str]
    alarms: list[str]  # alarm ids, oldest first
    alarm_types: list[str]
    unacknowledged: int  # alarms not (yet) acknowledged at the gateway
    opened_at: datetime
    raised_at: datetime | None
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    dispatched_at: datetime | None
    dispatched_by: str | None
    crew: str | None
    eta: datetime | None
    on_site_at: datetime | None
    on_site_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    cause: str | None
    resolution_note: str | None
    closed_at: datetime | None
    valves: list[ValveLine]


class TimelineEntry(BaseModel):
    entry_id: int
    at: datetime
    kind: str
    actor: str | None
    detail: dict[str, Any]


class CommandView(BaseModel):
    cmd_id: str
    alarm_id: str
    action: str
    officer: str
    note: str | None
    created_at: datetime
    sent_at: datetime | None
    replied_at: datetime | None
    accepted: bool | None
    reason: str | None
    # pending: not yet taken by the broker; sent: waiting at the broker or the gateway for an
    # answer; accepted / refused: the gateway's reply.
    status: Literal["pending", "sent", "accepted", "refused"]


class ValveView(BaseModel):
    device_id: str
    state: str | None  # its last reported state; None: not heard


class AlarmView(BaseModel):
    alarm_id: str
    alarm_type: str
    severity: str
    state: str
    active: bool
    valve_state: str | None
    device_id: str | None
    message: str | None
    valves: list[ValveView]  # the alarm's linked shut-off valves, as its latest event said
    revision: int
    raised_at: datetime
    updated_at: datetime


class ActiveAlarm(BaseModel):
    """An alarm whose condition is still present (gas still sensed, a valve still open): the
    incident cannot be resolved before it clears."""

    alarm_id: str
    alarm_type: str
    device_id: str | None
    lel_pct: float | None  # the gas level its latest event read, for a gas alarm

    @classmethod
    def of(cls, row: dict[str, Any]) -> ActiveAlarm:
        """From an ``alarms`` row with its event's ``device_id`` and ``readings``."""
        readings = row["readings"] if isinstance(row["readings"], dict) else {}
        lel = readings.get("lel_pct")
        return cls(
            alarm_id=row["alarm_id"], alarm_type=row["alarm_type"], device_id=row["device_id"],
            lel_pct=float(lel) if isinstance(lel, int | float) else None,
        )  # fmt: skip


class SiteRef(BaseModel):
    site_id: str
    name: str
    address: str
    district: str
    site_type: str


class Contact(BaseModel):
    name: str
    phone: str | None  # None for a role that may not read phone numbers
    role: str | None
    lang: str | None


class IncidentDetail(IncidentView):
    timeline: list[TimelineEntry]
    commands: list[CommandView]
    alarm_details: list[AlarmView]
    sites: list[SiteRef]  # the site, or every site of a gateway gone offline
    contacts: list[Contact]
    # Steps that may be taken again (acknowledge: alarms joined after the acknowledgement;
    # resolve: alarms cleared after the resolve), with commands the gateway has not had yet.
    again: list[str]
    # The alarms still active, most severe first: a resolve is refused until they clear.
    still_active: list[ActiveAlarm]


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    state: Literal["open", "all"] = "open"
    district: str | None = None
    category: str | None = None
    severity: str | None = None
    search: str | None = None
    ids: Sequence[int] | None = None  # only these (the live stream's changes)
    limit: int = 500


# The incidents are chosen (filtered, ordered, limited) first, and only those get their alarms
# and site looked up: a queue of 20,000 open incidents answers its first 500 in tens of ms.
# The open queue's rank: incidents still to be dealt with first, then those resolved and waiting
# for the gateway to close their alarms (5 past the severities: nothing left for the officer),
# each most severe first. The console's live patch places rows by the same rank (console_rows).
_CHOSEN_SQL: Final = """
SELECT i.incident_id, CASE i.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1
       WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END
       + CASE WHEN i.state = 'resolved' THEN 5 ELSE 0 END AS rank, i.opened_at
FROM incidents i
"""
_LIST_SQL: Final = """
SELECT i.incident_id, i.kind, i.category, i.gateway_id, i.site_id, i.district, i.state,
       i.severity, i.valve_state, i.title, i.opened_at, i.raised_at, i.updated_at,
       i.acknowledged_at, i.acknowledged_by, i.dispatched_at, i.dispatched_by, i.crew, i.eta,
       i.on_site_at, i.on_site_by, i.resolved_at, i.resolved_by, i.cause, i.resolution_note,
       i.closed_at,
       coalesce(nullif(s.name, ''), ev.site ->> 'name', '') AS site_name,
       coalesce(nullif(s.address, ''), ev.site ->> 'address', '') AS site_address,
       coalesce(a.ids, '{}') AS alarms, coalesce(a.types, '{}') AS alarm_types,
       coalesce(a.unacked, 0) AS unacknowledged, a.valve_lists, a.tries
FROM chosen c
JOIN incidents i USING (incident_id)
LEFT JOIN sites s ON s.gateway_id = i.gateway_id AND s.site_id = i.site_id
LEFT JOIN LATERAL (
    SELECT x.event -> 'site' AS site FROM alarms x
    WHERE x.incident_id = i.incident_id ORDER BY x.updated_at DESC LIMIT 1
) ev ON true
LEFT JOIN LATERAL (
    SELECT array_agg(x.alarm_id ORDER BY x.raised_at, x.alarm_id) AS ids,
           array_agg(DISTINCT x.alarm_type) AS types,
           count(*) FILTER (WHERE x.state IN ('unack_active', 'unack_cleared')) AS unacked,
           jsonb_agg(x.event -> 'valves' ORDER BY x.event -> 'times' ->> 'event_at')
               FILTER (WHERE jsonb_typeof(x.event -> 'valves') = 'array') AS valve_lists,
           jsonb_object_agg(x.event ->> 'device_id', x.event -> 'readings' -> 'tries')
               FILTER (WHERE x.alarm_type = 'valve_failed_to_close' AND x.active
                       AND x.event ->> 'device_id' IS NOT NULL) AS tries
    FROM alarms x WHERE x.incident_id = i.incident_id
) a ON true
"""


def _conditions(query: Query, officer: Officer) -> tuple[list[sql.Composable], list[Any]]:
    where: list[sql.Composable] = []
    args: list[Any] = []

    def add(text: str, *values: Any) -> None:
        where.append(sql.SQL(text))  # constant SQL, values apart
        args.extend(values)

    if query.state == "open":
        add("i.state <> 'closed'")
    if officer.districts is not None:
        add("i.district = ANY(%s)", list(officer.districts))
    if query.district is not None:
        add("i.district = %s", query.district)
    if query.category is not None:
        add("i.category = %s", query.category)
    if query.severity is not None:
        add("i.severity = %s", query.severity)
    if query.ids is not None:
        add("i.incident_id = ANY(%s)", list(query.ids))
    if query.search:
        _search(add, query.search, phones=officer.may(Permission.READ_CONTACT_PHONES))
    return where, args


# Each table is asked once for its matching rows (hashed subplans), by the trigram indexes of
# migration 0005 on the same expressions; the contacts (phones) only for who may read them.
_SEARCH_HEAD: Final = (
    "(i.site_id ILIKE %s OR i.gateway_id ILIKE %s"
    " OR (i.gateway_id, i.site_id) IN (SELECT s.gateway_id, s.site_id FROM sites s"
    " WHERE site_search_text(s.name, s.address) ILIKE %s)"
    " OR i.incident_id IN (SELECT x.incident_id FROM alarms x"
    " WHERE alarm_search_text(x.event) ILIKE %s"
)
_SEARCH_SQL: Final = _SEARCH_HEAD + "))"
_CONTACTS_SEARCH_SQL: Final = (
    _SEARCH_HEAD + " OR (x.event -> 'site' -> 'contacts')::text ILIKE %s))"
)


def _search(add: Any, text: str, *, phones: bool) -> None:
    """Site name, address, ids, device id; a contact's phone only for those who may read it."""
    like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    add(
        _CONTACTS_SEARCH_SQL if phones else _SEARCH_SQL,
        *([like] * (5 if phones else 4)),
    )


async def list_incidents(
    conn: AsyncConnection[Any], officer: Officer, query: Query
) -> list[IncidentView]:
    """Open incidents still to be dealt with before the resolved ones, each most severe first,
    then oldest first; ``all``: newest first."""
    where, args = _conditions(query, officer)
    newest = query.state != "open"
    order = "opened_at DESC, incident_id DESC" if newest else "rank, opened_at, incident_id"
    inner = "i.opened_at DESC, i.incident_id DESC" if newest else "rank, i.opened_at, i.incident_id"
    statement = sql.SQL("WITH chosen AS ({} {} ORDER BY {} LIMIT %s) {} ORDER BY {}").format(
        sql.SQL(_CHOSEN_SQL),  # constant
        sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        sql.SQL(inner),  # constant
        sql.SQL(_LIST_SQL),  # constant
        sql.SQL(", ".join(f"c.{part}" for part in order.split(", "))),  # constant
    )
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # The planner prices the per-incident lookups from statistics that lag behind a burst
        # of new incidents, well past jit_above_cost, and JIT then spends 0.4-0.8 s compiling
        # a query that runs in milliseconds (measured at 4,000 open incidents).
        await cur.execute("SET LOCAL jit = off")
        if query.search:
            # The same lag in a storm of new sites: priced as the few the statistics know, the
            # planner read every site for the search (60-300 ms at 20,000-100,000 sites, while
            # the storm is absorbed) instead of asking the trigram index (1-15 ms).
            await cur.execute("SET LOCAL enable_seqscan = off")
        await cur.execute(statement, [*args, query.limit])
        rows = await cur.fetchall()
        since = await _since(
            cur,
            [r["incident_id"] for r in rows if r["category"] == "emergency" and r["valve_lists"]],
        )
    return [
        IncidentView.model_validate(
            r | {"valves": _valve_lines(r, since.get(r["incident_id"], {}))}
        )
        for r in rows
    ]


def _valve_lines(
    row: dict[str, Any], since: dict[str, tuple[str | None, str | None]]
) -> list[ValveLine]:
    """Each valve's state from the latest event that lists it (the alarms' ``valves``, oldest
    event first), since when it said so (``_since``), with the unanswered close commands of a
    valve that failed to close. None for maintenance: an open valve is how a kitchen works, not
    news (as ``incidents.valve_state``)."""
    if row["category"] != "emergency":
        return []
    states: dict[str, str | None] = {}
    for listed in row["valve_lists"] or []:
        states |= {v.device_id: v.state for v in _valves(listed)}
    counts = row["tries"] if isinstance(row["tries"], dict) else {}
    return [
        ValveLine(
            valve_id=valve, state=None if state == "unknown" else state,
            since=since[valve][1] if valve in since and since[valve][0] == state else None,
            unanswered=counts[valve] if isinstance(counts.get(valve), int) else 0,
        )
        for valve, state in states.items()
    ]  # fmt: skip


async def _since(
    cur: psycopg.AsyncCursor[dict[str, Any]], incident_ids: list[int]
) -> dict[int, dict[str, tuple[str | None, str | None]]]:
    """Per incident, each valve's state and the time it first reported it (the gateway's
    clock): the event after which every event of the incident said that state ("closed,
    confirmed 12:03:05"). One query for the whole queue: only incidents with valves ask."""
    if not incident_ids:
        return {}
    await cur.execute(
        "SELECT a.incident_id, e.event -> 'valves' AS valves,"
        " e.event -> 'times' ->> 'event_at' AS at"
        " FROM alarm_events e JOIN alarms a USING (alarm_id) WHERE a.incident_id = ANY(%s)"
        " AND jsonb_typeof(e.event -> 'valves') = 'array' ORDER BY 1, 3, e.revision",
        (incident_ids,),
    )
    since: dict[int, dict[str, tuple[str | None, str | None]]] = {}
    for row in await cur.fetchall():
        said = since.setdefault(row["incident_id"], {})  # valve → (state, first said at)
        for v in _valves(row["valves"]):
            if v.device_id not in said or said[v.device_id][0] != v.state:
                said[v.device_id] = (v.state, row["at"])
    return since


async def detail(
    conn: AsyncConnection[Any], officer: Officer, incident_id: int
) -> IncidentDetail | None:
    """One incident with its timeline, commands, alarms, sites and contacts; None when there
    is no such incident or the officer may not see its district."""
    found = await list_incidents(conn, officer, Query(state="all", ids=[incident_id], limit=1))
    if not found:
        return None
    view = found[0]
    phones = officer.may(Permission.READ_CONTACT_PHONES)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TIMELINE_SQL, (incident_id,))
        timeline = [_entry(r, phones=phones) for r in await cur.fetchall()]
        await cur.execute(
            "SELECT cmd_id, alarm_id, action, officer, note, created_at, sent_at, replied_at,"
            " accepted, reason FROM commands WHERE incident_id = %s ORDER BY created_at, cmd_id",
            (incident_id,),
        )
        commands = [CommandView(**r, status=_status(r)) for r in await cur.fetchall()]
        await cur.execute(
            sql.SQL(
                "SELECT {}, state, valve_state, revision, updated_at,"
                " event ->> 'message' AS message, event -> 'valves' AS valves,"
                " event -> 'site' -> 'contacts' AS contacts"
                " FROM alarms WHERE incident_id = %s ORDER BY raised_at, alarm_id"
            ).format(_ALARM_COLUMNS),
            (incident_id,),
        )
        alarms = await cur.fetchall()
        sites = await _sites(cur, view)
    again = [
        action
        for action, states in _AGAIN.items()
        if view.state in states and await outbox.commandable(conn, incident_id, action)
    ]
    return IncidentDetail(
        **view.model_dump(),
        timeline=timeline,
        commands=commands,
        alarm_details=[
            AlarmView.model_validate(a | {"valves": _valves(a["valves"])}) for a in alarms
        ],
        sites=sites,
        contacts=_contacts(alarms[-1]["contacts"] if alarms else None, phones=phones),
        again=again,
        still_active=_still_active(alarms),
    )


# What an alarm row is read with, wherever its condition decides whether a resolve may go on.
_ALARM_COLUMNS: Final = sql.SQL(
    "alarm_id, alarm_type, severity, active, raised_at, event ->> 'device_id' AS device_id,"
    " event -> 'readings' AS readings"
)


def _still_active(alarms: list[dict[str, Any]]) -> list[ActiveAlarm]:
    """The active ones of an incident's alarms, most severe first, then oldest first."""
    ranked = sorted(
        (a for a in alarms if a["active"]),
        key=lambda a: (_SEVERITY_RANK.get(a["severity"], len(_SEVERITY_RANK)), a["raised_at"]),
    )
    return [ActiveAlarm.of(a) for a in ranked]


_SEVERITY_RANK: Final = {"critical": 0, "high": 1, "medium": 2, "low": 3}


async def _sites(cur: psycopg.AsyncCursor[dict[str, Any]], view: IncidentView) -> list[SiteRef]:
    if view.kind == "gateway_offline":  # every site the gateway watches: none is watched now
        await cur.execute(
            "SELECT site_id, name, address, district, site_type FROM sites"
            " WHERE gateway_id = %s ORDER BY site_id",
            (view.gateway_id,),
        )
        return [SiteRef.model_validate(r) for r in await cur.fetchall()]
    if view.site_id is None:
        return []
    await cur.execute(
        "SELECT site_id, name, address, district, site_type FROM sites"
        " WHERE gateway_id = %s AND site_id = %s",
        (view.gateway_id, view.site_id),
    )
    row = await cur.fetchone()
    if row is not None:
        return [SiteRef.model_validate(row)]
    return [  # no summary yet: what the alarm events said
        SiteRef(
            site_id=view.site_id, name=view.site_name, address=view.site_address,
            district=view.district, site_type="other",
        )
    ]  # fmt: skip


def _valves(raw: Any) -> list[ValveView]:
    """The event's ``valves``, read defensively (the gateway's schema may grow)."""
    if not isinstance(raw, list):
        return []
    return [
        ValveView(
            device_id=str(v["device_id"]),
            state=v.get("state") if isinstance(v.get("state"), str) else None,
        )
        for v in raw
        if isinstance(v, dict) and v.get("device_id")
    ]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _status(row: dict[str, Any]) -> Literal["pending", "sent", "accepted", "refused"]:
    if row["accepted"] is not None:
        return "accepted" if row["accepted"] else "refused"
    return "sent" if row["sent_at"] is not None else "pending"


def _contacts(raw: Any, *, phones: bool) -> list[Contact]:
    if not isinstance(raw, list):
        return []
    return [
        Contact(
            name=str(c.get("name") or ""),
            phone=str(c["phone"]) if phones and c.get("phone") else None,
            role=c.get("role"),
            lang=c.get("lang"),
        )
        for c in raw
        if isinstance(c, dict)
    ]


# A valve_changed entry with the valves its event listed (which one changed is what the page
# says of a run of them); the event is found by its key, (alarm_id, revision).
_TIMELINE_SQL: Final = """
SELECT t.entry_id, t.at, t.kind, t.actor, t.detail, e.event -> 'valves' AS valves
FROM timeline t
LEFT JOIN alarm_events e ON t.kind = 'alarm_event' AND t.detail ->> 'transition' = 'valve_changed'
     AND e.alarm_id = t.detail ->> 'alarm_id' AND e.revision::text = t.detail ->> 'revision'
WHERE t.incident_id = %s ORDER BY t.at, t.entry_id
"""


def _entry(row: dict[str, Any], *, phones: bool) -> TimelineEntry:
    raw = row["detail"]
    body = raw if isinstance(raw, dict) else {"value": raw}
    if row["valves"] is not None:
        body |= {"valves": [v.model_dump() for v in _valves(row["valves"])]}
    return TimelineEntry(
        entry_id=row["entry_id"], at=row["at"], kind=row["kind"], actor=row["actor"],
        detail=body if phones else _without_phones(body),
    )  # fmt: skip


def _without_phones(value: Any) -> Any:
    """A timeline entry may carry an alarm event with the site's contacts: a role that may not
    read phone numbers gets every ``phone`` blanked, however deep."""
    if isinstance(value, dict):
        return {k: None if k == "phone" else _without_phones(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_phones(v) for v in value]
    return value


# --- the officer lifecycle -----------------------------------------------------------------------


class NotFound(Exception):
    """No such incident, or not in the officer's districts."""


class Conflict(Exception):
    """A transition from the wrong state: ``reason`` ``closed``, ``already`` (the state was
    reached or passed: ``state``, ``by`` and ``at`` say who and when), ``needs`` (an earlier
    step is missing: ``state`` is the incident's) or ``active`` (a resolve while an alarm's
    condition is still present: ``active`` names those alarms, most severe first)."""

    def __init__(
        self, reason: Literal["closed", "already", "needs", "active"], action: str, state: str,
        *, by: str | None = None, at: datetime | None = None,
        active: Sequence[ActiveAlarm] = (),
    ) -> None:  # fmt: skip
        super().__init__(f"{action}: {reason} ({state})")
        self.reason = reason
        self.action = action
        self.state = state
        self.by = by
        self.at = at
        self.active = tuple(active)

    def message(self, lang: str, zone: tzinfo) -> str:
        """In plain words, e.g. "already acknowledged by wang at 12:04" (local time)."""
        zh = lang != "en"
        at = self.at.astimezone(zone).strftime("%H:%M") if self.at else "?"
        if self.reason == "closed":
            return f"事件已于 {at} 结案" if zh else f"the incident was closed at {at}"
        if self.reason == "already":
            words = word("incident_state", self.state, "zh" if zh else "en")
            if zh:  # "已接警" → "已由 wang 于 12:04 接警"
                return f"已由 {self.by} 于 {at} {words.removeprefix('已')}"
            return f"already {words} by {self.by} at {at}"
        if self.reason == "active":
            return still_active_words(self.active, "zh" if zh else "en")
        return _NEEDS[self.action][0 if zh else 1]


def still_active_words(active: Sequence[ActiveAlarm], lang: str) -> str:
    """Why a resolve waits, e.g. "Gas leak (high level) is still active (detector det-1:
    55 %LEL): resolve once it has cleared" (the most severe alarm, and how many more)."""
    first, zh = active[0], lang != "en"
    what = word("alarm_type", first.alarm_type, lang)
    said = [f"{'探测器' if zh else 'detector'} {first.device_id}"] if first.device_id else []
    if first.lel_pct is not None:
        said.append(f"{first.lel_pct:g} %LEL")
    where = ("（" + "，".join(said) + "）" if zh else " (" + ": ".join(said) + ")") if said else ""  # noqa: RUF001
    more = len(active) - 1
    if zh:
        also = f"，另有 {more} 条报警仍在报警" if more else ""  # noqa: RUF001
        return f"{what}仍在报警{where}{also}：报警恢复后才能处置完毕"  # noqa: RUF001
    also = f"; {more} more alarm{'s' if more > 1 else ''} still active" if more else ""
    return f"{what} is still active{where}{also}: resolve once it has cleared"


_NEEDS: Final[dict[str, tuple[str, str]]] = {
    "dispatch": ("尚未接警：请先接警", "not acknowledged yet: acknowledge it first"),  # noqa: RUF001
    "on_site": ("尚未派人：请先派人", "no crew dispatched yet: dispatch one first"),  # noqa: RUF001
    "resolve": ("尚未接警：请先接警", "not acknowledged yet: acknowledge it first"),  # noqa: RUF001
}


@dataclass(frozen=True, slots=True)
class Step:
    """One officer step: ``crew``/``eta`` for dispatch, ``cause`` for resolve."""

    action: Action
    note: str | None = None
    crew: str | None = None
    eta: datetime | None = None
    cause: str | None = None

    def __post_init__(self) -> None:
        if self.action == "dispatch" and not (self.crew or "").strip():
            raise ValueError("dispatch needs the crew or technician sent")
        if self.action == "resolve" and self.cause not in CAUSES:
            raise ValueError(f"resolve needs a cause, one of {', '.join(CAUSES)}")


async def transition(
    pool: AsyncConnectionPool[Any], officer: Officer, incident_id: int, step: Step,
    now: datetime,
) -> list[str]:  # fmt: skip
    """Apply one officer step; the ids of the gateway commands it queued. Raises
    :class:`NotFound` or :class:`Conflict`. Retried on a deadlock with the ingest."""
    async with pool.connection() as conn:
        for attempt in range(_RETRIES):
            try:
                async with conn.transaction():
                    return await _apply(conn, officer, incident_id, step, now)
            except psycopg.errors.DeadlockDetected:
                if attempt == _RETRIES - 1:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def _apply(
    conn: AsyncConnection[Any], officer: Officer, incident_id: int, step: Step,
    now: datetime,
) -> list[str]:  # fmt: skip
    row = await _locked(conn, officer, incident_id)
    alarms = await outbox.commandable(conn, incident_id, step.action)
    refusal = _refusal(step.action, row)
    # Acknowledged or resolved already, but an alarm joined since (or cleared since) that the
    # gateway has not been told about: the step is taken again for those alarms alone.
    again = (
        refusal is not None
        and refusal.reason == "already"
        and refusal.state == _TO[step.action]
        and bool(alarms)
    )
    if refusal is not None and not again:
        raise refusal
    if step.action == "resolve" and not again:
        await _refuse_while_active(conn, incident_id, row["state"])
    if not again:
        await _advance(conn, officer, incident_id, step, now)
    said = _said(step, row["state"], row["state"] if again else _TO[step.action])
    await _timeline(conn, incident_id, now, "transition", actor=officer.name, said=said)
    commands = await outbox.queue(
        conn, incident_id, officer.name, step.action, step.note, alarms, now
    )
    await _notify(conn, incident_id, commands)
    if step.action == "resolve":
        await settle(conn, incident_id, now)
    return commands


async def _refuse_while_active(conn: AsyncConnection[Any], incident_id: int, state: str) -> None:
    """A resolve while gas is still sensed (or a valve still open) is refused: the gateway would
    refuse to resolve that alarm, and the household's page would say "leave now" and "dealt
    with" at once. The stored state can race an event that is on its way: the ingest sends the
    officer's resolve for an alarm that clears after the resolve all the same."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL("SELECT {} FROM alarms WHERE incident_id = %s AND active").format(
                _ALARM_COLUMNS
            ),
            (incident_id,),
        )
        active = _still_active(await cur.fetchall())
    if active:
        raise Conflict("active", "resolve", state, active=active)


async def _advance(
    conn: AsyncConnection[Any], officer: Officer, incident_id: int, step: Step, now: datetime
) -> None:
    to = _TO[step.action]
    at_column, by_column = _STAMPS[to]
    await conn.execute(
        sql.SQL(
            "UPDATE incidents SET state = %s, {} = %s, {} = %s, updated_at = %s,"
            " crew = coalesce(%s, crew), eta = coalesce(%s, eta), cause = coalesce(%s, cause),"
            " resolution_note = CASE WHEN %s THEN %s ELSE resolution_note END"
            " WHERE incident_id = %s"
        ).format(sql.Identifier(at_column), sql.Identifier(by_column)),
        (
            to, now, officer.name, now, step.crew, step.eta, step.cause,
            step.action == "resolve", step.note, incident_id,
        ),
    )  # fmt: skip


async def _locked(conn: AsyncConnection[Any], officer: Officer, incident_id: int) -> dict[str, Any]:
    """The incident's row, locked. The ingest's group lock is taken first, in the ingest's
    own order, so an officer's step and an alarm event on the same incident never deadlock."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT gateway_id, site_id, category, district FROM incidents WHERE incident_id = %s",
            (incident_id,),
        )
        key = await cur.fetchone()
        if key is None or not officer.sees(key["district"]):
            raise NotFound(incident_id)
        await cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s || '/' || coalesce(%s, '') || '/' || %s))",
            (key["gateway_id"], key["site_id"], key["category"]),
        )
        await cur.execute(
            "SELECT * FROM incidents WHERE incident_id = %s FOR UPDATE", (incident_id,)
        )
        row = await cur.fetchone()
    assert row is not None  # incidents are never deleted
    return row


def _refusal(action: Action, row: dict[str, Any]) -> Conflict | None:
    state: str = row["state"]
    if state in _FROM[action]:
        return None
    if state == "closed":
        return Conflict("closed", action, state, at=row["closed_at"])
    reached = STATES.index(state) >= STATES.index(_TO[action])
    if not reached:
        return Conflict("needs", action, state)
    # Who got there first: the step asked for if it was taken, else the state it is in now
    # (a resolved incident that skipped dispatch answers a dispatch with its resolve).
    said = _TO[action] if row[_STAMPS[_TO[action]][0]] is not None else state
    at_column, by_column = _STAMPS[said]
    return Conflict("already", action, said, by=row[by_column], at=row[at_column])


def _said(step: Step, before: str, after: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"transition": step.action, "from": before, "to": after}
    for name in ("note", "crew", "cause"):
        value = getattr(step, name)
        if value:
            detail[name] = value
    if step.eta is not None:
        detail["eta"] = step.eta.isoformat()
    return detail


async def _timeline(
    conn: AsyncConnection[Any], incident_id: int, at: datetime, kind: str, *, actor: str,
    said: dict[str, Any],
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, actor, detail) VALUES (%s, %s, %s, %s, %s)",
        (incident_id, at, kind, actor, json.dumps(said)),
    )


async def _notify(conn: AsyncConnection[Any], incident_id: int, commands: list[str]) -> None:
    """Delivered on commit: every instance's consoles (``outbox.queue`` woke the senders)."""
    chunks = [commands[i : i + _NOTIFY_IDS] for i in range(0, len(commands), _NOTIFY_IDS)]
    for chunk in chunks or [[]]:
        payload = {"incidents": [incident_id], "gateways": [], "commands": chunk}
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(payload)))
