"""The records the API returns and the console renders, built from the gateway's rooms.

One builder per thing (alarm, device, site), so the JSON and the pages always agree.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any, Final, Literal, NamedTuple

from pydantic import BaseModel

from gateway.alarm_types import AlarmType
from gateway.api.auth import Permission, allowed
from gateway.api.context import ApiContext
from gateway.escalation import trail
from gateway.escalation.audit import AuditEntry
from gateway.linkage import closes_valves
from gateway.model import Alarm
from gateway.registry import Component, Contact, Site
from gateway.registry.model import ComponentType
from gateway.users import User

__all__ = [
    "AlarmView",
    "AuditEntryView",
    "Availability",
    "CommandLine",
    "ComponentView",
    "ContactView",
    "CylinderView",
    "DeviceView",
    "HistoryView",
    "NoticeLine",
    "SiteDetail",
    "SiteView",
    "ValveLine",
    "alarm_view",
    "device_view",
    "site_detail",
    "site_view",
    "stored_alarms",
]


class ContactView(BaseModel):
    name: str
    role: str
    lang: str
    phone: str | None  # None for a user whose role may not see phone numbers


class SiteView(BaseModel):
    site_id: str
    name: str
    site_type: str
    kit: str
    district: str
    address: str
    kit_complete: bool
    missing: list[str]


# "not_heard_yet": no report since the gateway started, and its start grace still runs.
Availability = Literal["online", "offline", "not_heard_yet", "unknown"]


class DeviceView(BaseModel):
    device_id: str
    site_id: str
    component: str
    model: str
    power: str
    report_interval_s: int
    availability: Availability
    online: bool | None  # None: not supervised, or not heard yet since the gateway started
    last_report_at: datetime | None
    battery_mv: int | None
    rssi_dbm: int | None
    last_event: str | None
    lel_pct: float | None
    valve_state: str | None
    pressure_pa: int | None
    lel_trend: list[float]


class ComponentView(BaseModel):
    component: str
    device_id: str | None
    model: str
    installed_on: str
    service_life_months: int | None
    past_service_life: bool
    state: str  # a device's Availability, "passive" for a passive part


class CylinderView(BaseModel):
    cylinder_id: str
    capacity_kg: float
    next_inspection_due: str
    overdue: bool


class ValveLine(BaseModel):
    """One linked valve as the console says it first: its real state, when the gateway heard
    it, and how many close commands it has not answered by reporting closed."""

    valve_id: str
    state: str | None  # the valve's last reported state (None: never heard from)
    since: datetime | None  # when the gateway heard this state (None: not recorded)
    unanswered: int  # close commands for this alarm while the valve is not closed


class CommandLine(BaseModel):
    """The close commands this alarm sent to one valve, by the device's answer: an ``ok``
    answer means the device *received* the command, not that the valve closed."""

    valve_id: str
    sent: int
    received: int
    refused: int
    no_answer: int
    last_at: datetime


class NoticeLine(BaseModel):
    """One recipient's notification (or the gas company's event) and its latest result."""

    kind: str  # "notification" or "event"
    channel: str
    recipient: str
    result: str
    at: datetime
    detail: str  # why, for a skipped one ("channel 'sms' not configured", ...)


class AlarmView(BaseModel):
    alarm_id: str
    revision: int
    alarm_type: str
    severity: str
    state: str
    active: bool
    latched: bool
    message: str
    source: str
    site_id: str | None
    device_id: str | None
    site_name: str | None
    address: str | None
    district: str | None
    contacts: list[ContactView]
    raised_at: datetime
    updated_at: datetime
    age_s: float
    acked_at: datetime | None
    acked_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    shelved_until: datetime | None
    out_of_service: bool
    chattering: bool
    readings: dict[str, Any]
    valves: dict[str, str | None]  # linked valve → its last reported state (None: not heard)
    gateway_did: list[str]  # what the gateway did: valve commands, notifications
    valve_lines: list[ValveLine]
    commands: list[CommandLine]  # gateway_did's valve commands, one line per valve
    notices: list[NoticeLine]  # gateway_did's notifications, one line per recipient
    escalation_step: int | None
    escalation_stopped: bool
    lel_trend: list[float]


class SiteDetail(BaseModel):
    """A site with its parts, devices and the alarms raised in the last 7 days."""

    site: SiteView
    contacts: list[ContactView]
    components: list[ComponentView]
    cylinders: list[CylinderView]
    devices: list[DeviceView]
    alarms: list[AlarmView]


class HistoryView(BaseModel):
    revision: int
    transition: str
    state: str
    at: datetime
    by: str | None
    note: str | None


class AuditEntryView(BaseModel):
    at: datetime
    kind: str
    channel: str
    recipient: str
    result: str
    detail: str


RECENT: Final = timedelta(days=7)  # a site page lists the alarms raised this long ago
_STEP: Final = re.compile(r"\bstep (\d+)\b")


def contact_view(contact: Contact, user: User) -> ContactView:
    phone = contact.phone if allowed(user, Permission.READ_CONTACT_PHONES) else None
    return ContactView(name=contact.name, role=contact.role, lang=contact.lang.value, phone=phone)


def site_view(ctx: ApiContext, site: Site) -> SiteView:
    status = ctx.registry.kit_status(site.site_id)
    return SiteView(
        site_id=site.site_id,
        name=site.name,
        site_type=site.site_type.value,
        kit=site.kit,
        district=site.district,
        address=site.address,
        kit_complete=status is not None and status.complete,
        missing=[str(m) for m in status.missing] if status else ["unknown kit"],
    )


def device_view(ctx: ApiContext, device_id: str) -> DeviceView | None:
    info = ctx.registry.device(device_id)
    if info is None:
        return None
    state = ctx.devices.get(device_id)
    availability = _availability(ctx, device_id)
    return DeviceView(
        device_id=device_id,
        site_id=info.site_id,
        component=info.component.value,
        model=info.model,
        power=info.power.value,
        report_interval_s=info.report_interval_s,
        availability=availability,
        online={"online": True, "offline": False}.get(availability),
        last_report_at=state.last_report_at if state else None,
        battery_mv=state.battery_mv if state else None,
        rssi_dbm=state.rssi_dbm if state else None,
        last_event=state.event if state else None,
        lel_pct=state.lel_pct if state else None,
        valve_state=state.valve_state if state else None,
        pressure_pa=state.pressure_pa if state else None,
        lel_trend=[v for _, v in state.lel_trend] if state else [],
    )


def _availability(ctx: ApiContext, device_id: str) -> Availability:
    """Supervision's word, except that a device it counts online only because the start's
    grace runs (nothing heard from it since the gateway started) is "not heard yet"."""
    online = ctx.supervision.online(device_id)
    if online is None:
        return "unknown"
    if not online:
        return "offline"
    return "online" if ctx.devices.heard_since_start(device_id) else "not_heard_yet"


def alarm_view(ctx: ApiContext, alarm: Alarm, user: User) -> AlarmView:
    site = ctx.registry.site(alarm.site_id) if alarm.site_id else None
    contacts = ctx.registry.contacts(alarm.site_id) if alarm.site_id else ()
    valves = _linked_valves(ctx, alarm)
    entries = trail(ctx.store, alarm.alarm_id)
    steps = [i for i, e in enumerate(entries) if e.kind == "step" and e.result == "fired"]
    stops = [i for i, e in enumerate(entries) if e.kind == "escalation" and e.result == "stopped"]
    sent = _valve_commands(ctx, alarm)
    notices = [e for e in entries if e.kind in ("notification", "event")]
    did = [_said(c) for c in sent] + [
        " ".join(x for x in (e.kind, e.channel, e.recipient, e.result) if x) for e in notices
    ]
    trend_source = ctx.devices.get(alarm.device_id) if alarm.device_id else None
    return AlarmView(
        alarm_id=alarm.alarm_id,
        revision=alarm.revision,
        alarm_type=alarm.alarm_type,
        severity=alarm.severity.value,
        state=alarm.state.value,
        active=alarm.active,
        latched=alarm.latched,
        message=alarm.message,
        source=alarm.source,
        site_id=alarm.site_id,
        device_id=alarm.device_id,
        site_name=site.name if site else None,
        address=site.address if site else None,
        district=site.district if site else None,
        contacts=[contact_view(c, user) for c in contacts],
        raised_at=alarm.raised_at,
        updated_at=alarm.updated_at,
        age_s=max(0.0, (ctx.clock.now() - alarm.raised_at).total_seconds()),
        acked_at=alarm.acked_at,
        acked_by=alarm.acked_by,
        closed_at=alarm.closed_at,
        closed_by=alarm.closed_by,
        shelved_until=alarm.shelved_until,
        out_of_service=alarm.out_of_service_by is not None,
        chattering=alarm.chattering,
        readings={k: list(v) if isinstance(v, tuple) else v for k, v in alarm.readings.items()},
        valves={v: _state(ctx, v) for v in valves},
        gateway_did=did,
        valve_lines=[_valve_line(ctx, v, sent) for v in valves],
        commands=_command_lines(sent),
        notices=_notice_lines(notices),
        escalation_step=_step_index(entries[steps[-1]].detail) if steps else None,
        escalation_stopped=bool(stops) and (not steps or stops[-1] > steps[-1]),
        lel_trend=[v for _, v in trend_source.lel_trend] if trend_source else [],
    )


class _Sent(NamedTuple):
    """One row of the linkage's ``valve_command`` table."""

    valve_id: str
    cmd: str
    tries: int
    ack: str | None
    at: datetime


