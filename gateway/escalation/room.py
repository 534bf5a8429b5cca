"""The escalation room: alarm changes in; gas company events and notifications to people out.

For every ``AlarmChanged`` it queues one gas company event (never cancelled: it is the record)
and runs the alarm's escalation policy: steps fire ``after_s`` after the transition that needs
people, each queuing its notifications in the *same transaction* that advances the escalation,
so a ``kill -9`` anywhere leaves either the step done (and its rows queued) or not done. On
start, a step that came due while the gateway was down fires at once, once. An acknowledgement
(or a clear, per policy) stops the escalation and cancels its queued notifications in one
transaction.

Step times are stored as wall-clock (they must survive a restart); within one run they are
measured on the monotonic clock, so a wall-clock step (NTP, a wrong RTC) cannot fire or starve
them.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway import alert_link
from gateway.alert_link import AlertGrant
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.errors import GasgateError
from gateway.escalation import audit
from gateway.escalation.channels import address_for, is_sms
from gateway.escalation.config import EscalationSettings, Recipient
from gateway.escalation.coverage import Coverage
from gateway.escalation.messages import Message, local_zone, render, with_alert_link
from gateway.escalation.outbox import NewItem, Outbox, cancel_pending, enqueue
from gateway.escalation.payloads import alarm_event, site_json, valve_summary
from gateway.escalation.policy import Notify, Policy, PolicySet, ScheduledStep, StopOn, Target
from gateway.escalation.ports import SiteDirectory
from gateway.events import AlarmChanged, ValveStateChanged
from gateway.model import Alarm, AlarmState, Transition
from gateway.store import Store

__all__ = ["GASCO_LANE", "MIGRATIONS", "ROOM", "Escalation", "EscalationStatus", "status"]

log = logging.getLogger(__name__)

ROOM = "escalation"
GASCO_LANE = "gasco"
ESCALATED = "escalated"  # the gas company event for a step; not an alarm transition
VALVE_CHANGED = "valve_changed"  # a linked valve's state changed while the alarm is open
STEP_RETRY_S = 5.0
_SLACK_S = 0.001  # a timer may fire a float's hair before its step: that step is due
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
        coverage: Coverage,
        policies: PolicySet,
        settings: EscalationSettings,
        gateway_id: str,
    ) -> None:
        self._bus = bus
        self._store = store
        self._clock = clock
        self._registry = registry
        self._outbox = outbox
        self._coverage = coverage
        self._policies = policies
        self._settings = settings
        self._gateway_id = gateway_id
        self._timers: dict[tuple[str, int], Timer] = {}
        self._anchors: dict[tuple[str, int], float] = {}  # monotonic time each escalation began
        self._running = False
        # Open alarm → its linked valves: which alarms a valve's change concerns, without
        # reading every open alarm for every valve report (a start hears every valve once).
        self._valves_of: dict[str, frozenset[str]] = {}
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._store.migrate(audit.ROOM, audit.MIGRATIONS)
        self._store.migrate(ROOM, MIGRATIONS)
        self._check_channels()
        self._running = True
        self._bus.subscribe(AlarmChanged, self.on_alarm_changed, name="escalation")
        self._bus.subscribe(ValveStateChanged, self.on_valve_changed, name="escalation.valves")
        for (snapshot,) in self._store.db.execute(
            "SELECT snapshot FROM escalation_alarm WHERE is_open = 1"
        ):
            self._track_valves(Alarm.from_json(snapshot))
        rows = self._store.db.execute(
            "SELECT alarm_id, episode FROM escalation WHERE stopped_at IS NULL"
        ).fetchall()
        for alarm_id, episode in rows:
            self._fire_due(alarm_id, episode)  # due while we were down: at once, then re-arm

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
        # Not durable (no fsync of its own; the next alarm commit syncs it): the alarm is, and
        # a restart re-announces open alarms, which records again what a power cut lost. One
        # fsync per room would hold the linkage's close command, queued just before this.
        alarm, now = event.alarm, self._clock.now()
        with self._store.transaction(durable=False) as db:
            seen = db.execute(
                "SELECT alarm_revision, event_revision FROM escalation_alarm WHERE alarm_id = ?",
                (alarm.alarm_id,),
            ).fetchone()
            if seen is not None and seen[0] >= alarm.revision:
                return  # a re-announcement (RESTORED) of what we already handled
            self._remember(db, alarm, seen[1] if seen else 0)
            self._track_valves(alarm)
            self._queue_event(db, alarm, event.transition.value, by=event.by, note=event.note)
            detail = f"{alarm.state.value} r{alarm.revision}"
            audit.note(
                db,
                alarm.alarm_id,
                "alarm_changed",
                event.transition.value,
                detail,
                recipient=event.by or "",
                at=now,
            )
            running = self._running_escalation(db, alarm.alarm_id)
            if running is not None:
                self._maybe_stop(db, running, alarm)
            elif _needs_people(event):
                self._begin(db, alarm)
        self._outbox.wake()
        self._arm(alarm.alarm_id)

    def _track_valves(self, alarm: Alarm) -> None:
        valves = frozenset(self._coverage.valve_states(alarm)) if alarm.is_open else frozenset()
        if valves:
            self._valves_of[alarm.alarm_id] = valves
        else:
            self._valves_of.pop(alarm.alarm_id, None)

    # --- valve changes ---------------------------------------------------------------------

    def on_valve_changed(self, event: ValveStateChanged) -> None:
        """A linked valve's new state reaches the gas company at once, while its alarm is open
        (the valve reporting closed after the leak raised): a ``valve_changed`` event, its
        ``valves`` / ``valve_state`` current, the alarm itself (``alarm_revision``) unchanged."""
        alarm_ids = sorted(a for a, valves in self._valves_of.items() if event.valve_id in valves)
        if not alarm_ids:
            return
        try:
            self._record_valve_change(event, alarm_ids)
        except (GasgateError, sqlite3.Error):  # the center must not keep a stale valve state
            log.exception("valve %s: change not recorded; retrying", event.valve_id)
            self.counts["valve_change_errors"] += 1
            if self._running:
                self._clock.call_later(STEP_RETRY_S, lambda: self.on_valve_changed(event))

    def _record_valve_change(self, event: ValveStateChanged, alarm_ids: list[str]) -> None:
        now = self._clock.now()
        detail = f"valve {event.valve_id}: {event.previous or 'unknown'} -> {event.state}"
        with self._store.transaction(durable=False) as db:
            for alarm_id in alarm_ids:
                row = db.execute(
                    "SELECT snapshot FROM escalation_alarm WHERE alarm_id = ? AND is_open = 1",
                    (alarm_id,),
                ).fetchone()
                if row is None:
                    continue
                self._queue_event(db, Alarm.from_json(row[0]), VALVE_CHANGED)
                audit.note(db, alarm_id, "valve", VALVE_CHANGED, detail, at=now)
                self.counts["valve_changed"] += 1
        self._outbox.wake()

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
        now = self._clock.now()
        policy = self._policies.for_alarm(alarm.alarm_type, alarm.severity)
        if policy is None:
            audit.note(db, alarm.alarm_id, "escalation", "skipped", "no policy matches", at=now)
            return
        # A new episode each time an alarm needs people again (raised, reactivated after an
        # acknowledgement, unshelved while unacknowledged); replays never get here (revision).
        (last,) = db.execute(
            "SELECT COALESCE(MAX(episode), 0) FROM escalation WHERE alarm_id = ?",
            (alarm.alarm_id,),
        ).fetchone()
        episode = last + 1
        # Steps count from the transition that needs people (normally this instant; earlier
        # when a raise committed just before a crash reaches us as RESTORED after it).
        started = min(alarm.updated_at, now)
        db.execute(
            "INSERT INTO escalation (alarm_id, episode, policy, started_at) VALUES (?, ?, ?, ?)",
            (alarm.alarm_id, episode, policy.name, started.isoformat()),
        )
        self.counts["started"] += 1
        audit.note(
            db,
            alarm.alarm_id,
            "escalation",
            "started",
            f"policy {policy.name}, episode {episode}",
            at=now,
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
        audit.note(
            db,
            alarm.alarm_id,
            "escalation",
            "stopped",
            f"{reason}; {cancelled} cancelled",
            recipient=alarm.acked_by or "",
            at=now,
        )
        self.counts["stopped"] += 1
        self._anchors.pop((running.alarm_id, running.episode), None)
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

    def _elapsed(self, running: _Running) -> float:
        """Seconds since the escalation started, on the monotonic clock once this process has
        seen it (a wall-clock step cannot fire or starve a step); from the stored wall time
        only when it first sees it (at its start, or resumed after a restart)."""
        key = (running.alarm_id, running.episode)
        anchor = self._anchors.get(key)
        if anchor is None:
            since = (self._clock.now() - running.started_at).total_seconds()
            anchor = self._anchors[key] = self._clock.monotonic() - since
        return self._clock.monotonic() - anchor

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
        elapsed = self._elapsed(running)
        key = (alarm_id, running.episode)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = self._clock.call_later(
            schedule[running.next_step].after_s - elapsed,
            lambda: self._fire_due(alarm_id, running.episode),
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
        elapsed = self._elapsed(running)
        due = [s for s in schedule[running.next_step :] if s.after_s <= elapsed + _SLACK_S]
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
        targets = [n.to.value for n in step.notify]
        audit.note(
            db,
            alarm.alarm_id,
            "step",
            "fired",
            f"policy {running.policy.name} step {step.index}: {', '.join(targets)}",
            at=now,
        )
        if alarm.suppressed or alarm.chattering:
            audit.note(
                db,
                alarm.alarm_id,
                "step",
                "skipped",
                "alarm shelved, out of service or chattering",
                at=now,
            )
            return
        unanswered = elapsed if step.index else 0.0
        items = [
            item
            for notify in step.notify
            for item in self._notifications(
                db, running.episode, step.index, notify, alarm, unanswered_s=unanswered
            )
        ]
        for item in enqueue(db, items, now):
            audit.note(
                db,
                alarm.alarm_id,
                "notification",
                "queued",
                item.delivery_key,
                channel=item.lane,
                recipient=item.recipient,
                at=now,
            )
        if step.index > 0:
            escalation = {"policy": running.policy.name, "step": step.index, "targets": targets}
            self._queue_event(db, alarm, ESCALATED, escalation=escalation)

    def _notifications(
        self,
        db: sqlite3.Connection,
        episode: int,
        step: int,
        notify: Notify,
        alarm: Alarm,
        *,
        unanswered_s: float,
    ) -> list[NewItem]:
        """One row per (channel, recipient) of one target; what cannot be sent is recorded."""
        site = self._registry.site(alarm.site_id) if alarm.site_id else None
        valve_state = valve_summary(self._coverage.valve_states(alarm))
        items: list[NewItem] = []
        recipients = self._recipients(notify.to, alarm)
        if not recipients:
            why = f"nobody configured as {notify.to.value}"
            audit.note(db, alarm.alarm_id, "notification", "skipped", why, at=self._clock.now())
            # Once per target, then counted: a start's dozens of maintenance findings with no
            # service team would bury the lines that matter (each is in its alarm's audit).
            self.counts[f"nobody_configured.{notify.to.value}"] += 1
            if self.counts[f"nobody_configured.{notify.to.value}"] == 1:
                log.warning(
                    "alarm %s: %s (logged once; every such alarm is noted in its audit trail "
                    "and counted)",
                    alarm.alarm_id,
                    why,
                )
        for via in notify.via:
            channel = self._settings.channels.get(via)
            for index, recipient in enumerate(recipients):
                address = address_for(channel, recipient) if channel else None
                if channel is None or address is None or not self._outbox.has_lane(via):
                    why = (
                        f"channel {via!r} not configured"
                        if channel is None or not self._outbox.has_lane(via)
                        else f"no address for {via}"
                    )
                    audit.note(
                        db,
                        alarm.alarm_id,
                        "notification",
                        "skipped",
                        why,
                        channel=via,
                        recipient=recipient.name,
                        at=self._clock.now(),
                    )
                    continue
                key = f"{alarm.alarm_id}/e{episode}/s{step}/{via}/{address}"
                message = render(
                    alarm,
                    site,
                    recipient.lang,
                    hotline=self._settings.hotline,
                    zone=local_zone(self._settings.timezone),
                    valve_state=valve_state,
                    unanswered_s=unanswered_s,
                )
                if step == 0 and notify.to is Target.SITE_CONTACTS and is_sms(channel):
                    message = self._with_alert_link(message, alarm, index, recipient.lang)
                payload = {
                    "kind": "notification",
                    "delivery_key": key,
                    "alarm_id": alarm.alarm_id,
                    "site_id": alarm.site_id,
                    "alarm_type": alarm.alarm_type,
                    "severity": alarm.severity.value,
                    "step": step,
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

    def _with_alert_link(self, message: Message, alarm: Alarm, contact: int, lang: str) -> Message:
        """A site contact's first SMS links to the center's alert page, signed here so the SMS
        never waits for the center (gateway/alert_link.py)."""
        page = self._settings.alert_page
        if not page.enabled or page.secret is None or page.base_url is None or contact > 255:
            return message
        expires = self._clock.now() + timedelta(seconds=page.ttl_s)
        grant = AlertGrant(alarm.alarm_id, contact, lang, expires)
        url = alert_link.link(page.base_url, alert_link.issue(page.secret_bytes(), grant))
        return with_alert_link(message, url, lang)

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
        (revision,) = db.execute(
            "UPDATE escalation_alarm SET event_revision = event_revision + 1 WHERE alarm_id = ?"
            " RETURNING event_revision",
            (alarm.alarm_id,),
        ).fetchone()
        now = self._clock.now()
        message = alarm_event(
            alarm,
            gateway_id=self._gateway_id,
            transition=transition,
            revision=revision,
            site=site_json(self._registry, alarm.site_id),
            valves=self._coverage.valve_states(alarm),
            escalation=escalation,
            by=by,
            note=note,
            at=now,
        )
        item = NewItem(
            f"{alarm.alarm_id}/event/{revision}",
            GASCO_LANE,
            alarm.alarm_id,
            "gas company",
            {"kind": "event", "message": message},
            cancellable=False,
        )
        enqueue(db, [item], now)

    def _check_channels(self) -> None:
        for policy in self._policies.policies:
            for name in sorted(policy.channels() - set(self._settings.channels)):
                log.warning(
                    "escalation policy %r uses channel %r, which is not configured:"
                    " those notifications are skipped (and recorded)",
                    policy.name,
                    name,
                )


@dataclass(frozen=True, slots=True)
class EscalationStatus:
    """Where an alarm's latest escalation stands, for the console."""

    policy: str
    episode: int
    last_step: int | None  # the last step fired (None: none yet)
    stopped_at: datetime | None
    stop_reason: str | None


def status(store: Store, alarm_id: str) -> EscalationStatus | None:
    """The alarm's latest escalation (None: it never escalated)."""
    row = store.db.execute(
        "SELECT policy, episode, next_step, stopped_at, stop_reason FROM escalation"
        " WHERE alarm_id = ? ORDER BY episode DESC LIMIT 1",
        (alarm_id,),
    ).fetchone()
    if row is None:
        return None
    stopped = datetime.fromisoformat(row[3]) if row[3] else None
    return EscalationStatus(row[0], row[1], row[2] - 1 if row[2] else None, stopped, row[4])


def _needs_people(event: AlarmChanged) -> bool:
    alarm = event.alarm
    if alarm.state is not AlarmState.UNACK_ACTIVE or alarm.suppressed or alarm.chattering:
        return False
    # RESTORED (after a restart) is notify=False, but if the raise never reached us (killed
    # between the alarm's commit and ours), nobody has been told: start now.
    return event.notify or event.transition is Transition.RESTORED


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
