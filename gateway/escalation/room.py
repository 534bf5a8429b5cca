"""The escalation room: alarm changes in; gas company events and notifications to people out.

For every ``AlarmChanged`` it queues one gas company event (never cancelled: it is the record)
and runs the alarm's escalation policy: steps fire ``after_s`` after the alarm was raised, each
queuing notifications in the *same transaction* that advances the escalation, so a ``kill -9``
anywhere leaves either the step done (and its rows queued) or not done. On start, a step that
came due while the gateway was down fires at once, once. An acknowledgement (or a clear, per
policy) stops the escalation and cancels its queued notifications in one transaction.

Step times are wall-clock (they must survive a restart); while running, each wait is measured
on the monotonic clock from the moment it is scheduled.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmware_bridge.ksp import DeviceKind
from gateway.alarm_types import info
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.errors import GasgateError
from gateway.escalation import audit
from gateway.escalation.channels import address_for
from gateway.escalation.config import ChannelSettings, EscalationSettings, Recipient
from gateway.escalation.messages import known_type, local_zone, render
from gateway.escalation.outbox import NewItem, Outbox, cancel_pending, enqueue
from gateway.escalation.policy import Policy, PolicySet, ScheduledStep, StopOn, Target
from gateway.escalation.ports import SiteDirectory
from gateway.events import AlarmChanged, DeviceAvailabilityChanged, ReportReceived
from gateway.model import Alarm, AlarmState, Transition
from gateway.store import Store

__all__ = ["GASCO_LANE", "MIGRATIONS", "ROOM", "Escalation"]

log = logging.getLogger(__name__)

ROOM = "escalation"
GASCO_LANE = "gasco"
ESCALATED = "escalated"  # the gas company event for a step; not an alarm transition
STEP_RETRY_S = 5.0
MIGRATIONS = (
    """
    CREATE TABLE escalation_alarm (
        alarm_id TEXT PRIMARY KEY,
        site_id TEXT,
        is_open INTEGER NOT NULL,
        alarm_revision INTEGER NOT NULL,
        event_revision INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );
    CREATE INDEX escalation_alarm_open ON escalation_alarm (is_open, site_id);
    CREATE TABLE escalation (
        alarm_id TEXT NOT NULL,
        episode INTEGER NOT NULL,
        policy TEXT NOT NULL,
        started_at TEXT NOT NULL,
        next_step INTEGER NOT NULL DEFAULT 0,
        stopped_at TEXT,
        stop_reason TEXT,
        PRIMARY KEY (alarm_id, episode)
    );
    CREATE INDEX escalation_running ON escalation (stopped_at);
    """,
)


@dataclass(frozen=True, slots=True)
class _Running:
    alarm_id: str
    episode: int
    policy: Policy
    started_at: datetime
    next_step: int


class Escalation:
    """Constructing it does nothing; :meth:`start` migrates, resumes escalations left running
    by a previous run and subscribes to the bus. ``outbox`` must be started first."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        clock: Clock,
        registry: SiteDirectory,
        outbox: Outbox,
        *,
        policies: PolicySet,
        settings: EscalationSettings,
        gateway_id: str,
    ) -> None:
        self._bus = bus
        self._store = store
        self._clock = clock
        self._registry = registry
        self._outbox = outbox
        self._policies = policies
        self._settings = settings
        self._gateway_id = gateway_id
        self._timers: dict[tuple[str, int], Timer] = {}
        self._online: dict[str, bool] = {}
        self._valves: dict[str, str] = {}  # valve device id → its last reported state
        self._running = False
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._store.migrate(audit.ROOM, audit.MIGRATIONS)
        self._store.migrate(ROOM, MIGRATIONS)
        self._check_channels()
        self._running = True
        self._bus.subscribe(AlarmChanged, self.on_alarm_changed, name="escalation")
        self._bus.subscribe(
            DeviceAvailabilityChanged, self._on_availability, name="escalation.availability"
        )
        self._bus.subscribe(ReportReceived, self._on_report, name="escalation.valves")
        rows = self._store.db.execute(
            "SELECT alarm_id, episode FROM escalation WHERE stopped_at IS NULL"
        ).fetchall()
        for row in rows:
            self._fire_due(row[0], row[1])  # due while we were down: at once, then re-arm

    async def stop(self) -> None:
        self._running = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # --- alarm changes ---------------------------------------------------------------------

    def on_alarm_changed(self, event: AlarmChanged) -> None:
        try:
            self._record_change(event)
        except (GasgateError, sqlite3.Error):  # never lose an alarm: retried until recorded
            log.exception("alarm %s: change not recorded; retrying", event.alarm.alarm_id)
            self.counts["change_errors"] += 1
            if self._running:
                self._clock.call_later(STEP_RETRY_S, lambda: self.on_alarm_changed(event))

    def _record_change(self, event: AlarmChanged) -> None:
        alarm = event.alarm
        with self._store.transaction() as db:
            seen = db.execute(
                "SELECT alarm_revision, event_revision FROM escalation_alarm WHERE alarm_id = ?",
                (alarm.alarm_id,),
            ).fetchone()
            if seen is not None and seen[0] >= alarm.revision:
                return  # a re-announcement (RESTORED) of what we already handled
            self._remember(db, alarm, seen[1] if seen else 0)
            self._queue_event(db, alarm, event.transition.value, by=event.by, note=event.note)
            audit.record(
                db,
                audit.AuditEntry(
                    alarm.alarm_id,
                    self._clock.now(),
                    "alarm_changed",
                    "",
                    event.by or "",
                    event.transition.value,
                    f"{alarm.state.value} r{alarm.revision}",
                ),
            )
            running = self._running_escalation(db, alarm.alarm_id)
            if running is not None:
                self._maybe_stop(db, running, alarm)
            elif self._should_escalate(event):
                self._begin(db, alarm)
        self._outbox.wake()
        self._arm(alarm.alarm_id)

    @staticmethod
    def _should_escalate(event: AlarmChanged) -> bool:
        alarm = event.alarm
        if alarm.state is not AlarmState.UNACK_ACTIVE or alarm.suppressed or alarm.chattering:
            return False
        # RESTORED (after a restart) is notify=False, but if the raise never reached us
        # (killed between the alarm's commit and ours), nobody has been told: start now.
        return event.notify or event.transition is Transition.RESTORED

    def _remember(self, db: sqlite3.Connection, alarm: Alarm, event_revision: int) -> None:
        db.execute(
            "INSERT INTO escalation_alarm"
            " (alarm_id, site_id, is_open, alarm_revision, event_revision, snapshot)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (alarm_id) DO UPDATE SET"
            " is_open = excluded.is_open, alarm_revision = excluded.alarm_revision,"
            " snapshot = excluded.snapshot",
            (
                alarm.alarm_id,
                alarm.site_id,
                int(alarm.is_open),
                alarm.revision,
                event_revision,
                alarm.to_json(),
            ),
        )

    def _begin(self, db: sqlite3.Connection, alarm: Alarm) -> None:
        policy = self._policies.for_alarm(alarm.alarm_type, alarm.severity)
        now = self._clock.now()
        if policy is None:
            audit.record(
                db,
                audit.AuditEntry(
                    alarm.alarm_id, now, "escalation", "", "", "skipped", "no policy matches"
                ),
            )
            return
        # A new episode each time an alarm needs people again (raised, reactivated after an
        # acknowledgement, unshelved while unacknowledged); replays never get here (revision).
        episode = (
            1
            + db.execute(
                "SELECT COALESCE(MAX(episode), 0) FROM escalation WHERE alarm_id = ?",
                (alarm.alarm_id,),
            ).fetchone()[0]
        )
        # Steps count from the transition that needs people (normally this instant; earlier
        # when a raise committed just before a crash reaches us as RESTORED after it).
        started = min(alarm.updated_at, now)
        db.execute(
            "INSERT INTO escalation (alarm_id, episode, policy, started_at) VALUES (?, ?, ?, ?)",
            (alarm.alarm_id, episode, policy.name, started.isoformat()),
        )
        self.counts["started"] += 1
        audit.record(
            db,
            audit.AuditEntry(
                alarm.alarm_id,
                now,
                "escalation",
                "",
                "",
                "started",
                f"policy {policy.name}, episode {episode}",
            ),
        )
        self._fire_steps(db, _Running(alarm.alarm_id, episode, policy, started, 0), alarm)

    def _maybe_stop(self, db: sqlite3.Connection, running: _Running, alarm: Alarm) -> None:
        reason = _stop_reason(running.policy, alarm)
        if reason is None:
            return
        now = self._clock.now()
        db.execute(
            "UPDATE escalation SET stopped_at = ?, stop_reason = ? WHERE alarm_id = ?"
            " AND episode = ?",
            (now.isoformat(), reason, running.alarm_id, running.episode),
        )
        cancelled = cancel_pending(db, alarm.alarm_id, now, reason)
        audit.record(
            db,
            audit.AuditEntry(
                alarm.alarm_id,
                now,
                "escalation",
                "",
                alarm.acked_by or "",
                "stopped",
                f"{reason}; {cancelled} cancelled",
            ),
        )
        self.counts["stopped"] += 1
        timer = self._timers.pop((running.alarm_id, running.episode), None)
        if timer is not None:
            timer.cancel()

    # --- steps -----------------------------------------------------------------------------

    def _running_escalation(self, db: sqlite3.Connection, alarm_id: str) -> _Running | None:
        row = db.execute(
            "SELECT episode, policy, started_at, next_step FROM escalation"
            " WHERE alarm_id = ? AND stopped_at IS NULL ORDER BY episode DESC LIMIT 1",
            (alarm_id,),
        ).fetchone()
        if row is None:
            return None
        policy = self._policies.named(row[1])
        if policy is None:
            log.error("alarm %s: policy %r no longer exists; escalation stops", alarm_id, row[1])
            return None
        return _Running(alarm_id, row[0], policy, datetime.fromisoformat(row[2]), row[3])

    def _arm(self, alarm_id: str) -> None:
        """Schedule the next step of the alarm's running escalation, if any."""
        if not self._running:
            return
        running = self._running_escalation(self._store.db, alarm_id)
        if running is None:
            return
        schedule = running.policy.schedule()
        if running.next_step >= len(schedule):
            return
        step = schedule[running.next_step]
        elapsed = (self._clock.now() - running.started_at).total_seconds()
        key = (alarm_id, running.episode)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = self._clock.call_later(
            step.after_s - elapsed, lambda: self._fire_due(alarm_id, running.episode)
        )

    def _fire_due(self, alarm_id: str, episode: int) -> None:
        self._timers.pop((alarm_id, episode), None)
        if not self._running:
            return
        try:
            self._fire_due_now(alarm_id, episode)
        except (GasgateError, sqlite3.Error):  # disk full, locked: try again, never drop
            log.exception("alarm %s: escalation step not recorded; retrying", alarm_id)
            self.counts["step_errors"] += 1
            self._timers[(alarm_id, episode)] = self._clock.call_later(
                STEP_RETRY_S, lambda: self._fire_due(alarm_id, episode)
            )

    def _fire_due_now(self, alarm_id: str, episode: int) -> None:
        with self._store.transaction() as db:
            running = self._running_escalation(db, alarm_id)
            row = db.execute(
                "SELECT snapshot FROM escalation_alarm WHERE alarm_id = ?", (alarm_id,)
            ).fetchone()
            if running is None or running.episode != episode or row is None:
                return
            self._fire_steps(db, running, Alarm.from_json(row[0]))
        self._outbox.wake()
        self._arm(alarm_id)

    def _fire_steps(self, db: sqlite3.Connection, running: _Running, alarm: Alarm) -> None:
        """Every step now due, in one transaction with the escalation's advance."""
        schedule = running.policy.schedule()
        elapsed = (self._clock.now() - running.started_at).total_seconds()
        due = [s for s in schedule[running.next_step :] if s.after_s <= elapsed]
        if not due:
            return
        # Repeats that all came due while the gateway was down are sent once, not n times.
        fire = [s for i, s in enumerate(due) if not (s.repeat and i + 1 < len(due))]
        for step in fire:
            self._fire(db, running, step, alarm, elapsed)
        db.execute(
            "UPDATE escalation SET next_step = ? WHERE alarm_id = ? AND episode = ?",
            (due[-1].index + 1, running.alarm_id, running.episode),
        )

    def _fire(
        self,
        db: sqlite3.Connection,
        running: _Running,
        step: ScheduledStep,
        alarm: Alarm,
        elapsed: float,
    ) -> None:
        now = self._clock.now()
        self.counts["steps"] += 1
        targets = ", ".join(n.to.value for n in step.notify)
        audit.record(
            db,
            audit.AuditEntry(
                alarm.alarm_id,
                now,
                "step",
                "",
                "",
                "fired",
                f"policy {running.policy.name} step {step.index}: {targets}",
            ),
        )
        if alarm.suppressed or alarm.chattering:
            audit.record(
                db,
                audit.AuditEntry(
                    alarm.alarm_id,
                    now,
                    "step",
                    "",
                    "",
                    "skipped",
                    "alarm shelved, out of service or chattering",
                ),
            )
            return
        items = list(self._notifications(db, running, step, alarm, elapsed))
        for item in enqueue(db, items, now):
            audit.record(
                db,
                audit.AuditEntry(
                    alarm.alarm_id,
                    now,
                    "notification",
                    item.lane,
                    item.recipient,
                    "queued",
                    item.delivery_key,
                ),
            )
        if step.index > 0:
            escalation = {
                "policy": running.policy.name,
                "step": step.index,
                "targets": [n.to.value for n in step.notify],
            }
            self._queue_event(db, alarm, ESCALATED, escalation=escalation)

    def _notifications(
        self,
        db: sqlite3.Connection,
        running: _Running,
        step: ScheduledStep,
        alarm: Alarm,
        elapsed: float,
    ) -> Sequence[NewItem]:
        site = self._registry.site(alarm.site_id) if alarm.site_id else None
        zone = local_zone(self._settings.timezone)
        valve_state = _summary_state(self._valve_states(alarm))
        items: list[NewItem] = []
        for notify in step.notify:
            recipients = self._recipients(notify.to, alarm)
            for via in notify.via:
                channel = self._settings.channels.get(via)
                for recipient in recipients:
                    address = address_for(channel, recipient) if channel else None
                    if channel is None or not self._outbox.has_lane(via) or address is None:
                        why = (
                            f"channel {via!r} not configured"
                            if channel is None
                            else f"{recipient.name} has no address for {via}"
                        )
                        audit.record(
                            db,
                            audit.AuditEntry(
                                alarm.alarm_id,
                                self._clock.now(),
                                "notification",
                                via,
                                recipient.name,
                                "skipped",
                                why,
                            ),
                        )
                        continue
                    key = f"{alarm.alarm_id}/e{running.episode}/s{step.index}/{via}/{address}"
                    message = render(
                        alarm,
                        site,
                        recipient.lang,
                        hotline=self._settings.hotline,
                        zone=zone,
                        valve_state=valve_state,
                        unanswered_s=elapsed if step.index else 0.0,
                    )
                    payload = {
                        "kind": "notification",
                        "delivery_key": key,
                        "alarm_id": alarm.alarm_id,
                        "site_id": alarm.site_id,
                        "alarm_type": alarm.alarm_type,
                        "severity": alarm.severity.value,
                        "step": step.index,
                        "target": notify.to.value,
                        "recipient": recipient.model_dump(),
                        "title": message.title,
                        "body": message.body,
                    }
                    items.append(
                        NewItem(
                            key,
                            via,
                            alarm.alarm_id,
                            f"{recipient.name} <{address}>",
                            payload,
                            cancellable=True,
                        )
                    )
        return items

    def _recipients(self, target: Target, alarm: Alarm) -> Sequence[Recipient]:
        s = self._settings
        if target is Target.SITE_CONTACTS:
            contacts = self._registry.contacts(alarm.site_id) if alarm.site_id else ()
            return [
                Recipient(name=c.name, phone=c.phone, lang="en" if c.lang == "en" else "zh")
                for c in contacts
            ]
        if target is Target.DISTRICT_REGULATOR:
            site = self._registry.site(alarm.site_id) if alarm.site_id else None
            return s.district_regulators.get(site.district, ()) if site else ()
        named: Mapping[Target, Sequence[Recipient]] = {
            Target.DUTY_ROOM: s.duty_room,
            Target.DUTY_SUPERVISOR: s.duty_supervisor,
            Target.EMERGENCY_DISPATCHER: s.emergency_dispatcher,
            Target.SERVICE_TEAM: s.service_team,
        }
        return named[target]

    # --- gas company events ----------------------------------------------------------------

    def _queue_event(
        self,
        db: sqlite3.Connection,
        alarm: Alarm,
        transition: str,
        *,
        by: str | None = None,
        note: str | None = None,
        escalation: Mapping[str, Any] | None = None,
    ) -> None:
        """The next revision of the alarm's gas company event, in the caller's transaction."""
        db.execute(
            "UPDATE escalation_alarm SET event_revision = event_revision + 1 WHERE alarm_id = ?",
            (alarm.alarm_id,),
        )
        revision: int = db.execute(
            "SELECT event_revision FROM escalation_alarm WHERE alarm_id = ?", (alarm.alarm_id,)
        ).fetchone()[0]
        message = self._event(
            alarm, transition=transition, revision=revision, by=by, note=note, escalation=escalation
        )
        key = f"{alarm.alarm_id}/event/{revision}"
        enqueue(
            db,
            [
                NewItem(
                    key,
                    GASCO_LANE,
                    alarm.alarm_id,
                    "gas company",
                    {"kind": "event", "message": message},
                    cancellable=False,
                )
            ],
            self._clock.now(),
        )

    def _event(
        self,
        alarm: Alarm,
        *,
        transition: str,
        revision: int,
        by: str | None,
        note: str | None,
        escalation: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """docs/schemas/gasco-alarm-event.schema.json"""
        kind = known_type(alarm.alarm_type)
        valves = self._valve_states(alarm)
        title = (
            {"zh": info(kind).title_zh, "en": info(kind).title_en}
            if kind
            else {"zh": alarm.message, "en": alarm.message}
        )
        return {
            "schema": "gasgate/gasco/alarm-event/1",
            "gateway_id": self._gateway_id,
            "alarm_id": alarm.alarm_id,
            "revision": revision,
            "alarm_revision": alarm.revision,
            "transition": transition,
            "state": alarm.state.value,
            "active": alarm.active,
            "latched": alarm.latched,
            "alarm_type": alarm.alarm_type,
            "title": title,
            "severity": alarm.severity.value,
            "message": alarm.message,
            "site": self._site_json(alarm.site_id),
            "source": alarm.source,
            "device_id": alarm.device_id,
            "rule_id": alarm.rule_id,
            "readings": {
                k: list(v) if isinstance(v, tuple) else v for k, v in alarm.readings.items()
            },
            "valves": [{"device_id": d, "state": v} for d, v in valves.items()],
            "valve_state": _summary_state(valves),
            "escalation": dict(escalation) if escalation else None,
            "by": by,
            "note": note,
            "suppressed": alarm.suppressed or alarm.chattering,
            "times": {
                "raised_at": alarm.raised_at.isoformat(),
                "updated_at": alarm.updated_at.isoformat(),
                "acked_at": _iso(alarm.acked_at),
                "cleared_at": _iso(alarm.cleared_at),
                "closed_at": _iso(alarm.closed_at),
                "event_at": self._clock.now().isoformat(),
            },
        }

    def _site_json(self, site_id: str | None) -> dict[str, Any] | None:
        site = self._registry.site(site_id) if site_id else None
        if site is None:
            return None if site_id is None else {"site_id": site_id}
        return {
            "site_id": site.site_id,
            "name": site.name,
            "address": site.address,
            "district": site.district,
            "site_type": site.site_type.value,
            "contacts": [
                {"name": c.name, "phone": c.phone, "lang": c.lang.value, "role": c.role}
                for c in self._registry.contacts(site.site_id)
            ],
        }

    # --- per-site summaries for the gas company's coverage view ----------------------------

    def _on_report(self, event: ReportReceived) -> None:
        if event.report.kind is DeviceKind.VALVE and event.report.valve is not None:
            self._valves[event.device_id] = event.report.valve.state.value

    def _valve_states(self, alarm: Alarm) -> dict[str, str]:
        """The alarm's linked shut-off valves → last reported state (``unknown`` before any)."""
        device = alarm.device_id
        if device is None:
            return {}
        ids = list(self._registry.valves_for_detector(device))
        regulator_valve = self._registry.valve_for_regulator(device)
        if regulator_valve:
            ids.append(regulator_valve)
        if not ids and device in self._valves:
            ids = [device]  # the alarm is about a valve itself
        return {d: self._valves.get(d, "unknown") for d in ids}

    def _on_availability(self, event: DeviceAvailabilityChanged) -> None:
        self._online[event.device_id] = event.online

    def summaries(self) -> list[dict[str, Any]]:
        """docs/schemas/gasco-site-summary.schema.json, one per registered site."""
        open_alarms: dict[str, list[dict[str, Any]]] = {}
        for row in self._store.db.execute(
            "SELECT site_id, snapshot FROM escalation_alarm WHERE is_open = 1 ORDER BY alarm_id"
        ):
            alarm = json.loads(row[1])
            open_alarms.setdefault(row[0], []).append(
                {k: alarm[k] for k in ("alarm_id", "alarm_type", "severity", "state", "raised_at")}
            )
        devices: dict[str, list[str]] = {}
        for device in self._registry.devices():
            devices.setdefault(device.site_id, []).append(device.device_id)
        now = self._clock.now().isoformat()
        out = []
        for site in self._registry.sites():
            kit = self._registry.kit_status(site.site_id)
            ids = devices.get(site.site_id, [])
            out.append(
                {
                    "schema": "gasgate/gasco/site-summary/1",
                    "gateway_id": self._gateway_id,
                    "site_id": site.site_id,
                    "name": site.name,
                    "district": site.district,
                    "site_type": site.site_type.value,
                    "kit": None
                    if kit is None
                    else {"complete": kit.complete, "missing": [str(m) for m in kit.missing]},
                    "devices": {
                        "total": len(ids),
                        "online": sum(1 for d in ids if self._online.get(d) is True),
                        "offline": sum(1 for d in ids if self._online.get(d) is False),
                    },
                    "open_alarms": open_alarms.get(site.site_id, []),
                    "at": now,
                }
            )
        return out

    def _check_channels(self) -> None:
        channels: Mapping[str, ChannelSettings] = self._settings.channels
        for policy in self._policies.policies:
            for name in sorted(policy.channels() - set(channels)):
                log.warning(
                    "escalation policy %r uses channel %r, which is not configured:"
                    " those notifications are skipped (and recorded)",
                    policy.name,
                    name,
                )


def _stop_reason(policy: Policy, alarm: Alarm) -> str | None:
    if alarm.state is AlarmState.NORMAL:
        return "closed"
    if alarm.suppressed:
        return "suppressed"
    if StopOn.ACKNOWLEDGED in policy.stop_on and not alarm.state.unacknowledged:
        return f"acknowledged by {alarm.acked_by}"
    if StopOn.CLEARED in policy.stop_on and not alarm.active:
        return "cleared"
    return None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _summary_state(valves: Mapping[str, str]) -> str | None:
    """closed (all closed) · open (any open) · the common state · mixed; None: no valve."""
    states = set(valves.values())
    if not states:
        return None
    if "open" in states:
        return "open"
    return states.pop() if len(states) == 1 else "mixed"
