"""The alarms room: rule verdicts (``ConditionChanged``) in, ISA-18.2 alarms out.

One open alarm per ``(source, alarm_type)``: a repeat updates it, never duplicates it. Every
transition is committed to the store (the alarm row and one history row, in one transaction)
*before* ``AlarmChanged`` is published, so a ``kill -9`` at any point leaves exactly the alarms
a restart resumes from; after a restart a condition arriving again updates the open alarm.

Lifecycle (docs/alarms.md has the full table):

* condition active → UNACK_ACTIVE; acknowledged → ACK_ACTIVE; condition clears → NORMAL (closed).
* condition clears before anyone acknowledged → UNACK_CLEARED; acknowledged → NORMAL.
* latched types (leaks, over-flow, valve failed to close) never close by themselves: an
  acknowledged latched alarm whose condition cleared stays ACK_ACTIVE until a person resolves it.
* chattering (more than 3 raises in 60 s), shelving (with expiry) and out-of-service are
  recorded and shown; they only stop people being notified (``AlarmChanged.notify``), never
  the linkage closing valves. Latched safety alarms cannot be shelved or taken out of service.

The operations (``acknowledge``, ``resolve``, ``shelve``, ``unshelve``, ``set_out_of_service``)
are what the console and the gas company path call; each returns the new :class:`Alarm` or a
:class:`Refused` with a reason code, and never raises for a bad request.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from gateway.alarm_types import AlarmType, info
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.events import AlarmChanged, ConditionChanged
from gateway.model import Alarm, AlarmState, Transition
from gateway.store import Store, StoreError

__all__ = [
    "CHATTER_RAISES",
    "CHATTER_WINDOW_S",
    "MAX_SHELVE_S",
    "Alarms",
    "HistoryEntry",
    "Refused",
    "latched",
    "new_id",
]

log = logging.getLogger(__name__)

CHATTER_WINDOW_S: Final = 60.0
CHATTER_RAISES: Final = 3  # more raises than this within the window: chattering
MAX_SHELVE_S: Final = 24 * 3600.0
SHELF_RETRY_S: Final = 10.0  # an expiry the store could not record is tried again this soon
STORE_RETRY_S: Final = 5.0  # transitions the store refused are written again this often
SYSTEM: Final = "system"  # the "who" of transitions nobody made by hand

_MIGRATIONS: Final = (
    """
    CREATE TABLE alarms (
        alarm_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        alarm_type TEXT NOT NULL,
        is_open INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );
    -- The database itself refuses a second open alarm for one source and type.
    CREATE UNIQUE INDEX alarms_one_open ON alarms (source, alarm_type) WHERE is_open = 1;
    CREATE TABLE alarm_history (
        alarm_id TEXT NOT NULL REFERENCES alarms (alarm_id),
        revision INTEGER NOT NULL,
        transition TEXT NOT NULL,
        state TEXT NOT NULL,
        at TEXT NOT NULL,
        by TEXT,
        note TEXT,
        notify INTEGER NOT NULL,
        snapshot TEXT NOT NULL,
        PRIMARY KEY (alarm_id, revision)
    );
    """,
)

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(gateway_id: str, now: datetime) -> str:
    """``{gateway_id}-{ULID}``: 48 bits of milliseconds then 80 random bits, Crockford base32,
    so ids sort by creation time and never collide across gateways or restarts."""
    value = (int(now.timestamp() * 1000) << 80) | secrets.randbits(80)
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return f"{gateway_id}-{''.join(chars)}"


def latched(alarm_type: str) -> bool:
    """Whether an alarm type latches; a type the catalogue does not know does not."""
    try:
        return info(AlarmType(alarm_type)).latched
    except ValueError:
        return False


def _why(c: ConditionChanged) -> str:
    return f"{c.rule_id}: {c.message}"


@dataclass(frozen=True, slots=True)
class Refused:
    """An operation the alarms room declined. ``reason``: unknown_alarm · wrong_state ·
    not_allowed · bad_request · store_failed (could not be recorded: retry)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class _Unrecorded:
    """The arguments of one ``_write`` the store refused."""

    alarm: Alarm
    transition: Transition
    notify: bool
    by: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    revision: int
    transition: Transition
    state: AlarmState
    at: datetime
    by: str | None
    note: str | None
    notify: bool


