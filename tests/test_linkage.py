"""Valve linkage with a ManualClock: the real alarms room, bus, store and registry; commands are
captured where the site MQTT queue would take them (the broker path is in the e2e tests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from firmware_bridge.ksp import CommandCode, DeviceKind, Event, ValveState
from gateway.alarms import Alarms, Refused
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.contract import CmdMessage, KitReport
from gateway.events import AlarmChanged, ConditionChanged, ReportReceived, Severity
from gateway.linkage import (
    ACK_LOG_EVERY_S,
    FIRST_STATES_S,
    RETRY_S,
    TRIES,
    Linkage,
    command_message,
)
from gateway.model import Transition
from gateway.registry import Registry, import_dir
from gateway.store import Store
from tests.support.kit_site import DETECTOR, REGULATOR, REGULATOR_VALVE, VALVES, write_registry


@dataclass
class Outbox:
    """Stands in for the site MQTT queue: what would be published, in order. ``broker_up``
    False: nothing is acknowledged by the broker (``on_sent`` never runs)."""

    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    broker_up: bool = True

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.sent.append((topic, json.loads(payload)))
        if self.broker_up and on_sent is not None:
            on_sent()

    def valves(self) -> list[str]:
        return [topic.split("/")[2] for topic, _ in self.sent]


@dataclass
class Gateway:
    dir: Path
    registry: Registry
    clock: ManualClock = field(default_factory=ManualClock)
    outbox: Outbox = field(default_factory=Outbox)
    changes: list[AlarmChanged] = field(default_factory=list)

    async def start(self) -> None:
        self.bus = Bus()
        self.store = Store(self.dir / "gasgate.db")
        self.store.open()
        self.alarms = Alarms(self.bus, self.store, self.clock, "gw1")
        self.linkage = Linkage(self.bus, self.registry, self.outbox, self.store, self.clock)
        await self.alarms.start()
        await self.linkage.start()
        self.bus.subscribe(AlarmChanged, self.changes.append)
        self.alarms.announce_restored()
        await self.bus.join()

    async def stop(self) -> None:
        await self.bus.join()
        await self.linkage.stop()
        await self.alarms.stop()
        self.store.close()

    async def condition(self, alarm_type: str, source: str, active: bool = True) -> None:
        self.bus.publish(
            ConditionChanged(
                alarm_type,
                source,
                "rest-e2e",
                source,
                active,
                Severity.CRITICAL,
                "r",
                "leak",
                self.clock.now(),
            )
        )
        await self.bus.join()

    async def valve_reports(self, valve: str, state: ValveState, retained: bool = False) -> None:
        report = KitReport(
            kind=DeviceKind.VALVE, seq=1, event=Event.STATE_CHANGE, valve={"state": state}
        )
        now, mono = self.clock.now(), self.clock.monotonic()
        self.bus.publish(ReportReceived(valve, report, now, mono, retained))
        await self.bus.join()

    def crash(self) -> None:
        """A kill -9: no stop(), nothing flushed; what was committed stays."""
        self.store.close()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.bus.join()

    def failed_alarms(self) -> list[str]:
        return [
            a.source for a in self.alarms.open_alarms() if a.alarm_type == "valve_failed_to_close"
        ]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(import_dir(write_registry(tmp_path / "registry")).data)


@pytest.fixture
async def gw(tmp_path: Path, registry: Registry) -> AsyncIterator[Gateway]:
    g = Gateway(tmp_path, registry)
    await g.start()
    yield g
    await g.stop()


async def test_leak_commands_every_linked_valve_once(gw: Gateway) -> None:
    await gw.condition("leak_high", DETECTOR)
    await gw.condition("leak_low", DETECTOR)  # the second level while the first is in hand
    assert sorted(gw.outbox.valves()) == sorted(VALVES)
    ids = {payload["id"] for _, payload in gw.outbox.sent}
    assert len(ids) == 2
    assert {payload["cmd"] for _, payload in gw.outbox.sent} == {"close_valve"}
    for valve in VALVES:
        await gw.valve_reports(valve, ValveState.CLOSED)
    await gw.advance(RETRY_S * TRIES * 2)
    assert len(gw.outbox.sent) == 2  # confirmed: no retries
    assert gw.failed_alarms() == []


async def test_unconfirmed_valve_is_retried_then_fails_critical(gw: Gateway) -> None:
    await gw.condition("leak_high", DETECTOR)
    await gw.valve_reports(VALVES[0], ValveState.CLOSED)
    await gw.advance(RETRY_S - 0.5)
    assert len(gw.outbox.sent) == 2
    await gw.advance(1)
    assert gw.outbox.valves()[2:] == [VALVES[1]]  # try 2, for the silent valve only
    await gw.advance(RETRY_S)
    assert gw.outbox.valves()[3:] == [VALVES[1]]  # try 3
    assert gw.failed_alarms() == []
    await gw.advance(RETRY_S)
    assert len(gw.outbox.sent) == 4  # three tries, then no more commands
    assert gw.failed_alarms() == [VALVES[1]]
    failed = next(a for a in gw.alarms.open_alarms() if a.source == VALVES[1])
    assert failed.severity is Severity.CRITICAL
    assert failed.readings["tries"] == TRIES
    # The valve closes late: the condition clears, the latched alarm waits for a person.
    await gw.valve_reports(VALVES[1], ValveState.CLOSED)
    failed = next(a for a in gw.alarms.open_alarms() if a.source == VALVES[1])
    assert not failed.active


async def test_overflow_closes_the_regulators_valve(gw: Gateway) -> None:
    await gw.condition("overflow", REGULATOR)
    assert gw.outbox.valves() == [REGULATOR_VALVE]


async def test_types_that_do_not_close_valves(gw: Gateway) -> None:
    await gw.condition("gas_rising", DETECTOR)
    await gw.condition("device_offline", DETECTOR)
    assert gw.outbox.sent == []


async def test_already_closed_valve_is_commanded_once_and_not_retried(gw: Gateway) -> None:
    for valve in VALVES:
        await gw.valve_reports(valve, ValveState.CLOSED)
    await gw.condition("leak_high", DETECTOR)
    await gw.advance(RETRY_S * TRIES * 2)
    assert sorted(gw.outbox.valves()) == sorted(VALVES)
    assert gw.failed_alarms() == []


def stored_valve_states(store: Store) -> dict[str, str]:
    rows = store.db.execute("SELECT valve_id, state FROM valve_state")
    return {row["valve_id"]: row["state"] for row in rows}


async def test_first_valve_states_are_stored_together_and_changes_at_once(gw: Gateway) -> None:
    for valve in VALVES:
        await gw.valve_reports(valve, ValveState.OPEN)
    assert stored_valve_states(gw.store) == {}  # first states wait for the batch
    await gw.advance(FIRST_STATES_S)
    assert stored_valve_states(gw.store) == dict.fromkeys(VALVES, "open")
    await gw.valve_reports(VALVES[0], ValveState.CLOSED)
    assert stored_valve_states(gw.store)[VALVES[0]] == "closed"  # a change: no waiting


async def test_a_first_state_still_waiting_never_overwrites_a_newer_change(
    tmp_path: Path, registry: Registry
) -> None:
    """Open first (waiting for the batch), then closed (stored at once): the batch that comes
    after must not put the older "open" back, here or after a restart."""
    first = Gateway(tmp_path, registry)
    await first.start()
    await first.valve_reports(VALVES[0], ValveState.OPEN)
    await first.advance(FIRST_STATES_S / 2)
    await first.valve_reports(VALVES[0], ValveState.CLOSED)
    await first.advance(FIRST_STATES_S)  # the batch's time has come
    assert stored_valve_states(first.store) == {VALVES[0]: "closed"}
    await first.stop()
    second = Gateway(tmp_path, registry)
    await second.start()
    assert second.linkage.valve_state(VALVES[0]) is ValveState.CLOSED
    await second.stop()


async def test_first_states_lost_in_a_crash_read_as_unknown_not_closed(
    tmp_path: Path, registry: Registry
) -> None:
    first = Gateway(tmp_path, registry)
    await first.start()
    for valve in VALVES:
        await first.valve_reports(valve, ValveState.CLOSED)
    await first.bus.join()
    first.store.close()  # killed before the batch: no stop(), nothing flushed

    second = Gateway(tmp_path, registry)
    await second.start()
    assert all(second.linkage.valve_state(valve) is None for valve in VALVES)
    await second.condition("leak_high", DETECTOR)
    await second.advance(RETRY_S + 1)  # not taken for closed: retried, not settled
    assert len(second.outbox.sent) == 2 * len(VALVES)
    await second.stop()


async def test_first_states_are_stored_on_a_clean_stop(tmp_path: Path, registry: Registry) -> None:
    first = Gateway(tmp_path, registry)
    await first.start()
    await first.valve_reports(VALVES[0], ValveState.CLOSED)
    await first.stop()
    second = Gateway(tmp_path, registry)
    await second.start()
    assert second.linkage.valve_state(VALVES[0]) is ValveState.CLOSED
    await second.stop()


async def test_retries_resume_at_once_after_restart_without_extra_commands(
    tmp_path: Path, registry: Registry
) -> None:
    first = Gateway(tmp_path, registry)
    await first.start()
    await first.condition("leak_high", DETECTOR)
    await first.advance(RETRY_S + 1)  # try 2 sent for both, and taken by the broker
    assert len(first.outbox.sent) == 4
    await first.stop()

    # Restarted 5 s later: the valves are not confirmed closed, so try 3 leaves at once (not
    # when it was due); the open leak announced again adds nothing; then they fail.
    clock = ManualClock(first.clock.now())
    clock.advance(5)
    second = Gateway(tmp_path, registry, clock=clock)
    await second.start()
    assert sorted(second.outbox.valves()) == sorted(VALVES)
    await second.advance(RETRY_S - 0.5)
    assert len(second.outbox.sent) == 2
    assert second.failed_alarms() == []
    await second.advance(1)
    assert len(second.outbox.sent) == 2  # no fourth try
    assert sorted(second.failed_alarms()) == sorted(VALVES)
    await second.stop()


async def test_a_try_stored_but_never_sent_goes_again_at_once_and_counts_once(
    tmp_path: Path, registry: Registry
) -> None:
    """A kill between the stored command and its send costs neither a try nor a delay."""
    first = Gateway(tmp_path, registry, outbox=Outbox(broker_up=False))
    await first.start()
    await first.condition("leak_high", DETECTOR)  # try 1 stored, never taken by a broker
    first.crash()

    clock = ManualClock(first.clock.now())
    clock.advance(2)
    second = Gateway(tmp_path, registry, clock=clock)
    await second.start()
    assert sorted(second.outbox.valves()) == sorted(VALVES)  # at once, not after retry_s
    tries = second.store.db.execute("SELECT DISTINCT tries FROM valve_close").fetchall()
    assert [row["tries"] for row in tries] == [1]  # the same try again
    await second.advance(RETRY_S * TRIES * 2)
    assert len(second.outbox.sent) == len(VALVES) * TRIES  # all three real tries
    assert sorted(second.failed_alarms()) == sorted(VALVES)
    await second.stop()


async def test_a_failed_valve_whose_alarm_was_never_committed_is_raised_at_restart(
    tmp_path: Path, registry: Registry
) -> None:
    first = Gateway(tmp_path, registry)
    await first.start()
    await first.condition("leak_high", DETECTOR)
    await first.advance(RETRY_S * TRIES + 1)
    assert sorted(first.failed_alarms()) == sorted(VALVES)
    await first.bus.join()
    # The kill came after the linkage stored "failed" and before the alarm's commit.
    with first.store.transaction() as db:
        db.execute(
            "DELETE FROM alarm_history WHERE alarm_id IN"
            " (SELECT alarm_id FROM alarms WHERE alarm_type = 'valve_failed_to_close')"
        )
        db.execute("DELETE FROM alarms WHERE alarm_type = 'valve_failed_to_close'")
    first.crash()

    second = Gateway(tmp_path, registry, clock=ManualClock(first.clock.now()))
    await second.start()
    assert sorted(second.failed_alarms()) == sorted(VALVES)
    for valve in VALVES:  # and the valve, not confirmed closed, is commanded again
        await second.valve_reports(valve, ValveState.CLOSED)
    failed = [a for a in second.alarms.open_alarms() if a.alarm_type == "valve_failed_to_close"]
    assert not any(a.active for a in failed)  # a valve that closes clears the condition
    await second.stop()


async def test_a_retained_closed_report_never_confirms_a_close(gw: Gateway) -> None:
    """The broker's stored "closed" from before the leak is old news: every try goes out."""
    for valve in VALVES:
        await gw.valve_reports(valve, ValveState.CLOSED, retained=True)
    assert gw.linkage.valve_state(VALVES[0]) is ValveState.CLOSED  # shown, not trusted
    await gw.condition("leak_high", DETECTOR)
    for valve in VALVES:  # sent again on every reconnect's subscription
        await gw.valve_reports(valve, ValveState.CLOSED, retained=True)
    await gw.advance(RETRY_S * TRIES + 1)
    assert len(gw.outbox.sent) == len(VALVES) * TRIES
    assert sorted(gw.failed_alarms()) == sorted(VALVES)


