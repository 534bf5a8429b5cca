"""Local valve linkage: a leak (or an over-flow trip) closes the linked shut-off valves.

When an alarm whose type ``closes_valves`` becomes active, every linked valve is commanded
``close_valve`` at once (a detector's valves from the registry's links; a regulator's one valve).
A valve confirms by reporting ``closed``; a valve that has not within ``retry_s`` (10 s) is
commanded again, up to ``TRIES`` commands, then a critical ``valve_failed_to_close`` condition
goes to the alarms room. A valve that later reports ``closed`` clears that condition.

Durable: a command and its follow-up (valve, alarm, tries, time of the last try, whether the
broker took it) are committed before the command is handed to the site MQTT queue. A restart
commands every valve whose follow-up is not confirmed at once: the next try if the broker had
taken the last one, the same try again if it may never have left (so a jammed valve still gets
its three real tries), and it raises again a ``valve_failed_to_close`` that a crash may have
kept from the alarms room. The alarms room's RESTORED announcements close what a crash left
uncommanded.

Only a live ``closed`` report confirms a close: a retained one is the broker's stored copy of
some earlier state (it may seed the display), and a live one counts for a new command only if
it is at most ``retry_s`` old.

There is no way to open a valve here or anywhere: :func:`command_message` is the only command
builder and takes a :class:`firmware_bridge.ksp.CommandCode`, which has no "open".
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from firmware_bridge.ksp import CmdResult, CommandCode, ValveState
from gateway.alarm_types import AlarmType, info
from gateway.alarms import new_id
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.contract import CmdAckMessage, CmdMessage, cmd_topic, decode, parse_topic
from gateway.errors import RejectedInput
from gateway.events import (
    AlarmChanged,
    ConditionChanged,
    ReportReceived,
    Severity,
    ValveStateChanged,
)
from gateway.logs import LogGate
from gateway.model import Alarm, Transition
from gateway.registry import DeviceInfo
from gateway.store import Store, StoreError

__all__ = [
    "FIRST_STATES_S",
    "RETRY_S",
    "TRIES",
    "Linkage",
    "Publisher",
    "ValveLookup",
    "command_message",
]

log = logging.getLogger(__name__)

RETRY_S: Final = 10.0
TRIES: Final = 3
RULE_ID: Final = "linkage.valve_failed_to_close"
FIRST_STATES_S: Final = 1.0  # valves' first states are stored together, this often
ACK_LOG_EVERY_S: Final = 10.0  # at most one "ack refused" warning this often
_SAVE_VALVE_STATE: Final = (
    "INSERT INTO valve_state (valve_id, state, at) VALUES (?, ?, ?)"
    " ON CONFLICT (valve_id) DO UPDATE SET state = excluded.state, at = excluded.at"
)

# Transitions after which the condition has (again) become active: the valves must close.
_CLOSE_ON: Final = frozenset(
    {Transition.RAISED, Transition.REACTIVATED, Transition.CHATTERING, Transition.RESTORED}
)

_MIGRATIONS: Final = (
    """
    -- One close follow-up per valve: the latest command and how it went.
    CREATE TABLE valve_close (
        valve_id TEXT PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        cmd_id TEXT NOT NULL,
        tries INTEGER NOT NULL,
        sent_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed'))
    );
    -- Every command ever handed to the broker, for the audit trail.
    CREATE TABLE valve_command (
        cmd_id TEXT PRIMARY KEY,
        valve_id TEXT NOT NULL,
        alarm_id TEXT NOT NULL,
        cmd TEXT NOT NULL,
        try INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE valve_state (
        valve_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        at TEXT NOT NULL
    );
    """,
    # What the device (or the bridge, for a radio valve) answered on cmd/ack, and when.
    """
    ALTER TABLE valve_command ADD COLUMN ack TEXT;
    ALTER TABLE valve_command ADD COLUMN ack_at TEXT;
    """,
    # Whether the broker acknowledged the follow-up's latest command (rows from before: yes).
    """
    ALTER TABLE valve_close ADD COLUMN sent INTEGER NOT NULL DEFAULT 1;
    """,
    # The console shows an alarm's own commands.
    """
    CREATE INDEX valve_command_alarm ON valve_command (alarm_id);
    """,
)


class Publisher(Protocol):
    """Where commands go (:class:`gateway.site_mqtt.SiteMqtt`): queued, never blocking;
    ``on_sent`` runs once the broker has the message."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> None: ...


class ValveLookup(Protocol):
    """The registry lookups the linkage needs (:class:`gateway.registry.Registry`)."""

    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]: ...

    def valve_for_regulator(self, regulator_id: str) -> str | None: ...

    def device(self, device_id: str) -> DeviceInfo | None: ...


