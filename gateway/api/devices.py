"""What the console shows about each device: its last report, battery, signal, and a short gas
level trend, fed from ``ReportReceived`` on the bus.

The table lives in memory. Only the time a device was last heard (with its battery and signal)
is written to the store, at most once per :data:`PERSIST_S` per device and on stop, so the
coverage audit can say "online in the last 24 h" after a restart without a row per report.

Those rows are written in batches: every :data:`FLUSH_S`, all that are due, :data:`FLUSH_ROWS`
to a transaction, never one per device (after a restart every device's first report is due:
with 10,000 devices that was ~170 fsync'd commits a second on the event loop, and a leak waited
behind them).
"""

from __future__ import annotations

import logging
import sqlite3
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.events import ReportReceived
from gateway.store import Store, StoreError

__all__ = [
    "FLUSH_ROWS",
    "FLUSH_S",
    "PERSIST_S",
    "TREND_POINTS",
    "DeviceState",
    "DeviceStates",
    "Trend",
    "last_seen",
]

log = logging.getLogger(__name__)

PERSIST_S: Final = 600.0
FLUSH_S: Final = 5.0
# Rows per flush transaction (~2 ms of the loop); more due are written in further ones, with
# the loop free in between: 10,000 first reports in 5 s are not one 40 ms stall.
FLUSH_ROWS: Final = 500
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


class Trend:
    """A detector's last :data:`TREND_POINTS` gas readings, as (receive time, %LEL) pairs.

    Kept as two arrays of numbers: as Python objects (a tuple, a datetime and a float a point)
    30 points are ~4.5 KB a detector, over 200 MB for the 50,000 detectors of a 100,000-device
    registry once all have reported for half an hour; as arrays they are ~0.7 KB."""

    __slots__ = ("_times", "_values")

    def __init__(self) -> None:
        self._times = array("d")  # POSIX seconds: exact to the microsecond for this era
        self._values = array("d")

    def append(self, at: datetime, lel_pct: float) -> None:
        if len(self._values) >= TREND_POINTS:
            del self._times[0]
            del self._values[0]
        self._times.append(at.timestamp())
        self._values.append(lel_pct)

    def __iter__(self) -> Iterator[tuple[datetime, float]]:
        for at, lel_pct in zip(self._times, self._values, strict=True):
            yield datetime.fromtimestamp(at, UTC), lel_pct

    def __len__(self) -> int:
        return len(self._values)


# The trend of a device that has sent no gas reading (yet): shared, never appended to.
_NO_TREND: Final = Trend()


@dataclass(slots=True)
class DeviceState:
    device_id: str
    last_report_at: datetime
    battery_mv: int | None = None
    rssi_dbm: int | None = None
    event: str | None = None
    lel_pct: float | None = None
    valve_state: str | None = None
    valve_since: datetime | None = None  # heard live in this state since (None: retained)
    pressure_pa: int | None = None
    lel_trend: Trend = _NO_TREND
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
        self._due: set[str] = set()  # devices whose row the next flush writes
        self._timer: Timer | None = None

    async def start(self) -> None:
        self._store.migrate(ROOM, _MIGRATIONS)
        for device_id, (at, battery, rssi) in last_seen(self._store).items():
            self._states[device_id] = DeviceState(device_id, at, battery, rssi)
        self._bus.subscribe(ReportReceived, self.on_report, name="api.devices")
        self._timer = self._clock.call_later(FLUSH_S, self._on_flush)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Every device heard since the start, with its latest report, on disk before we go.
        self._write([s for s in self._states.values() if s.event is not None], durable=True)
        self._due.clear()

    def get(self, device_id: str) -> DeviceState | None:
        return self._states.get(device_id)

    def heard_since_start(self, device_id: str) -> bool:
        """Whether the device has reported since the gateway started (a state read back from
        the store has no event: that report was before the start)."""
        state = self._states.get(device_id)
        return state is not None and state.event is not None

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
            if state.lel_trend is _NO_TREND:
                state.lel_trend = Trend()
            state.lel_trend.append(event.received_at, r.detector.lel_pct)
        if r.valve is not None and r.valve.state.value != state.valve_state:
            state.valve_state = r.valve.state.value
            # A retained report is old news: the console says no "confirmed at" for it.
            state.valve_since = None if event.retained else event.received_at
            self._on_valve(event.device_id)
        if r.regulator is not None:
            state.pressure_pa = r.regulator.pressure_pa
        now = self._clock.monotonic()
        if state.persisted_mono is None or now - state.persisted_mono >= PERSIST_S:
            state.persisted_mono = now
            self._due.add(event.device_id)

    def _on_flush(self) -> None:
        batch = [self._due.pop() for _ in range(min(len(self._due), FLUSH_ROWS))]
        self._write([self._states[device_id] for device_id in batch], durable=False)
        self._timer = self._clock.call_later(0.0 if self._due else FLUSH_S, self._on_flush)

    def _write(self, states: list[DeviceState], *, durable: bool) -> None:
        """One transaction for the lot. The timer's flushes are not fsync'd: this is display
        and audit data, not safety state. A process crash loses only the rows not yet flushed
        (at most :data:`FLUSH_S` of them; WAL: a commit is in the OS once it returns); a power
        cut may also lose the commits since the last durable one (an alarm's), whose fsync
        takes them with it. A row that fails is not retried: the device's next report after
        :data:`PERSIST_S` is due again, and the stop writes every device heard."""
        if not states:
            return
        rows = [
            (s.device_id, s.last_report_at.isoformat(), s.battery_mv, s.rssi_dbm) for s in states
        ]
        try:
            with self._store.transaction(durable=durable) as db:
                db.executemany(
                    "INSERT INTO device_seen (device_id, last_report_at, battery_mv, rssi_dbm)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
                    " last_report_at = excluded.last_report_at,"
                    " battery_mv = excluded.battery_mv, rssi_dbm = excluded.rssi_dbm",
                    rows,
                )
        except (StoreError, sqlite3.Error) as exc:
            # Only the audit's "last heard" lags; the safety path does not depend on it.
            log.warning("%d device(s): last report time not stored: %s", len(rows), exc)


def last_seen(store: Store) -> dict[str, tuple[datetime, int | None, int | None]]:
    """device_id → (last report time, battery mV, RSSI dBm) as last stored."""
    store.migrate(ROOM, _MIGRATIONS)
    rows = store.db.execute(
        "SELECT device_id, last_report_at, battery_mv, rssi_dbm FROM device_seen"
    )
    return {r[0]: (datetime.fromisoformat(r[1]), r[2], r[3]) for r in rows}