def _said(c: _Sent) -> str:
    """A command for the API's ``gateway_did``: an ``ok`` answer is "received", no closure."""
    answer = {None: "no answer", "ok": "received"}.get(c.ack, c.ack)
    return f"{c.cmd} → {c.valve_id} (try {c.tries}, {answer})"


def _valve_line(ctx: ApiContext, valve_id: str, sent: list[_Sent]) -> ValveLine:
    state = _state(ctx, valve_id)
    since = _state_since(ctx, valve_id, state)
    closes = [c for c in sent if c.valve_id == valve_id and c.cmd == "close_valve"]
    if state == "closed" and since is not None:
        closes = [c for c in closes if c.at > since]  # sent again after it had closed
    unanswered = 0 if state == "closed" else len(closes)
    return ValveLine(valve_id=valve_id, state=state, since=since, unanswered=unanswered)


def _state_since(ctx: ApiContext, valve_id: str, state: str | None) -> datetime | None:
    """When the valve was heard (live) in ``state``: this run's reports, else the linkage's
    stored state (after a restart); None when neither says so."""
    heard = ctx.devices.get(valve_id)
    if heard is not None and heard.valve_state == state and heard.valve_since is not None:
        return heard.valve_since
    row = ctx.store.db.execute(
        "SELECT state, at FROM valve_state WHERE valve_id = ?", (valve_id,)
    ).fetchone()
    return datetime.fromisoformat(row[1]) if row and row[0] == state else None


