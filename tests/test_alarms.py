"""The ISA-18.2 alarm state machine, with a ManualClock, a real bus and a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.alarms import Alarms, Refused
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.events import AlarmChanged, ConditionChanged, Severity
from gateway.model import Alarm, AlarmState, Transition
from gateway.store import Store


@dataclass
class Room:
    """An alarms room on its own store, with every AlarmChanged it published."""

    path: Path
    clock: ManualClock = field(default_factory=ManualClock)
    bus: Bus = field(default_factory=Bus)
    store: Store = field(init=False)
    alarms: Alarms = field(init=False)
    changes: list[AlarmChanged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = Store(self.path)
        self.alarms = Alarms(self.bus, self.store, self.clock, "gw1")

    async def start(self) -> None:
        self.store.open()
        await self.alarms.start()
        self.bus.subscribe(AlarmChanged, self.changes.append)

    async def stop(self) -> None:
        await self.bus.join()
        await self.alarms.stop()
        self.store.close()

    async def condition(
        self,
        active: bool,
        alarm_type: str = "leak_high",
        source: str = "det1",
        severity: Severity = Severity.CRITICAL,
        lel: float = 55.0,
    ) -> None:
        self.bus.publish(
            ConditionChanged(
                alarm_type=alarm_type,
                source=source,
                site_id="site1",
                device_id=source,
                active=active,
                severity=severity,
                rule_id=f"rule.{alarm_type}",
                message="gas",
                at=self.clock.now(),
                readings={"lel_pct": lel},
            )
        )
        await self.bus.join()

    def only(self) -> Alarm:
        alarms = self.alarms.open_alarms()
        assert len(alarms) == 1, alarms
        return alarms[0]

    def transitions(self) -> list[tuple[Transition, bool]]:
        return [(c.transition, c.notify) for c in self.changes]


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    r = Room(tmp_path / "gasgate.db")
    await r.start()
    yield r
    await r.stop()


def reason_of(result: Alarm | Refused) -> str:
    assert isinstance(result, Refused), result
    return result.reason


def ok(result: Alarm | Refused) -> Alarm:
    assert isinstance(result, Alarm), result
    return result


async def test_raise_ack_clear_closes_a_plain_alarm(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    alarm = room.only()
    assert (alarm.state, alarm.active, alarm.revision) == (AlarmState.UNACK_ACTIVE, True, 1)
    assert alarm.alarm_id.startswith("gw1-")
    assert len(alarm.alarm_id) == 4 + 26
    acked = ok(room.alarms.acknowledge(alarm.alarm_id, "officer7", "on my way"))
    await room.bus.join()
    assert (acked.state, acked.acked_by, acked.revision) == (AlarmState.ACK_ACTIVE, "officer7", 2)
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    assert room.alarms.open_alarms() == []
    closed = room.alarms.get(alarm.alarm_id)
    assert closed is not None
    assert (closed.state, closed.revision, closed.closed_by) == (AlarmState.NORMAL, 3, None)
    assert room.transitions() == [
        (Transition.RAISED, True),
        (Transition.ACKNOWLEDGED, False),
        (Transition.CLEARED, False),
    ]
    history = room.alarms.history(alarm.alarm_id)
    assert [(h.revision, h.transition, h.by, h.note) for h in history] == [
        (1, Transition.RAISED, None, "rule.gas_rising: gas"),
        (2, Transition.ACKNOWLEDGED, "officer7", "on my way"),
        (3, Transition.CLEARED, None, "rule.gas_rising: gas"),
    ]


async def test_clear_before_ack_waits_for_ack(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    alarm = room.only()
    assert (alarm.state, alarm.active) == (AlarmState.UNACK_CLEARED, False)
    closed = ok(room.alarms.acknowledge(alarm.alarm_id, "officer7"))
    assert closed.state is AlarmState.NORMAL
    assert room.alarms.open_alarms() == []


async def test_latched_leak_stays_until_a_person_resolves_it(room: Room) -> None:
    await room.condition(True)
    alarm = ok(room.alarms.acknowledge(room.only().alarm_id, "officer7"))
    await room.condition(False)
    latched = room.only()
    assert (latched.state, latched.active, latched.latched) == (
        AlarmState.ACK_ACTIVE,
        False,
        True,
    )
    closed = ok(room.alarms.resolve(alarm.alarm_id, "officer7", "site checked, valve reopened"))
    assert (closed.state, closed.closed_by) == (AlarmState.NORMAL, "officer7")
    assert room.alarms.open_alarms() == []


async def test_resolve_refused_while_active(room: Room) -> None:
    await room.condition(True)
    refused = room.alarms.resolve(room.only().alarm_id, "officer7")
    assert reason_of(refused) == "wrong_state"
    assert room.only().state is AlarmState.UNACK_ACTIVE


async def test_repeats_update_one_alarm_never_duplicate(room: Room) -> None:
    for _ in range(5):
        await room.condition(True, lel=55.0)  # the same verdict: no new revision
    await room.condition(True, lel=70.0)  # new readings: one revision, nobody re-notified
    alarm = room.only()
    assert (alarm.revision, alarm.readings) == (2, {"lel_pct": 70.0})
    assert room.transitions() == [(Transition.RAISED, True), (Transition.UPDATED, False)]


async def test_more_urgent_update_notifies(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    await room.condition(True, "gas_rising", severity=Severity.HIGH)
    assert room.transitions()[-1] == (Transition.UPDATED, True)


async def test_reactivation_before_ack_notifies_again(room: Room) -> None:
    await room.condition(True)
    await room.condition(False)
    await room.condition(True)
    alarm = room.only()
    assert (alarm.state, alarm.raise_count, alarm.revision) == (AlarmState.UNACK_ACTIVE, 2, 3)
    assert room.transitions()[-1] == (Transition.REACTIVATED, True)


async def test_gas_returning_after_ack_needs_a_new_ack(room: Room) -> None:
    await room.condition(True)
    ok(room.alarms.acknowledge(room.only().alarm_id, "officer7"))
    await room.condition(False)
    await room.condition(True)
    alarm = room.only()
    assert (alarm.state, alarm.acked_by) == (AlarmState.UNACK_ACTIVE, None)


async def test_chattering_is_held_not_renotified(room: Room) -> None:
    for _ in range(4):
        await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
        await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
        room.clock.advance(5)
    raises = [t for t in room.transitions() if t[0] is not Transition.CLEARED]
    assert raises == [
        (Transition.RAISED, True),
        (Transition.REACTIVATED, True),
        (Transition.REACTIVATED, True),
        (Transition.CHATTERING, False),
    ]
    assert room.only().chattering
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    assert room.transitions()[-1] == (Transition.REACTIVATED, False)
    room.clock.advance(120)  # a quiet minute: the next raise is news again
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    assert room.transitions()[-1] == (Transition.REACTIVATED, True)
    assert not room.only().chattering


async def test_three_cycles_a_minute_is_not_chattering(room: Room) -> None:
    for _ in range(3):
        await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
        await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    assert not room.only().chattering
    assert all(n for t, n in room.transitions() if t is not Transition.CLEARED)


async def test_shelving_expires_by_the_clock(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    alarm_id = room.only().alarm_id
    shelved = ok(room.alarms.shelve(alarm_id, "officer7", "sensor being cleaned", 600))
    assert shelved.shelved_until is not None
    assert shelved.suppressed
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    assert room.transitions()[-1] == (Transition.REACTIVATED, False)  # shelved: nobody called
    room.clock.advance(599)
    assert room.only().shelved_until is not None
    room.clock.advance(2)
    await room.bus.join()
    assert room.only().shelved_until is None
    last = room.changes[-1]
    assert (last.transition, last.notify, last.by) == (Transition.UNSHELVED, True, "system")


async def test_shelving_expiry_rearmed_after_restart(tmp_path: Path) -> None:
    first = Room(tmp_path / "gasgate.db")
    await first.start()
    await first.condition(True, "gas_rising", severity=Severity.MEDIUM)
    alarm_id = first.only().alarm_id
    ok(first.alarms.shelve(alarm_id, "officer7", "maintenance", 300))
    await first.stop()

    second = Room(tmp_path / "gasgate.db", clock=ManualClock(first.clock.now()))
    await second.start()
    second.clock.advance(301)
    await second.bus.join()
    assert second.only().shelved_until is None
    assert second.changes[-1].transition is Transition.UNSHELVED
    await second.stop()


async def test_unshelve_and_out_of_service(room: Room) -> None:
    await room.condition(True, "low_battery", severity=Severity.LOW)
    alarm_id = room.only().alarm_id
    ok(room.alarms.shelve(alarm_id, "officer7", "battery ordered", 3600))
    back = ok(room.alarms.unshelve(alarm_id, "officer7"))
    await room.bus.join()
    assert back.shelved_until is None
    assert room.changes[-1].transition is Transition.UNSHELVED
    assert room.changes[-1].notify
    oos = ok(room.alarms.set_out_of_service(alarm_id, "tech3", "detector replaced"))
    assert (oos.out_of_service_by, oos.out_of_service_reason) == ("tech3", "detector replaced")
    refused = room.alarms.set_out_of_service(alarm_id, "tech3", "again")
    assert reason_of(refused) == "wrong_state"
    ok(room.alarms.set_out_of_service(alarm_id, "tech3", "done", out_of_service=False))
    await room.bus.join()
    assert room.transitions()[-1] == (Transition.IN_SERVICE, True)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda a, i: a.acknowledge("gw1-NOPE", "officer7"), "unknown_alarm"),
        (lambda a, i: a.acknowledge(i, " "), "bad_request"),
        (lambda a, i: a.shelve(i, "officer7", "noisy", 60), "not_allowed"),
        (lambda a, i: a.set_out_of_service(i, "officer7", "noisy"), "not_allowed"),
        (lambda a, i: a.unshelve(i, "officer7"), "wrong_state"),
        (lambda a, i: a.set_out_of_service(i, "o", "x", out_of_service=False), "wrong_state"),
    ],
)
async def test_refusals_on_an_open_leak(room: Room, call: object, reason: str) -> None:
    await room.condition(True)
    alarm = room.only()
    result = call(room.alarms, alarm.alarm_id)  # type: ignore[operator]
    assert reason_of(result) == reason
    await room.bus.join()
    assert room.only() == alarm  # nothing changed
    assert len(room.changes) == 1


async def test_refusals_of_wrong_state(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    alarm_id = room.only().alarm_id
    ok(room.alarms.acknowledge(alarm_id, "officer7"))
    again = room.alarms.acknowledge(alarm_id, "officer8")
    assert reason_of(again) == "wrong_state"
    for seconds in (0, -5, 10 * 86400):
        bad = room.alarms.shelve(alarm_id, "officer7", "noisy", seconds)
        assert reason_of(bad) == "bad_request"
    no_reason = room.alarms.shelve(alarm_id, "officer7", "", 60)
    assert reason_of(no_reason) == "bad_request"
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    closed = room.alarms.acknowledge(alarm_id, "officer7")
    assert reason_of(closed) == "wrong_state"
    assert isinstance(closed, Refused)
    assert "closed" in closed.message


async def test_restart_restores_open_alarms_and_updates_them(tmp_path: Path) -> None:
    first = Room(tmp_path / "gasgate.db")
    await first.start()
    await first.condition(True)
    await first.condition(True, "gas_rising", source="det2", severity=Severity.MEDIUM)
    before = {a.alarm_id: a for a in first.alarms.open_alarms()}
    await first.stop()

    second = Room(tmp_path / "gasgate.db", clock=ManualClock(first.clock.now()))
    await second.start()
    assert {a.alarm_id: a for a in second.alarms.open_alarms()} == before
    second.alarms.announce_restored()
    await second.bus.join()
    assert {(c.alarm.alarm_id, c.transition, c.notify) for c in second.changes} == {
        (i, Transition.RESTORED, False) for i in before
    }
    await second.condition(True)  # the rules see the leak again after the restart
    assert len(second.alarms.open_alarms()) == 2
    assert not [c for c in second.changes if c.transition is Transition.RAISED]
    await second.stop()


async def test_alarm_committed_before_it_is_published(room: Room) -> None:
    seen_in_store: list[bool] = []

    def check(event: AlarmChanged) -> None:
        row = room.store.db.execute(
            "SELECT revision FROM alarms WHERE alarm_id = ?", (event.alarm.alarm_id,)
        ).fetchone()
        seen_in_store.append(row is not None and row[0] == event.alarm.revision)

    room.bus.subscribe(AlarmChanged, check)
    await room.condition(True)
    ok(room.alarms.acknowledge(room.only().alarm_id, "officer7"))
    await room.bus.join()
    assert seen_in_store == [True, True]


def test_snapshot_json_round_trip() -> None:
    clock = ManualClock()
    alarm = Alarm(
        alarm_id="gw1-X",
        revision=3,
        source="det1",
        alarm_type="leak_high",
        site_id="s1",
        device_id="det1",
        rule_id="r",
        severity=Severity.CRITICAL,
        state=AlarmState.ACK_ACTIVE,
        active=True,
        latched=True,
        message="泄漏",
        readings={"lel_pct": 55.5, "flags": ("alarm_high",)},
        raised_at=clock.now(),
        updated_at=clock.now(),
        acked_at=clock.now(),
        acked_by="o",
    )
    assert Alarm.from_json(alarm.to_json()) == alarm


def test_snapshot_survives_an_odd_reading() -> None:
    clock = ManualClock()
    alarm = Alarm(
        "gw1-X", 1, "det1", "leak_high", None, "det1", "r", Severity.CRITICAL,
        AlarmState.UNACK_ACTIVE, True, True, "m", {"at": clock.now()},  # type: ignore[dict-item]
        clock.now(), clock.now(),
    )  # fmt: skip
    assert Alarm.from_json(alarm.to_json()).readings == {"at": clock.now().isoformat(sep=" ")}


async def test_shelving_expiry_the_store_refused_is_tried_again(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    alarm_id = room.only().alarm_id
    ok(room.alarms.shelve(alarm_id, "officer7", "noisy", 60))
    room.store.db.execute("PRAGMA query_only = ON")  # the disk fails meanwhile
    room.clock.advance(61)
    assert room.only().shelved_until is not None
    room.store.db.execute("PRAGMA query_only = OFF")
    room.clock.advance(10)
    await room.bus.join()
    assert room.only().shelved_until is None
    assert room.changes[-1].transition is Transition.UNSHELVED


async def test_repeats_of_an_active_condition_are_not_chattering(room: Room) -> None:
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    for lel in (21.0, 22.0, 23.0, 24.0, 25.0):  # the rule sends new readings while active
        await room.condition(True, "gas_rising", severity=Severity.MEDIUM, lel=lel)
    await room.condition(False, "gas_rising", severity=Severity.MEDIUM)
    await room.condition(True, "gas_rising", severity=Severity.MEDIUM)
    assert not room.only().chattering
    assert room.transitions()[-1] == (Transition.REACTIVATED, True)
