"""What the console shows about each device: its last report, battery, signal, and a short gas
level trend, fed from ``ReportReceived`` on the bus.

The table lives in memory. Only the time a device was last heard (with its battery and signal)
is written to the store, at most once per :data:`PERSIST_S` per device and on stop, so the
coverage audit can say "online in the last 24 h" after a restart without a row per report.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from gateway.bus import Bus
from gateway.clock import Clock
from gateway.events import ReportReceived
from gateway.store import Store, StoreError

__all__ = ["PERSIST_S", "TREND_POINTS", "DeviceState", "DeviceStates", "last_seen"]

log = logging.getLogger(__name__)

PERSIST_S: Final = 600.0
TREND_POINTS: Final = 30
ROOM: Final = "device_seen"
_MIGRATIONS: Final = (
    """
    CREATE TABLE device_seen (
        device_id TEXT PRIMARY KEY,
        last_report_at TEXT NOT NULL,
        battery_mv INTEGER,
        rssi_dbm INTEGER
    );
    """,
)


@dataclass(slots=True)
class DeviceState:
    device_id: str
    last_report_at: datetime
    battery_mv: int | None = None
    rssi_dbm: int | None = None
    event: str | None = None
    lel_pct: float | None = None
    valve_state: str | None = None
    pressure_pa: int | None = None
    lel_trend: deque[tuple[datetime, float]] = field(
        default_factory=lambda: deque(maxlen=TREND_POINTS)
    )
    persisted_mono: float | None = None


class DeviceStates:
    def __init__(
        self, bus: Bus, store: Store, clock: Clock, on_valve: Callable[[str], None]
    ) -> None:
        self._bus = bus
        self._store = store
        self._clock = clock
        self._on_valve = on_valve  # told the valve's id when its reported state changes
        self._states: dict[str, DeviceState] = {}

    async def start(self) -> None:
        self._store.migrate(ROOM, _MIGRATIONS)
        for device_id, (at, battery, rssi) in last_seen(self._store).items():
            self._states[device_id] = DeviceState(device_id, at, battery, rssi)
        self._bus.subscribe(ReportReceived, self.on_report, name="api.devices")

    async def stop(self) -> None:
        for state in self._states.values():
            if state.event is not None:  # heard since start
                self._persist(state)

    def get(self, device_id: str) -> DeviceState | None:
        return self._states.get(device_id)

    def on_report(self, event: ReportReceived) -> None:
        r = event.report
        state = self._states.get(event.device_id)
        if state is None:
            state = self._states[event.device_id] = DeviceState(event.device_id, event.received_at)
        # The gateway's receive time, never the device's clock.
        state.last_report_at = event.received_at
        state.battery_mv = r.battery_mv if r.battery_mv is not None else state.battery_mv
        state.rssi_dbm = r.rssi_dbm if r.rssi_dbm is not None else state.rssi_dbm
        state.event = r.event.value
        if r.detector is not None:
            state.lel_pct = r.detector.lel_pct
            state.lel_trend.append((event.received_at, r.detector.lel_pct))
        if r.valve is not None and r.valve.state.value != state.valve_state:
            state.valve_state = r.valve.state.value
            self._on_valve(event.device_id)
        if r.regulator is not None:
            state.pressure_pa = r.regulator.pressure_pa
        now = self._clock.monotonic()
        if state.persisted_mono is None or now - state.persisted_mono >= PERSIST_S:
            state.persisted_mono = now
            self._persist(state)

    def _persist(self, state: DeviceState) -> None:
        try:
            with self._store.transaction() as db:
                db.execute(
                    "INSERT INTO device_seen (device_id, last_report_at, battery_mv, rssi_dbm)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
                    " last_report_at = excluded.last_report_at,"
                    " battery_mv = excluded.battery_mv, rssi_dbm = excluded.rssi_dbm",
                    (
                        state.device_id,
                        state.last_report_at.isoformat(),
                        state.battery_mv,
                        state.rssi_dbm,
                    ),
                )
        except (StoreError, sqlite3.Error) as exc:
            # Only the audit's "last heard" lags; the safety path does not depend on it.
            log.warning("device %s: last report time not stored: %s", state.device_id, exc)


def last_seen(store: Store) -> dict[str, tuple[datetime, int | None, int | None]]:
    """device_id → (last report time, battery mV, RSSI dBm) as last stored."""
    store.migrate(ROOM, _MIGRATIONS)
    rows = store.db.execute(
        "SELECT device_id, last_report_at, battery_mv, rssi_dbm FROM device_seen"
    )
    return {r[0]: (datetime.fromisoformat(r[1]), r[2], r[3]) for r in rows}