def _command_lines(sent: list[_Sent]) -> list[CommandLine]:
    lines: dict[str, CommandLine] = {}
    for c in sent:
        line = lines.setdefault(
            c.valve_id,
            CommandLine(
                valve_id=c.valve_id, sent=0, received=0, refused=0, no_answer=0, last_at=c.at
            ),
        )
        line.sent += 1
        line.last_at = c.at
        if c.ack is None:
            line.no_answer += 1
        elif c.ack == "ok":
            line.received += 1
        else:
            line.refused += 1
    return list(lines.values())


def _notice_lines(entries: list[AuditEntry]) -> list[NoticeLine]:
    """The latest result per (kind, channel, recipient): a queued SMS later sent is one line."""
    latest: dict[tuple[str, str, str], NoticeLine] = {}
    for e in entries:
        latest[(e.kind, e.channel, e.recipient)] = NoticeLine(
            kind=e.kind,
            channel=e.channel,
            recipient=e.recipient,
            result=e.result,
            at=e.at,
            detail=e.detail,
        )
    return list(latest.values())


_VALVE_CLOSERS: Final = tuple(t.value for t in AlarmType if closes_valves(t.value))
_VALVE_CLOSERS_JSON: Final = json.dumps(_VALVE_CLOSERS)


def _valve_commands(ctx: ApiContext, alarm: Alarm) -> list[_Sent]:
    """The commands the linkage recorded (its ``valve_command`` table) for this alarm, with
    what each valve answered: only what the gateway really sent, and only for this alarm.

    Two alarms share commands: a valve-closing alarm shows those of the other open
    valve-closing alarms of its source (a leak_high raised while the leak_low's close is
    under way sends none of its own), and a valve_failed_to_close shows the commands to its
    valve of the alarm that closed it (its readings' ``alarm_id``). Another alarm of the same
    device (sensor_fault, tamper, end_of_life...) shows none of them."""
    if alarm.alarm_type == AlarmType.VALVE_FAILED_TO_CLOSE.value:
        closing = alarm.readings.get("alarm_id")
        rows = ctx.store.db.execute(
            "SELECT valve_id, cmd, try, ack, at FROM valve_command WHERE alarm_id IN (?, ?)"
            " AND valve_id = ? ORDER BY at",
            (alarm.alarm_id, str(closing), alarm.device_id),
        )
    elif alarm.alarm_type in _VALVE_CLOSERS:
        rows = ctx.store.db.execute(
            "SELECT valve_id, cmd, try, ack, at FROM valve_command WHERE alarm_id = ?"
            " OR alarm_id IN (SELECT alarm_id FROM alarms WHERE source = ? AND is_open = 1"
            " AND alarm_type IN (SELECT value FROM json_each(?))) ORDER BY at",
            (alarm.alarm_id, alarm.source, _VALVE_CLOSERS_JSON),
        )
    else:
        rows = ctx.store.db.execute(
            "SELECT valve_id, cmd, try, ack, at FROM valve_command WHERE alarm_id = ? ORDER BY at",
            (alarm.alarm_id,),
        )
    return [_Sent(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4])) for r in rows]