def command_message(device_id: str, cmd_id: str, code: CommandCode) -> tuple[str, bytes]:
    """The one builder of device commands: topic and kit/v1 payload."""
    return cmd_topic(device_id), CmdMessage(id=cmd_id, cmd=code).model_dump_json().encode()


def closes_valves(alarm_type: str) -> bool:
    try:
        return info(AlarmType(alarm_type)).closes_valves
    except ValueError:
        return False


@dataclass(slots=True)
class _FollowUp:
    valve_id: str
    alarm_id: str
    cmd_id: str
    tries: int
    sent_at: datetime
    status: str
    sent: bool = False  # the broker acknowledged cmd_id
    timer: Timer | None = None


class Linkage:
    def __init__(
        self,
        bus: Bus,
        registry: ValveLookup,
        site_mqtt: Publisher,
        store: Store,
        clock: Clock,
        *,
        retry_s: float = RETRY_S,
    ) -> None:
        self._bus = bus
        self._registry = registry
        self._mqtt = site_mqtt
        self._store = store
        self._clock = clock
        self._retry_s = retry_s
        self._follow_ups: dict[str, _FollowUp] = {}
        self._valve_states: dict[str, ValveState] = {}
        self._closed_mono: dict[str, float] = {}  # when a valve last reported closed, live
        self._failed: set[str] = set()  # valves whose valve_failed_to_close is raised
        self._unsaved: dict[str, tuple[str, str, str]] = {}  # first states not yet stored
        self._flush_timer: Timer | None = None
        self._ack_log = LogGate(ACK_LOG_EVERY_S)
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._store.migrate("linkage", _MIGRATIONS)
        db = self._store.db
        for row in db.execute("SELECT valve_id, state FROM valve_state"):
            self._valve_states[row["valve_id"]] = ValveState(row["state"])
        for row in db.execute("SELECT * FROM valve_close"):
            f = _FollowUp(
                row["valve_id"],
                row["alarm_id"],
                row["cmd_id"],
                row["tries"],
                datetime.fromisoformat(row["sent_at"]),
                row["status"],
                bool(row["sent"]),
            )
            self._follow_ups[f.valve_id] = f
        self._bus.subscribe(AlarmChanged, self.on_alarm, name="linkage")
        self._bus.subscribe(ReportReceived, self.on_report, name="linkage")
        self._resume()

    def _resume(self) -> None:
        """After a restart: a failed valve's alarm raised again (a crash may have come between
        storing "failed" and the alarm's commit; the alarms room ignores a repeat), and every
        valve not confirmed closed commanded at once."""
        unconfirmed = [f for f in self._follow_ups.values() if f.status != "confirmed"]
        for f in unconfirmed:
            if f.status == "failed":
                self._failed.add(f.valve_id)
                self._condition(f, active=True)
            # The next try if the broker had the last one; else that try again: it may
            # never have left (a jammed valve still gets all its tries).
            tries = f.tries + 1 if f.sent and f.tries < TRIES else f.tries
            self._command([f.valve_id], f.alarm_id, tries=tries)
        log.info("linkage: %d valve(s) not confirmed closed commanded again", len(unconfirmed))

    async def stop(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_first_states()
        for f in self._follow_ups.values():
            if f.timer is not None:
                f.timer.cancel()
                f.timer = None

    def valve_state(self, valve_id: str) -> ValveState | None:
        """The last state the valve reported (None: never heard from)."""
        return self._valve_states.get(valve_id)

    # --- alarms → commands ------------------------------------------------------------------

    def on_alarm(self, event: AlarmChanged) -> None:
        alarm = event.alarm
        if not (alarm.active and event.transition in _CLOSE_ON and closes_valves(alarm.alarm_type)):
            return
        valves = self._valves_of(alarm)
        if not valves:
            self.counts["no_linked_valve"] += 1
            log.warning(
                "alarm %s (%s at %s): no linked valve to close",
                alarm.alarm_id,
                alarm.alarm_type,
                alarm.source,
            )
            return
        to_close = [v for v in valves if self._needs_command(v, alarm, event.transition)]
        if to_close:
            self._command(to_close, alarm.alarm_id, tries=1)

    def _valves_of(self, alarm: Alarm) -> tuple[str, ...]:
        device = alarm.device_id
        if device is None:
            return ()
        regulator_valve = self._registry.valve_for_regulator(device)
        linked = self._registry.valves_for_detector(device)
        return linked + (
            (regulator_valve,) if regulator_valve and regulator_valve not in linked else ()
        )

    def _needs_command(self, valve_id: str, alarm: Alarm, transition: Transition) -> bool:
        f = self._follow_ups.get(valve_id)
        if f is None:
            return True
        if f.status == "pending":
            return False  # already being closed: its retries are scheduled
        # After a restart, a valve commanded since the alarm was raised (for it, or for the
        # other leak level of the same detector) is not commanded again.
        return not (transition is Transition.RESTORED and f.sent_at >= alarm.raised_at)

    def _command(self, valves: list[str], alarm_id: str, tries: int) -> None:
        """Store the follow-ups, then queue every command: all valves in one go."""
        now = self._clock.now()
        follow_ups = [
            _FollowUp(v, alarm_id, new_id("close", now), tries, now, "pending") for v in valves
        ]
        try:
            self._store_commands(follow_ups, alarm_id, now)
        except (StoreError, sqlite3.Error):
            # Closing the valves matters more than remembering it: a restart re-closes.
            self.counts["store_failed"] += 1
            log.critical("valve close for alarm %s could NOT be stored; commanding anyway",
                         alarm_id, exc_info=True)  # fmt: skip
        for f in follow_ups:
            topic, payload = command_message(f.valve_id, f.cmd_id, CommandCode.CLOSE_VALVE)
            self._mqtt.publish(topic, payload, on_sent=self._on_sent(f))
            self.counts["close_commands"] += 1
            old = self._follow_ups.get(f.valve_id)
            if old is not None and old.timer is not None:
                old.timer.cancel()
            self._follow_ups[f.valve_id] = f
            log.info(
                "valve %s: close_valve sent (try %d/%d, alarm %s, command %s)",
                f.valve_id,
                f.tries,
                TRIES,
                alarm_id,
                f.cmd_id,
            )
            if self._closed_lately(f.valve_id):
                # Already closed by itself (kits close on their detector's radio signal).
                self._settle(f, "confirmed")
            else:
                self._arm(f, self._retry_s)

    def _closed_lately(self, valve_id: str) -> bool:
        """A live ``closed`` report within ``retry_s``: fresh enough to confirm a command."""
        at = self._closed_mono.get(valve_id)
        return at is not None and self._clock.monotonic() - at <= self._retry_s

    def _on_sent(self, f: _FollowUp) -> Callable[[], None]:
        def sent() -> None:
            f.sent = True
            try:
                with self._store.transaction(durable=False) as db:
                    db.execute(
                        "UPDATE valve_close SET sent = 1 WHERE valve_id = ? AND cmd_id = ?",
                        (f.valve_id, f.cmd_id),
                    )
            except (StoreError, sqlite3.Error):
                # Lost, a restart sends this try again: one command more, never one less.
                self.counts["store_failed"] += 1

        return sent

    def _store_commands(self, follow_ups: list[_FollowUp], alarm_id: str, now: datetime) -> None:
        # Not durable (no fsync before the command leaves): the alarm is, and a restart that
        # finds an open alarm with no command since its raise closes the valves again.
        with self._store.transaction(durable=False) as db:
            for f in follow_ups:
                db.execute(
                    "INSERT INTO valve_close"
                    " (valve_id, alarm_id, cmd_id, tries, sent_at, status, sent)"
                    " VALUES (?, ?, ?, ?, ?, 'pending', 0) ON CONFLICT (valve_id) DO UPDATE SET"
                    " alarm_id = excluded.alarm_id, cmd_id = excluded.cmd_id,"
                    " tries = excluded.tries, sent_at = excluded.sent_at, status = 'pending',"
                    " sent = 0",
                    (f.valve_id, f.alarm_id, f.cmd_id, f.tries, now.isoformat()),
                )
                db.execute(
                    "INSERT INTO valve_command (cmd_id, valve_id, alarm_id, cmd, try, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        f.cmd_id,
                        f.valve_id,
                        alarm_id,
                        CommandCode.CLOSE_VALVE.value,
                        f.tries,
                        now.isoformat(),
                    ),
                )

    def _first_state(self, row: tuple[str, str, str]) -> None:
        """A valve's first state is stored with the others heard within ``FIRST_STATES_S``, in
        one commit: after a start every valve reports once, and one fsync'd commit each would
        hold a leak behind thousands of them. Losing a batch (a crash) loses only first
        states, which a restart reads as "never heard from": no valve is then taken for closed
        (that would settle a close command at once), the safe direction. A change of a known
        state is stored at once, and the first state it replaces leaves the batch: stored after
        it, the older state would overwrite the newer one."""
        self._unsaved[row[0]] = row
        if self._flush_timer is None:
            self._flush_timer = self._clock.call_later(FIRST_STATES_S, self._flush_first_states)

    def _flush_first_states(self) -> None:
        self._flush_timer = None
        rows, self._unsaved = list(self._unsaved.values()), {}
        if not rows:
            return
        try:
            with self._store.transaction(durable=False) as db:
                db.executemany(_SAVE_VALVE_STATE, rows)
        except (StoreError, sqlite3.Error):
            self.counts["store_failed"] += 1
            log.critical("first state of %d valve(s) could NOT be stored", len(rows), exc_info=True)

    def _persist(self, what: str, sql: str, params: tuple[str, ...]) -> None:
        """One write that must not stop the valve work if the disk fails (said loudly)."""
        try:
            with self._store.transaction() as db:
                db.execute(sql, params)
        except (StoreError, sqlite3.Error):
            self.counts["store_failed"] += 1
            log.critical("%s could NOT be stored", what, exc_info=True)

    def _arm(self, f: _FollowUp, delay_s: float) -> None:
        cmd_id = f.cmd_id
        f.timer = self._clock.call_later(delay_s, lambda: self._due(f.valve_id, cmd_id))

    def _due(self, valve_id: str, cmd_id: str) -> None:
        f = self._follow_ups.get(valve_id)
        if f is None or f.status != "pending" or f.cmd_id != cmd_id:
            return  # confirmed, or superseded by a newer command
        f.timer = None
        try:
            if f.tries < TRIES:
                self.counts["retries"] += 1
                self._command([valve_id], f.alarm_id, tries=f.tries + 1)
            else:
                self._settle(f, "failed")
        except Exception:
            log.exception("valve %s: follow-up failed", valve_id)

    def _settle(self, f: _FollowUp, status: str) -> None:
        """Record a follow-up's outcome; a failure raises, a later close clears, the alarm."""
        self._persist(
            f"valve {f.valve_id} {status}",
            "UPDATE valve_close SET status = ? WHERE valve_id = ?",
            (status, f.valve_id),
        )
        f.status = status
        if f.timer is not None:
            f.timer.cancel()
            f.timer = None
        if status == "failed":
            self._failed.add(f.valve_id)
            self.counts["failed_to_close"] += 1
            log.error(
                "valve %s did not report closed after %d close commands (alarm %s)",
                f.valve_id,
                f.tries,
                f.alarm_id,
            )
            self._condition(f, active=True)
        elif f.valve_id in self._failed:
            self._failed.discard(f.valve_id)
            self._condition(f, active=False)

    def _condition(self, f: _FollowUp, active: bool) -> None:
        state = self._valve_states.get(f.valve_id)
        device = self._registry.device(f.valve_id)
        self._bus.publish(
            ConditionChanged(
                alarm_type=AlarmType.VALVE_FAILED_TO_CLOSE.value,
                source=f.valve_id,
                site_id=device.site_id if device else None,
                device_id=f.valve_id,
                active=active,
                severity=Severity.CRITICAL,
                rule_id=RULE_ID,
                message=(
                    f"shut-off valve {f.valve_id} not closed after {f.tries} close commands"
                    if active
                    else f"shut-off valve {f.valve_id} reported closed"
                ),
                at=self._clock.now(),
                readings={
                    "tries": f.tries,
                    "valve_state": state.value if state else None,
                    "alarm_id": f.alarm_id,
                },
            )
        )

    # --- command acknowledgements -------------------------------------------------------------

    def handle_ack(self, topic: str, payload: bytes) -> None:
        """A ``kit/v1/{device}/cmd/ack`` message: stored beside its command for the audit trail.
        Only the valve's ``closed`` report confirms a close; an ack says it was delivered."""
        try:
            kind, device_id = parse_topic(topic)
            if kind != "cmd/ack":
                return
            ack = decode(CmdAckMessage, payload, topic)
        except RejectedInput as exc:
            self.counts[f"ack_rejected.{exc.reason}"] += 1
            held = self._ack_log.admit(self._clock.monotonic())  # forged acks can flood
            if held is not None:
                log.warning("command ack refused (%s): %s (+%d not logged before)",
                            exc.reason, exc, held)  # fmt: skip
            return
        with self._store.transaction() as db:
            found = db.execute(
                "UPDATE valve_command SET ack = ?, ack_at = ? WHERE cmd_id = ? AND valve_id = ?",
                (ack.result.value, self._clock.now().isoformat(), ack.id, device_id),
            ).rowcount
        if not found:
            self.counts["ack_unknown_command"] += 1  # another sender's command: not ours
            return
        self.counts[f"ack.{ack.result.value}"] += 1
        if ack.result is not CmdResult.OK:
            log.warning("valve %s answered close command %s: %s", device_id, ack.id, ack.result)

    # --- valve reports ----------------------------------------------------------------------

    def on_report(self, event: ReportReceived) -> None:
        reading = event.report.valve
        if reading is None:
            return
        state = reading.state
        known = self._valve_states.get(event.device_id)
        if event.retained:
            # Old news: shown until the valve speaks, never taken as a closure.
            self.counts["retained_reports"] += 1
            if known is None:
                self._valve_states[event.device_id] = state
                self._changed(event, state, known)
            return
        if state is ValveState.CLOSED:
            self._closed_mono[event.device_id] = event.received_mono
        else:
            self._closed_mono.pop(event.device_id, None)
        if known is not state:
            self._valve_states[event.device_id] = state
            row = (event.device_id, state.value, event.received_at.isoformat())
            if known is None:
                self._first_state(row)
            else:
                self._unsaved.pop(event.device_id, None)
                self._persist(f"valve {event.device_id} state {state}", _SAVE_VALVE_STATE, row)
            self._changed(event, state, known)
        f = self._follow_ups.get(event.device_id)
        if state is ValveState.CLOSED and f is not None and f.status in ("pending", "failed"):
            log.info(
                "valve %s reported closed (alarm %s, after %d command(s))",
                f.valve_id,
                f.alarm_id,
                f.tries,
            )
            self._settle(f, "confirmed")

    def _changed(self, event: ReportReceived, state: ValveState, known: ValveState | None) -> None:
        """Said on the bus, so the gas company hears of it while the valve's alarm is open."""
        self._bus.publish(
            ValveStateChanged(
                event.device_id, state.value, known.value if known else None, event.received_at
            )
        )
