"""The rule engine on the real bus, registry and ingest: each condition raised and cleared once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.contract import receiver_topic
from gateway.registry import Registry, tables
from gateway.registry.tables import ImportRecord
from gateway.store import Store
from rules.schema import load_rules
from tests.support.safety_core import (
    DETECTOR,
    HOME_DETECTOR,
    REGULATOR,
    UNKNOWN,
    VALVE,
    Core,
    detector_report,
    registry,
    regulator_report,
    valve_report,
)


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    core = Core()
    await core.start()
    yield core
    await core.stop()


def leaks(core: Core) -> list[tuple[str, bool]]:
    return [
        (c.alarm_type, c.active)
        for c in core.conditions
        if c.alarm_type in ("leak_low", "leak_high")
    ]


async def test_leak_rising_raises_low_then_high_each_once(core: Core) -> None:
    for seq, lel in enumerate((0, 5, 15, 22, 30, 45, 55, 60, 58)):
        await core.send(DETECTOR, detector_report(seq, lel))
        await core.advance(2)
    assert leaks(core) == [("leak_low", True), ("leak_high", True)]
    low, high = (c for c in core.conditions if c.alarm_type in ("leak_low", "leak_high"))
    assert (low.readings["lel_pct"], high.readings["lel_pct"]) == (22, 55)
    assert low.source == DETECTOR
    assert low.site_id == "S0001"
    assert low.device_id == DETECTOR
    assert high.severity == "critical"
    assert low.rule_id == "leak_threshold"


async def test_detector_alarm_flag_raises_below_the_threshold(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 3, ("alarm_low",)))
    assert leaks(core) == [("leak_low", True)]


async def test_a_burst_of_50_reports_gives_one_condition(core: Core) -> None:
    for seq in range(50):
        await core.send(DETECTOR, detector_report(seq, 30 + (seq % 3)))
    assert leaks(core) == [("leak_low", True)]
    assert len(core.reports) == 50


async def test_clear_only_after_below_10_held_30_s(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 35))
    await core.send(DETECTOR, detector_report(2, 12))  # below the alarm, above the clear level
    await core.advance(60)
    assert leaks(core) == [("leak_low", True)]
    await core.send(DETECTOR, detector_report(3, 8))
    await core.advance(20)
    await core.send(DETECTOR, detector_report(4, 9, ("alarm_low",)))  # the flag resets the hold
    await core.advance(29)
    await core.send(DETECTOR, detector_report(5, 7))
    await core.advance(29.5)
    assert leaks(core) == [("leak_low", True)]
    await core.advance(1)  # no further report needed: the hold completes on a timer
    assert leaks(core) == [("leak_low", True), ("leak_low", False)]


async def test_high_and_low_clear_together(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 70))
    await core.send(DETECTOR, detector_report(2, 0))
    await core.advance(31)
    assert leaks(core) == [
        ("leak_low", True),
        ("leak_high", True),
        ("leak_high", False),
        ("leak_low", False),
    ]


async def test_worsening_leak_is_reannounced_with_its_peak(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 52))
    await core.send(DETECTOR, detector_report(2, 58))  # less than the 10 %LEL step
    await core.send(DETECTOR, detector_report(3, 80))
    assert leaks(core) == [("leak_low", True), ("leak_high", True), ("leak_high", True)]
    assert core.conditions[-1].readings["peak_lel_pct"] == 80


async def test_device_flags_raise_and_clear_on_change(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 0, ("sensor_fault", "low_battery")))
    await core.send(DETECTOR, detector_report(2, 0, ("sensor_fault", "low_battery")))
    await core.send(DETECTOR, detector_report(3, 0, ("low_battery",)))
    await core.send(VALVE, valve_report(1, "fault", ("motor_fault",)))
    await core.send(REGULATOR, regulator_report(1, ("overflow_tripped", "self_closed")))
    await core.send(REGULATOR, regulator_report(2, ("over_pressure",)))
    got = [
        (c.source, c.alarm_type, c.active) for c in core.conditions if c.rule_id == "device_flags"
    ]
    assert got == [
        (DETECTOR, "low_battery", True),
        (DETECTOR, "sensor_fault", True),
        (DETECTOR, "sensor_fault", False),
        (VALVE, "valve_fault", True),
        (REGULATOR, "overflow", True),
        (REGULATOR, "over_pressure", True),
        (REGULATOR, "overflow", False),
    ]
    overflow = next(c for c in core.conditions if c.alarm_type == "overflow")
    assert overflow.readings["flags"] == ("overflow_tripped", "self_closed")
    assert overflow.severity == "high"


async def test_gas_rising_below_the_alarm_level(core: Core) -> None:
    for seq, lel in enumerate((0, 2, 8, 13)):  # +6 %LEL/min, one report a minute
        await core.send(DETECTOR, detector_report(seq, lel))
        await core.advance(60)
    assert core.of("gas_rising") == [("gas_rising", True)]
    assert leaks(core) == []
    for seq, lel in enumerate((13, 13, 13, 13), start=10):
        await core.send(DETECTOR, detector_report(seq, lel))
        await core.advance(60)
    assert core.of("gas_rising") == [("gas_rising", True), ("gas_rising", False)]


async def test_slow_drift_is_not_gas_rising(core: Core) -> None:
    for seq, lel in enumerate((0, 1, 2, 3, 4, 5, 6)):
        await core.send(DETECTOR, detector_report(seq, lel))
        await core.advance(60)
    assert core.of("gas_rising") == []


async def test_a_leak_supersedes_gas_rising(core: Core) -> None:
    for seq, lel in enumerate((0, 8, 16, 25)):
        await core.send(DETECTOR, detector_report(seq, lel))
        await core.advance(60)
    assert core.of("gas_rising") == [("gas_rising", True), ("gas_rising", False)]
    assert leaks(core) == [("leak_low", True)]


async def test_leak_not_isolated_when_the_linked_valve_stays_open(core: Core) -> None:
    await core.send(VALVE, valve_report(1, "open"))
    await core.send(DETECTOR, detector_report(1, 40))
    await core.advance(29)
    assert core.of("leak_not_isolated") == []
    await core.advance(2)
    assert core.of("leak_not_isolated") == [("leak_not_isolated", True)]
    raised = core.conditions[-1]
    assert raised.source == DETECTOR
    assert raised.readings["open_valves"] == (VALVE,)
    await core.send(VALVE, valve_report(2, "closed"))
    assert core.of("leak_not_isolated") == [
        ("leak_not_isolated", True),
        ("leak_not_isolated", False),
    ]


async def test_valve_closing_in_time_raises_nothing(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 60))
    await core.advance(5)
    await core.send(VALVE, valve_report(1, "closed"))
    await core.advance(120)
    assert core.of("leak_not_isolated") == []


async def test_offline_and_receiver_conditions(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 0))
    await core.advance(181)
    assert core.of("device_offline", DETECTOR) == [("device_offline", True)]
    await core.send(DETECTOR, detector_report(2, 0))
    assert core.of("device_offline", DETECTOR) == [
        ("device_offline", True),
        ("device_offline", False),
    ]
    status = {"online": False, "uptime_s": 5, "paired_count": 3, "ts": "2026-11-28T10:00:00Z"}
    await core.message(receiver_topic("b1"), json.dumps(status).encode())
    await core.message(receiver_topic("b1"), json.dumps(status).encode())
    assert core.of("receiver_offline") == [("receiver_offline", True)]
    receiver = next(c for c in core.conditions if c.alarm_type == "receiver_offline")
    assert (receiver.source, receiver.site_id, receiver.device_id) == ("bridge:b1", None, None)
    status["online"] = True
    await core.message(receiver_topic("b1"), json.dumps(status).encode())
    assert core.of("receiver_offline") == [("receiver_offline", True), ("receiver_offline", False)]


async def test_registry_dates_at_start_and_daily(core: Core) -> None:
    dated = [(c.alarm_type, c.source, c.active) for c in core.conditions]
    assert ("past_service_life", "site:S0002", True) in dated
    assert ("inspection_overdue", "site:S0002", True) in dated
    assert len(dated) == 2
    await core.advance(86400)
    assert len([c for c in core.conditions if c.rule_id == "registry_dates"]) == 2


async def test_repeated_unregistered_device_becomes_a_condition(core: Core) -> None:
    for seq in range(2):
        await core.send(UNKNOWN, detector_report(seq, 0))
    assert core.of("unregistered_device") == []
    await core.send(UNKNOWN, detector_report(3, 0))
    await core.send(UNKNOWN, detector_report(4, 0))
    assert core.of("unregistered_device") == [("unregistered_device", True)]
    await core.advance(3601)
    assert core.of("unregistered_device") == [
        ("unregistered_device", True),
        ("unregistered_device", False),
    ]


async def test_site_type_and_site_overrides_apply(tmp_path: Path) -> None:
    (tmp_path / "city.yaml").write_text(
        "overrides:\n"
        "  site_type:\n"
        "    household: {leak: {low_lel_pct: 15}}\n"
        "  site:\n"
        "    S0001: {leak: {low_lel_pct: 25}, severity: {leak_low: critical}}\n"
    )
    core = Core(rules=load_rules([tmp_path / "city.yaml"]))
    await core.start()
    try:
        await core.send(HOME_DETECTOR, detector_report(1, 16))
        await core.send(DETECTOR, detector_report(1, 22))
        assert [
            (c.source, c.alarm_type)
            for c in core.conditions
            if c.active and c.rule_id == "leak_threshold"
        ] == [(HOME_DETECTOR, "leak_low")]
        await core.send(DETECTOR, detector_report(2, 26))
        assert core.conditions[-1].severity == "critical"
    finally:
        await core.stop()


async def test_with_the_registry_stored_in_sqlite(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    try:
        record = ImportRecord(0, datetime.now(UTC), "test", "memory", {}, {}, 0)
        tables.replace(store, registry().data, record)
        core = Core(registry=Registry.load(store))
    finally:
        store.close()
    await core.start()
    try:
        await core.send(DETECTOR, detector_report(1, 45))
        await core.advance(31)
        assert core.of("leak_low", DETECTOR) == [("leak_low", True)]
        assert core.of("leak_not_isolated", DETECTOR) == [("leak_not_isolated", True)]
    finally:
        await core.stop()