def _linked_valves(ctx: ApiContext, alarm: Alarm) -> tuple[str, ...]:
    """The valves whose state this alarm is about: a detector's or regulator's linked
    valves, or the valve itself (valve_failed_to_close, valve_fault)."""
    if alarm.device_id is None:
        return ()
    device = ctx.registry.device(alarm.device_id)
    if device is not None and device.component is ComponentType.SHUTOFF_VALVE:
        return (alarm.device_id,)
    valves = ctx.registry.valves_for_detector(alarm.device_id)
    regulator_valve = ctx.registry.valve_for_regulator(alarm.device_id)
    return valves + ((regulator_valve,) if regulator_valve else ())


def _state(ctx: ApiContext, valve_id: str) -> str | None:
    state = ctx.linkage.valve_state(valve_id)
    return state.value if state is not None else None


def _step_index(detail: str) -> int | None:
    """The step number from an escalation audit detail ("policy leak step 2: ...")."""
    found = _STEP.search(detail)
    return int(found.group(1)) if found else None


def component_view(
    ctx: ApiContext, component: Component, expired: set[tuple[str, str]]
) -> ComponentView:
    device_id = component.device_id
    state = "passive" if device_id is None else _availability(ctx, device_id)
    return ComponentView(
        component=component.component.value,
        device_id=component.device_id,
        model=component.model,
        installed_on=component.installed_on.isoformat(),
        service_life_months=ctx.registry.service_life_months(component),
        past_service_life=(component.component.value, component.device_id or component.model)
        in expired,
        state=state,
    )


def stored_alarms(ctx: ApiContext, since: datetime, limit: int = 1000) -> list[Alarm]:
    """Alarms raised since ``since`` (open or closed), newest first, at most ``limit``."""
    rows = ctx.store.db.execute(
        "SELECT snapshot FROM alarms ORDER BY rowid DESC LIMIT ?", (limit,)
    )  # rowid: the order alarms were first stored, i.e. raised
    alarms = (Alarm.from_json(r[0]) for r in rows)
    return [a for a in alarms if a.raised_at >= since]


def site_detail(ctx: ApiContext, site: Site, user: User) -> SiteDetail:
    today = ctx.clock.now().date()
    expired = {
        (f.component.value, f.device_id or f.model)
        for f in ctx.registry.past_service_life(today)
        if f.site_id == site.site_id
    }
    components = ctx.registry.components(site.site_id)
    devices = [device_view(ctx, c.device_id) for c in components if c.device_id]
    recent = stored_alarms(ctx, ctx.clock.now() - RECENT)
    alarms = [a for a in recent if a.site_id == site.site_id]
    return SiteDetail(
        site=site_view(ctx, site),
        contacts=[contact_view(c, user) for c in ctx.registry.contacts(site.site_id)],
        components=[component_view(ctx, c, expired) for c in components],
        cylinders=[
            CylinderView(
                cylinder_id=c.cylinder_id,
                capacity_kg=c.capacity_kg,
                next_inspection_due=c.next_inspection_due.isoformat(),
                overdue=c.next_inspection_due < today,
            )
            for c in ctx.registry.cylinders(site.site_id)
        ],
        devices=[d for d in devices if d is not None],
        alarms=[alarm_view(ctx, a, user) for a in alarms],
    )