async def test_a_closed_report_older_than_the_retry_time_does_not_confirm(gw: Gateway) -> None:
    await gw.valve_reports(VALVES[0], ValveState.CLOSED)
    await gw.advance(RETRY_S + 1)  # the valve may have been opened by hand since
    await gw.condition("leak_high", DETECTOR)
    await gw.advance(RETRY_S + 0.5)
    assert gw.outbox.valves().count(VALVES[0]) == 2  # retried until it says closed again


async def test_alarm_committed_but_never_handled_is_closed_on_restart(
    tmp_path: Path, registry: Registry
) -> None:
    # A crash between the alarm commit and the linkage: simulated by an alarms room alone.
    bus, store, clock = Bus(), Store(tmp_path / "gasgate.db"), ManualClock()
    store.open()
    alarms = Alarms(bus, store, clock, "gw1")
    await alarms.start()
    bus.publish(
        ConditionChanged(
            "leak_high", DETECTOR, "s", DETECTOR, True, Severity.CRITICAL, "r", "m", clock.now()
        )
    )
    await bus.join()
    store.close()

    gw = Gateway(tmp_path, registry, clock=clock)
    await gw.start()
    assert sorted(gw.outbox.valves()) == sorted(VALVES)
    await gw.stop()


def test_command_builder_has_no_open() -> None:
    assert {c.value for c in CommandCode} == {"close_valve", "self_test", "silence", "query"}
    topic, payload = command_message("valve-a1", "c1", CommandCode.CLOSE_VALVE)
    assert topic == "kit/v1/valve-a1/cmd"
    assert json.loads(payload) == {"id": "c1", "cmd": "close_valve"}


