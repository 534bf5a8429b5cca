"""Supervision: offline after 3 silent intervals (not before), grace after start, receivers,
and a wall-clock jump that must not fire anything."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.contract import bridge_availability_topic, device_availability_topic, receiver_topic
from gateway.registry import Registry
from gateway.supervision import BridgeRoster, Supervision
from rules.engine import PLANNED_STOP_GRACE_S, RETAINED_SETTLE_S, RuleEngine
from tests.support.safety_core import (
    DETECTOR,
    HOME_DETECTOR,
    REGULATOR,
    VALVE,
    Core,
    detector_report,
    regulator_report,
    valve_report,
)


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    core = Core()
    await core.start()
    yield core
    await core.stop()


def changes(core: Core, device_id: str) -> list[tuple[bool, str]]:
    return [(a.online, a.reason) for a in core.availability if a.device_id == device_id]


def receiver(online: bool, *, stopping: bool = False) -> bytes:
    status = {"online": online, "uptime_s": 1, "paired_count": 3, "ts": "2026-11-28T10:00:00Z"}
    if stopping:
        status["stopping"] = True
    return json.dumps(status).encode()


def configured_core(*bridges: str) -> Core:
    """The safety core as ``gasgate run`` builds it with ``bridges: [...]`` set."""
    core = Core()
    roster = BridgeRoster(bridges)
    core.supervision = Supervision(core.bus, core.registry, core.clock, bridges=roster)
    core.engine = RuleEngine(core.bus, core.registry, core.clock, core.rules, bridges=roster)
    return core


async def test_offline_after_three_intervals_not_before(core: Core) -> None:
    await core.advance(100)
    await core.send(DETECTOR, detector_report(1, 0))
    await core.advance(179)  # mains detector: 60 s interval
    assert changes(core, DETECTOR) == []
    await core.advance(2)
    assert changes(core, DETECTOR) == [(False, "missed_reports")]
    await core.advance(600)
    assert changes(core, DETECTOR) == [(False, "missed_reports")]  # once, not per tick
    await core.send(DETECTOR, detector_report(2, 0))
    assert changes(core, DETECTOR) == [(False, "missed_reports"), (True, "report")]
    assert core.supervision.online(DETECTOR) is True


async def test_reports_keep_a_device_online(core: Core) -> None:
    for seq in range(30):
        await core.send(DETECTOR, detector_report(seq, 0))
        await core.advance(150)  # late, but under three intervals
    assert changes(core, DETECTOR) == []


async def test_battery_devices_use_their_own_interval(core: Core) -> None:
    await core.send(REGULATOR, regulator_report(1))
    await core.advance(1799)  # battery regulator: 600 s
    assert changes(core, REGULATOR) == []
    await core.advance(2)
    assert changes(core, REGULATOR) == [(False, "missed_reports")]


async def test_grace_after_start_then_offline(core: Core) -> None:
    # No device has reported since the (re)start: none is offline for three full intervals.
    await core.advance(179)
    assert core.availability == []
    await core.advance(2)
    assert {a.device_id for a in core.availability} == {DETECTOR, VALVE, HOME_DETECTOR}
    await core.advance(1800)
    assert REGULATOR in {a.device_id for a in core.availability}


async def test_an_import_during_the_grace_does_not_take_a_reporting_device_offline(
    core: Core,
) -> None:
    # The new import makes the detector report every 30 s: its grace was set for 60 s.
    data = core.registry.data
    faster = tuple(
        replace(c, report_interval_s=30) if c.device_id == DETECTOR else c for c in data.components
    )
    core.registry.swap(Registry(replace(data, components=faster)))
    await core.advance(100)
    await core.send(DETECTOR, detector_report(1, 0))
    await core.advance(85)  # past the end of its first grace (180 s): heard 85 s ago
    assert changes(core, DETECTOR) == []
    await core.advance(6)  # three of its new intervals since it was heard
    assert changes(core, DETECTOR) == [(False, "missed_reports")]


async def test_wall_clock_jump_fires_nothing(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 0))
    core.clock.jump_wall(+7 * 86400)
    await core.advance(60)
    core.clock.jump_wall(-30 * 86400)
    await core.advance(60)
    assert core.availability == []


async def test_receiver_offline_takes_its_radio_devices_offline(core: Core) -> None:
    await core.message(receiver_topic("b1"), receiver(True))
    await core.message(receiver_topic("b1"), receiver(False))
    offline = {a.device_id: a.reason for a in core.availability if not a.online}
    assert offline == dict.fromkeys((DETECTOR, VALVE, REGULATOR), "receiver_offline")
    assert core.supervision.online(HOME_DETECTOR) is True  # MQTT-native: not behind a receiver
    await core.message(receiver_topic("b1"), receiver(True))
    assert core.supervision.online(DETECTOR) is False  # until it reports again
    await core.send(DETECTOR, detector_report(1, 0))
    assert changes(core, DETECTOR)[-1] == (True, "report")


async def test_bridge_last_will_means_receiver_offline(core: Core) -> None:
    await core.message(bridge_availability_topic("b1"), b"offline")
    assert core.supervision.online(VALVE) is False


async def test_a_device_reporting_during_an_outage_is_not_behind_that_receiver(core: Core) -> None:
    await core.message(receiver_topic("b2"), receiver(False))
    await core.send(VALVE, valve_report(1, "open"))  # still heard: behind another receiver
    await core.message(receiver_topic("b2"), receiver(True))
    await core.message(receiver_topic("b2"), receiver(False))
    assert changes(core, VALVE) == [(False, "receiver_offline"), (True, "report")]
    assert changes(core, DETECTOR) == [(False, "receiver_offline")]


async def test_availability_topic_offline_and_back(core: Core) -> None:
    await core.message(device_availability_topic(HOME_DETECTOR), b"offline")
    assert core.supervision.online(HOME_DETECTOR) is False
    await core.advance(600)
    assert changes(core, HOME_DETECTOR) == [(False, "availability_topic")]  # no second offline
    await core.message(device_availability_topic(HOME_DETECTOR), b"online")
    await core.advance(179)
    assert core.supervision.online(HOME_DETECTOR) is True
    await core.advance(2)  # connected but silent: offline again after three intervals
    assert changes(core, HOME_DETECTOR)[-1] == (False, "missed_reports")


async def test_stop_stops_the_tick(core: Core) -> None:
    await core.supervision.stop()
    await core.advance(10_000)
    assert core.availability == []


async def test_a_silent_receiver_goes_offline(core: Core) -> None:
    for seq in range(4):  # the bridge republishes its status on every heartbeat
        await core.message(receiver_topic("b1"), receiver(True))
        await core.send(DETECTOR, detector_report(seq, 0))
        await core.advance(30)
    assert core.supervision.online(DETECTOR) is True
    await core.advance(59)  # 89 s without a status: not yet
    assert core.supervision.online(DETECTOR) is True
    await core.advance(2)
    assert [(r.bridge_id, r.status.online) for r in core.receivers][-1] == ("b1", False)
    assert changes(core, DETECTOR) == [(False, "receiver_offline")]
    assert core.of("receiver_offline", "bridge:b1") == [("receiver_offline", True)]


async def test_a_receiver_outage_is_one_alarm_not_one_per_device(core: Core) -> None:
    # ISA-18.2 designed suppression: the receiver's alarm stands for the devices behind it.
    await core.advance(RETAINED_SETTLE_S)  # past the start's retained burst: it raises at once
    await core.message(receiver_topic("b1"), receiver(True))
    await core.message(receiver_topic("b1"), receiver(False))
    assert core.of("receiver_offline") == [("receiver_offline", True)]
    assert core.of("device_offline") == []
    assert core.supervision.online(DETECTOR) is False  # offline all the same, for coverage
    # The receiver is back: the detector and valve report, the regulator stays silent.
    await core.message(receiver_topic("b1"), receiver(True))
    await core.send(DETECTOR, detector_report(1, 0))
    await core.send(VALVE, valve_report(1, "open"))
    assert core.of("device_offline") == []
    for seq in range(2, 40):  # 38 minutes: past three of the regulator's 600 s intervals
        await core.send(DETECTOR, detector_report(seq, 0))
        await core.send(VALVE, valve_report(seq, "open"))
        await core.advance(60)
    # The silent one raises its own alarm once its receiver is back and it still says nothing.
    assert core.of("device_offline", REGULATOR) == [("device_offline", True)]
    assert core.of("device_offline", DETECTOR) == []
    assert core.of("device_offline", VALVE) == []


# --- whose receivers; a bridge stopped on purpose (issue 15, item 9) -----------------------------


async def test_a_bridge_not_configured_is_ignored_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A shared site broker keeps a demo's retained "offline" receivers: not this gateway's.
    core = configured_core("rx1")
    await core.start()
    try:
        await core.message(bridge_availability_topic("demo-receiver-1"), b"offline")
        await core.message(receiver_topic("demo-receiver-1"), receiver(False))
        await core.advance(RETAINED_SETTLE_S + 600)
        assert core.of("receiver_offline") == []
        # Our devices are not taken offline with it (only for their own silence).
        assert "receiver_offline" not in {a.reason for a in core.availability}
        ignored = [r for r in caplog.records if "demo-receiver-1 is not one of" in r.getMessage()]
        assert len(ignored) == 1
        assert core.supervision._bridges.counts["ignored.demo-receiver-1"] == 2
        await core.message(receiver_topic("rx1"), receiver(False))  # ours still raises
        assert core.of("receiver_offline", "bridge:rx1") == [("receiver_offline", True)]
    finally:
        await core.stop()


async def test_a_planned_bridge_stop_pages_only_after_its_grace(core: Core) -> None:
    await core.advance(RETAINED_SETTLE_S)
    await core.message(receiver_topic("b1"), receiver(True))
    # SIGTERM: the bridge's stopping status, then its clean "offline" availability.
    await core.message(receiver_topic("b1"), receiver(False, stopping=True))
    await core.message(bridge_availability_topic("b1"), b"offline")
    await core.advance(PLANNED_STOP_GRACE_S - 1)
    assert core.of("receiver_offline") == []
    await core.advance(2)  # not back: now the duty room must know
    assert core.of("receiver_offline", "bridge:b1") == [("receiver_offline", True)]
    await core.message(receiver_topic("b1"), receiver(True))
    assert core.of("receiver_offline") == [("receiver_offline", True), ("receiver_offline", False)]


async def test_a_bridge_restarted_on_purpose_pages_no_one(core: Core) -> None:
    await core.advance(RETAINED_SETTLE_S)
    await core.message(receiver_topic("b1"), receiver(True))
    await core.message(receiver_topic("b1"), receiver(False, stopping=True))
    await core.message(bridge_availability_topic("b1"), b"offline")
    await core.advance(20)
    for _ in range(int(PLANNED_STOP_GRACE_S * 2 / 30)):  # back after its restart: heartbeats
        await core.message(receiver_topic("b1"), receiver(True))
        await core.advance(30)
    assert core.of("receiver_offline") == []
    # A crash (the last will alone) still raises at once.
    await core.message(bridge_availability_topic("b1"), b"offline")
    assert core.of("receiver_offline") == [("receiver_offline", True)]


async def test_a_planned_stop_retained_in_any_order_at_start_waits_its_grace(core: Core) -> None:
    # A gateway starting while a bridge is stopped: the broker's retained availability may come
    # before the retained stopping status.
    await core.message(bridge_availability_topic("b1"), b"offline")
    await core.message(receiver_topic("b1"), receiver(False, stopping=True))
    await core.advance(RETAINED_SETTLE_S + 1)
    assert core.of("receiver_offline") == []
    # A plain offline retained alone is raised when the start's burst is over.
    await core.message(bridge_availability_topic("b2"), b"offline")
    assert core.of("receiver_offline", "bridge:b2") == [("receiver_offline", True)]
    await core.advance(PLANNED_STOP_GRACE_S)
    assert core.of("receiver_offline", "bridge:b1") == [("receiver_offline", True)]