class Alarms:
    def __init__(self, bus: Bus, store: Store, clock: Clock, gateway_id: str) -> None:
        self._bus = bus
        self._store = store
        self._clock = clock
        self._gateway_id = gateway_id
        self._open: dict[tuple[str, str], Alarm] = {}
        self._open_by_id: dict[str, Alarm] = {}
        self._raises: dict[tuple[str, str], deque[float]] = {}
        self._shelf_timers: dict[str, Timer] = {}
        self.store_failures = 0  # transitions acted on without being stored
        # Transitions acted on while the store refused them, oldest first: written (in order,
        # before any newer one) as soon as the store takes writes again.
        self._unrecorded: deque[_Unrecorded] = deque()
        self._store_retry: Timer | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._store.migrate("alarms", _MIGRATIONS)
        for row in self._store.db.execute("SELECT snapshot FROM alarms WHERE is_open = 1"):
            alarm = Alarm.from_json(row["snapshot"])
            self._remember(alarm)
            if alarm.shelved_until is not None:
                self._arm_shelf(alarm)
        log.info("alarms: %d open alarm(s) restored from the store", len(self._open))
        self._bus.subscribe(ConditionChanged, self.on_condition, name="alarms")

    async def stop(self) -> None:
        for timer in self._shelf_timers.values():
            timer.cancel()
        self._shelf_timers.clear()
        if self._store_retry is not None:
            self._store_retry.cancel()
            self._store_retry = None
        if self._unrecorded:
            log.critical("alarms: stopping with %d transition(s) NOT stored", len(self._unrecorded))

    def announce_restored(self) -> None:
        """Publish every open alarm once more (transition RESTORED, notify False), after all
        rooms have started, so the linkage and escalation resume what a crash interrupted."""
        for alarm in sorted(self._open_by_id.values(), key=lambda a: a.alarm_id):
            self._bus.publish(AlarmChanged(alarm, Transition.RESTORED, notify=False))

    # --- reading ----------------------------------------------------------------------------

    @property
    def unrecorded(self) -> int:
        """Transitions acted on that the store has not taken yet (written again every 5 s)."""
        return len(self._unrecorded)

    def open_alarms(self) -> list[Alarm]:
        return sorted(self._open_by_id.values(), key=lambda a: a.alarm_id)

    def get(self, alarm_id: str) -> Alarm | None:
        alarm = self._open_by_id.get(alarm_id)
        if alarm is not None:
            return alarm
        row = self._store.db.execute(
            "SELECT snapshot FROM alarms WHERE alarm_id = ?", (alarm_id,)
        ).fetchone()
        return Alarm.from_json(row["snapshot"]) if row else None

    def history(self, alarm_id: str) -> list[HistoryEntry]:
        rows = self._store.db.execute(
            "SELECT revision, transition, state, at, by, note, notify FROM alarm_history"
            " WHERE alarm_id = ? ORDER BY revision",
            (alarm_id,),
        )
        return [
            HistoryEntry(
                r["revision"],
                Transition(r["transition"]),
                AlarmState(r["state"]),
                datetime.fromisoformat(r["at"]),
                r["by"],
                r["note"],
                bool(r["notify"]),
            )
            for r in rows
        ]

    # --- conditions from the rules ----------------------------------------------------------

    def on_condition(self, c: ConditionChanged) -> None:
        key = (c.source, c.alarm_type)
        current = self._open.get(key)
        if c.active:
            self._activate(c, current)
        elif current is not None and current.active:
            self._clear(c, current)
        # An inactive verdict for an alarm that is not active changes nothing.

    def _activate(self, c: ConditionChanged, current: Alarm | None) -> None:
        now = self._clock.now()
        readings = MappingProxyType(dict(c.readings))
        # Only a (re)raise counts towards chattering, not a repeat of an active condition.
        chattering = (current is None or not current.active) and self._count_raise(
            (c.source, c.alarm_type)
        )
        if current is None:
            alarm = Alarm(
                alarm_id=new_id(self._gateway_id, now),
                revision=1,
                source=c.source,
                alarm_type=c.alarm_type,
                site_id=c.site_id,
                device_id=c.device_id,
                rule_id=c.rule_id,
                severity=c.severity,
                state=AlarmState.UNACK_ACTIVE,
                active=True,
                latched=latched(c.alarm_type),
                message=c.message,
                readings=readings,
                raised_at=now,
                updated_at=now,
                chattering=chattering,
            )
            self._commit(alarm, Transition.RAISED, not chattering, why=_why(c))
            return
        if current.active:
            if (current.severity, current.message, dict(current.readings)) == (
                c.severity,
                c.message,
                dict(c.readings),
            ):
                return  # the same verdict again: nothing new to record
            more_urgent = c.severity.rank < current.severity.rank
            alarm = current.evolve(
                severity=c.severity, message=c.message, readings=readings, updated_at=now
            )
            notify = more_urgent and self._notifiable(alarm)
            self._commit(alarm, Transition.UPDATED, notify, why=_why(c))
            return
        alarm = current.evolve(
            state=AlarmState.UNACK_ACTIVE,
            active=True,
            severity=c.severity,
            rule_id=c.rule_id,
            message=c.message,
            readings=readings,
            updated_at=now,
            acked_at=None,
            acked_by=None,
            chattering=chattering,
            raise_count=current.raise_count + 1,
        )
        if chattering and not current.chattering:
            self._commit(alarm, Transition.CHATTERING, False, why=_why(c))
        else:
            self._commit(alarm, Transition.REACTIVATED, self._notifiable(alarm), why=_why(c))

    def _clear(self, c: ConditionChanged, current: Alarm) -> None:
        now = self._clock.now()
        changes: dict[str, object] = {
            "active": False,
            "cleared_at": now,
            "updated_at": now,
            "readings": MappingProxyType(dict(c.readings)) or current.readings,
        }
        if current.state is AlarmState.UNACK_ACTIVE:
            changes["state"] = AlarmState.UNACK_CLEARED
        elif not current.latched:
            changes |= {"state": AlarmState.NORMAL, "closed_at": now}
        self._commit(current.evolve(**changes), Transition.CLEARED, False, why=_why(c))

    def _count_raise(self, key: tuple[str, str]) -> bool:
        """Record a raise; True if the key now chatters (more than 3 raises in 60 s)."""
        now = self._clock.monotonic()
        times = self._raises.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - CHATTER_WINDOW_S:
            times.popleft()
        return len(times) > CHATTER_RAISES

    @staticmethod
    def _notifiable(alarm: Alarm) -> bool:
        return not (alarm.suppressed or alarm.chattering)

    # --- operations by people ---------------------------------------------------------------

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused:
        alarm = self._target(alarm_id, by)
        if isinstance(alarm, Refused):
            return alarm
        now = self._clock.now()
        if alarm.state is AlarmState.UNACK_ACTIVE:
            changes: dict[str, object] = {"state": AlarmState.ACK_ACTIVE}
        elif alarm.state is AlarmState.UNACK_CLEARED:
            changes = {"state": AlarmState.NORMAL, "closed_at": now}
        else:
            return Refused("wrong_state", f"alarm {alarm_id} is already acknowledged")
        changes |= {"acked_at": now, "acked_by": by, "updated_at": now}
        return self._operate(alarm.evolve(**changes), Transition.ACKNOWLEDGED, False, by, note)

    def resolve(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused:
        """Close an alarm whose condition has cleared (what closes a latched alarm)."""
        alarm = self._target(alarm_id, by)
        if isinstance(alarm, Refused):
            return alarm
        if alarm.active:
            return Refused(
                "wrong_state", f"alarm {alarm_id}: the condition is still active, cannot resolve"
            )
        now = self._clock.now()
        resolved = alarm.evolve(
            state=AlarmState.NORMAL,
            closed_at=now,
            closed_by=by,
            updated_at=now,
            acked_at=alarm.acked_at or now,
            acked_by=alarm.acked_by or by,
        )
        return self._operate(resolved, Transition.RESOLVED, False, by, note)

    def shelve(self, alarm_id: str, by: str, reason: str, duration_s: float) -> Alarm | Refused:
        alarm = self._target(alarm_id, by)
        if isinstance(alarm, Refused):
            return alarm
        refusal = self._suppressible(alarm, reason)
        if refusal is not None:
            return refusal
        if not 0 < duration_s <= MAX_SHELVE_S:
            return Refused(
                "bad_request", f"shelve for more than 0 s and at most {MAX_SHELVE_S:.0f} s"
            )
        now = self._clock.now()
        shelved = alarm.evolve(
            shelved_until=now + timedelta(seconds=duration_s),
            shelved_by=by,
            shelve_reason=reason,
            updated_at=now,
        )
        result = self._operate(shelved, Transition.SHELVED, False, by, reason)
        if isinstance(result, Alarm):
            self._arm_shelf(result)
        return result

    def unshelve(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused:
        alarm = self._target(alarm_id, by)
        if isinstance(alarm, Refused):
            return alarm
        if alarm.shelved_until is None:
            return Refused("wrong_state", f"alarm {alarm_id} is not shelved")
        return self._unshelve(alarm, by, note)

    def set_out_of_service(
        self, alarm_id: str, by: str, reason: str, out_of_service: bool = True
    ) -> Alarm | Refused:
        alarm = self._target(alarm_id, by)
        if isinstance(alarm, Refused):
            return alarm
        now = self._clock.now()
        if not out_of_service:
            if alarm.out_of_service_by is None:
                return Refused("wrong_state", f"alarm {alarm_id} is not out of service")
            back = alarm.evolve(out_of_service_by=None, out_of_service_reason=None, updated_at=now)
            notify = back.state.unacknowledged and self._notifiable(back)
            return self._operate(back, Transition.IN_SERVICE, notify, by, reason)
        refusal = self._suppressible(alarm, reason)
        if refusal is not None:
            return refusal
        if alarm.out_of_service_by is not None:
            return Refused("wrong_state", f"alarm {alarm_id} is already out of service")
        oos = alarm.evolve(out_of_service_by=by, out_of_service_reason=reason, updated_at=now)
        return self._operate(oos, Transition.OUT_OF_SERVICE, False, by, reason)

    def _target(self, alarm_id: str, by: str) -> Alarm | Refused:
        """The open alarm an operation acts on, or why there is none."""
        if not by.strip():
            return Refused("bad_request", "an operation needs the person's id ('by')")
        alarm = self._open_by_id.get(alarm_id)
        if alarm is not None:
            return alarm
        if self.get(alarm_id) is None:
            return Refused("unknown_alarm", f"no alarm {alarm_id!r}")
        return Refused("wrong_state", f"alarm {alarm_id} is closed")

    @staticmethod
    def _suppressible(alarm: Alarm, reason: str) -> Refused | None:
        if alarm.latched:
            return Refused(
                "not_allowed",
                f"{alarm.alarm_type} is a latched safety alarm: it cannot be suppressed, "
                "acknowledge it instead",
            )
        if not reason.strip():
            return Refused("bad_request", "suppressing an alarm needs a reason")
        return None

    # --- shelving expiry --------------------------------------------------------------------

    def _arm_shelf(self, alarm: Alarm) -> None:
        if alarm.shelved_until is None:
            return
        old = self._shelf_timers.pop(alarm.alarm_id, None)
        if old is not None:
            old.cancel()
        # Wall time is the only time that survives a restart; a past expiry fires at once.
        delay = (alarm.shelved_until - self._clock.now()).total_seconds()
        until = alarm.shelved_until
        self._shelf_timers[alarm.alarm_id] = self._clock.call_later(
            delay, lambda: self._shelf_expired(alarm.alarm_id, until)
        )

    def _shelf_expired(self, alarm_id: str, until: datetime) -> None:
        self._shelf_timers.pop(alarm_id, None)
        alarm = self._open_by_id.get(alarm_id)
        if alarm is None or alarm.shelved_until != until:
            return  # closed, unshelved or shelved again meanwhile
        if isinstance(self._unshelve(alarm, SYSTEM, "shelving expired"), Refused):
            # Not recorded (the store failed): try again, or the alarm stays silenced.
            self._shelf_timers[alarm_id] = self._clock.call_later(
                SHELF_RETRY_S, lambda: self._shelf_expired(alarm_id, until)
            )

    def _unshelve(self, alarm: Alarm, by: str, note: str | None) -> Alarm | Refused:
        timer = self._shelf_timers.pop(alarm.alarm_id, None)
        if timer is not None:
            timer.cancel()
        back = alarm.evolve(
            shelved_until=None, shelved_by=None, shelve_reason=None, updated_at=self._clock.now()
        )
        notify = back.state.unacknowledged and self._notifiable(back)
        return self._operate(back, Transition.UNSHELVED, notify, by, note)

    # --- the one write path -----------------------------------------------------------------

    def _operate(
        self, alarm: Alarm, transition: Transition, notify: bool, by: str, note: str | None
    ) -> Alarm | Refused:
        """A person's transition: recorded, or refused if it cannot be (nothing changes)."""
        try:
            return self._commit(alarm, transition, notify, by, note)
        except (StoreError, sqlite3.Error) as exc:
            log.error("alarm %s: %s by %s not recorded: %s", alarm.alarm_id, transition, by, exc)
            return Refused("store_failed", f"alarm {alarm.alarm_id}: not recorded ({exc}); retry")

    def _commit(
        self,
        alarm: Alarm,
        transition: Transition,
        notify: bool,
        by: str | None = None,
        note: str | None = None,
        *,
        why: str | None = None,
    ) -> Alarm:
        """Store the snapshot and its history row atomically, then publish it. ``why`` (the
        rule's verdict, for automatic transitions) goes to the history in place of a note.

        If the store cannot be written (disk full, failing card), a transition the rules
        caused is published anyway, loudly: a leak must close its valves and reach a person
        even when it cannot be recorded. A person's operation is not: it is refused."""
        self._unrecorded.append(_Unrecorded(alarm, transition, notify, by, note or why))
        try:
            self._write_unrecorded()
        except (StoreError, sqlite3.Error):
            if why is None:
                self._unrecorded.pop()  # a person's operation is refused, not queued
                raise
            self.store_failures += 1
            log.critical(
                "alarm %s (%s at %s) %s could NOT be stored; acting on it anyway, "
                "storing it again every %.0f s",
                alarm.alarm_id, alarm.alarm_type, alarm.source, transition, STORE_RETRY_S,
                exc_info=True,
            )  # fmt: skip
            self._arm_store_retry()
        self._remember(alarm)
        self._bus.publish(AlarmChanged(alarm, transition, notify, by, note))
        return alarm

    def _write_unrecorded(self) -> None:
        """Write the waiting transitions oldest first; raises (keeping the rest) on failure."""
        while self._unrecorded:
            w = self._unrecorded[0]
            self._write(w.alarm, w.transition, w.notify, w.by, w.note)
            self._unrecorded.popleft()

    def _arm_store_retry(self) -> None:
        if self._store_retry is None:
            self._store_retry = self._clock.call_later(STORE_RETRY_S, self._retry_store)

    def _retry_store(self) -> None:
        self._store_retry = None
        waiting = len(self._unrecorded)
        try:
            self._write_unrecorded()
        except (StoreError, sqlite3.Error) as exc:
            log.critical("alarms: %d transition(s) still NOT stored: %s", waiting, exc)
            self._arm_store_retry()
            return
        if waiting:
            log.warning("alarms: the store takes writes again; %d transition(s) stored", waiting)

    def _write(
        self, alarm: Alarm, transition: Transition, notify: bool, by: str | None, note: str | None
    ) -> None:
        snapshot = alarm.to_json()
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO alarms (alarm_id, source, alarm_type, is_open, revision, snapshot)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (alarm_id) DO UPDATE SET"
                " is_open = excluded.is_open, revision = excluded.revision,"
                " snapshot = excluded.snapshot",
                (
                    alarm.alarm_id,
                    alarm.source,
                    alarm.alarm_type,
                    int(alarm.is_open),
                    alarm.revision,
                    snapshot,
                ),
            )
            db.execute(
                "INSERT INTO alarm_history (alarm_id, revision, transition, state, at, by, note,"
                " notify, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alarm.alarm_id,
                    alarm.revision,
                    transition.value,
                    alarm.state.value,
                    alarm.updated_at.isoformat(),
                    by,
                    note,
                    int(notify),
                    snapshot,
                ),
            )

    def _remember(self, alarm: Alarm) -> None:
        key = (alarm.source, alarm.alarm_type)
        if alarm.is_open:
            self._open[key] = alarm
            self._open_by_id[alarm.alarm_id] = alarm
        else:
            self._open.pop(key, None)
            self._open_by_id.pop(alarm.alarm_id, None)
            timer = self._shelf_timers.pop(alarm.alarm_id, None)
            if timer is not None:
                timer.cancel()