async def test_restart_does_not_recommand_valves_closed_for_either_leak_level(
    tmp_path: Path, registry: Registry
) -> None:
    first = Gateway(tmp_path, registry)
    await first.start()
    await first.condition("leak_low", DETECTOR)
    await first.condition("leak_high", DETECTOR)  # its valves were already being closed
    for valve in VALVES:
        await first.valve_reports(valve, ValveState.CLOSED)
    await first.stop()

    second = Gateway(tmp_path, registry, clock=ManualClock(first.clock.now()))
    await second.start()  # both leak alarms are announced again
    await second.advance(RETRY_S * TRIES * 2)
    assert second.outbox.sent == []
    await second.stop()


@pytest.mark.parametrize("cmd", ["open", "open_valve", "OPEN_VALVE", "reopen"])
def test_the_command_contract_refuses_any_open(cmd: str) -> None:
    with pytest.raises(ValidationError):
        CmdMessage.model_validate({"id": "c1", "cmd": cmd})


async def test_command_acks_are_stored_for_the_audit_trail(gw: Gateway) -> None:
    await gw.condition("leak_high", DETECTOR)
    (topic_1, first), (topic_2, second) = gw.outbox.sent
    gw.linkage.handle_ack(
        f"{topic_1}/ack", json.dumps({"id": first["id"], "result": "ok"}).encode()
    )
    unreachable = {"id": second["id"], "result": "unreachable"}
    gw.linkage.handle_ack(f"{topic_2}/ack", json.dumps(unreachable).encode())
    gw.linkage.handle_ack(f"{topic_2}/ack", b'{"id": "not-ours", "result": "ok"}')
    gw.linkage.handle_ack(f"{topic_2}/ack", b"{broken")
    rows = gw.store.db.execute("SELECT cmd_id, ack FROM valve_command ORDER BY valve_id").fetchall()
    assert sorted(tuple(r) for r in rows) == sorted(
        [(first["id"], "ok"), (second["id"], "unreachable")]
    )
    assert gw.linkage.counts["ack_unknown_command"] == 1
    assert gw.linkage.counts["ack_rejected.bad_json"] == 1
    await gw.advance(RETRY_S)  # an ack is not a confirmation: both are commanded again
    assert len(gw.outbox.sent) == 4


