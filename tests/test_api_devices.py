"""The console's device states: "last seen" is written in one batch per flush, not one commit per
device; it survives a clean stop and start; a crash loses only what the next flush would have
written. The real store (SQLite WAL) and bus, a manual clock."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware_bridge.ksp import DeviceKind, Event
from gateway.api.devices import (
    FLUSH_ROWS,
    FLUSH_S,
    PERSIST_S,
    TREND_POINTS,
    DeviceStates,
    last_seen,
)
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.contract import KitReport
from gateway.events import ReportReceived
from gateway.store import Store

START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def _report(device_id: str, at: datetime, *, lel_pct: float = 0.0) -> ReportReceived:
    report = KitReport(
        kind=DeviceKind.DETECTOR, seq=1, event=Event.PERIODIC, detector={"lel_pct": lel_pct},
        battery_mv=2900, rssi_dbm=-71,
    )  # fmt: skip
    return ReportReceived(device_id, report, at, 0.0)


def _valve_report(device_id: str, at: datetime) -> ReportReceived:
    report = KitReport(
        kind=DeviceKind.VALVE, seq=1, event=Event.PERIODIC, valve={"state": "open"},
    )  # fmt: skip
    return ReportReceived(device_id, report, at, 0.0)


@dataclass
class Room:
    path: Path
    clock: ManualClock = field(default_factory=lambda: ManualClock(START))
    bus: Bus = field(default_factory=Bus)
    store: Store = field(init=False)
    devices: DeviceStates = field(init=False)
    commits: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.store = Store(self.path)
        self.store.open()
        self.store.db.set_trace_callback(self._trace)
        self.devices = DeviceStates(self.bus, self.store, self.clock, lambda _valve: None)
        await self.devices.start()

    def _trace(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.commits.append(statement)

    async def report(self, *device_ids: str, lel_pct: float = 0.0) -> None:
        for device_id in device_ids:
            self.bus.publish(_report(device_id, self.clock.now(), lel_pct=lel_pct))
        await self.bus.join()

    def stored(self) -> dict[str, datetime]:
        """What another process reading the store sees now."""
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute("SELECT device_id, last_report_at FROM device_seen").fetchall()
        finally:
            db.close()
        return {device_id: datetime.fromisoformat(at) for device_id, at in rows}


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    room = Room(tmp_path / "gasgate.db")
    await room.start()
    yield room
    await room.bus.stop()
    room.store.close()


DEVICES = [f"d{n:03d}" for n in range(200)]


async def test_first_reports_after_a_start_are_one_commit_per_flush(room: Room) -> None:
    room.commits.clear()
    await room.report(*DEVICES)
    assert room.commits == []  # nothing written on the report's path
    assert room.stored() == {}
    room.clock.advance(FLUSH_S)
    assert len(room.commits) == 1
    assert room.stored() == dict.fromkeys(DEVICES, START)


async def test_a_large_flush_is_split_into_bounded_transactions(room: Room) -> None:
    many = [f"m{n:05d}" for n in range(2 * FLUSH_ROWS + 1)]
    room.commits.clear()
    await room.report(*many)
    room.clock.advance(FLUSH_S)
    assert len(room.commits) == 3
    assert room.stored() == dict.fromkeys(many, START)


async def test_a_device_is_written_again_only_after_persist_s(room: Room) -> None:
    await room.report("d1")
    room.clock.advance(FLUSH_S)
    room.commits.clear()
    await room.report("d1")
    room.clock.advance(FLUSH_S)
    assert room.commits == []  # heard again within PERSIST_S: not due
    room.clock.advance(PERSIST_S)
    await room.report("d1")
    room.clock.advance(FLUSH_S)
    assert len(room.commits) == 1
    assert room.stored()["d1"] == START + timedelta(seconds=2 * FLUSH_S + PERSIST_S)


async def test_last_seen_survives_a_clean_stop_and_start(tmp_path: Path) -> None:
    first = Room(tmp_path / "gasgate.db")
    await first.start()
    await first.report("d1", "d2")
    first.clock.advance(1.0)  # stopped before any flush
    await first.devices.stop()
    first.store.close()

    again = Room(tmp_path / "gasgate.db")
    await again.start()
    seen = again.devices.get("d1")
    assert seen is not None
    assert (seen.last_report_at, seen.battery_mv, seen.rssi_dbm) == (START, 2900, -71)
    assert set(last_seen(again.store)) == {"d1", "d2"}
    again.store.close()


async def test_a_crash_loses_at_most_one_flush_interval(room: Room) -> None:
    await room.report("flushed")
    room.clock.advance(FLUSH_S)
    await room.report("pending")
    # The process dies here: no stop, no further flush. What was committed is there for the
    # next start (WAL: in the OS once committed); the report since the last flush is not.
    assert set(room.stored()) == {"flushed"}


async def test_the_trend_keeps_the_last_readings_in_order(room: Room) -> None:
    for n in range(TREND_POINTS + 5):
        await room.report("d1", lel_pct=n / 2)
        room.clock.advance(60)
    state = room.devices.get("d1")
    assert state is not None
    trend = list(state.lel_trend)
    assert [v for _, v in trend] == [n / 2 for n in range(5, TREND_POINTS + 5)]
    assert [t for t, _ in trend] == [START + timedelta(minutes=n) for n in range(5, 35)]
    room.bus.publish(_valve_report("v1", room.clock.now()))  # no gas reading: no trend
    await room.bus.join()
    valve = room.devices.get("v1")
    assert valve is not None
    assert list(valve.lel_trend) == []