async def test_forged_acks_are_counted_and_their_warnings_rate_limited(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(1000):  # a device flooding its cmd/ack topic with garbage
        gw.linkage.handle_ack(f"kit/v1/{VALVES[0]}/cmd/ack", b"{forged")
    assert gw.linkage.counts["ack_rejected.bad_json"] == 1000
    assert len([r for r in caplog.records if "command ack refused" in r.message]) == 1
    await gw.advance(ACK_LOG_EVERY_S)
    gw.linkage.handle_ack(f"kit/v1/{VALVES[0]}/cmd/ack", b"{forged")
    refused = [r.message for r in caplog.records if "command ack refused" in r.message]
    assert len(refused) == 2
    assert "+999 not logged before" in refused[1]


async def test_a_failing_disk_does_not_stop_a_leak_closing_valves(gw: Gateway) -> None:
    gw.store.db.execute("PRAGMA query_only = ON")  # every write now fails, as on a full disk
    await gw.condition("leak_high", DETECTOR)
    assert sorted(gw.outbox.valves()) == sorted(VALVES)
    assert gw.alarms.store_failures == 1
    assert [a.alarm_type for a in gw.alarms.open_alarms()] == ["leak_high"]
    assert [c.transition for c in gw.changes] == [Transition.RAISED]
    await gw.valve_reports(VALVES[0], ValveState.CLOSED)
    await gw.advance(RETRY_S)
    assert gw.outbox.valves()[2:] == [VALVES[1]]  # the follow-up goes on from memory
    assert gw.linkage.counts["store_failed"] >= 3
    # A person's acknowledgement is not taken without being recorded: it is refused.
    leak = gw.alarms.open_alarms()[0]
    refused = gw.alarms.acknowledge(leak.alarm_id, "officer7")
    assert isinstance(refused, Refused)
    assert refused.reason == "store_failed"
    assert gw.alarms.open_alarms() == [leak]
    gw.store.db.execute("PRAGMA query_only = OFF")
