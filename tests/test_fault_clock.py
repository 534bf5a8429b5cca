"""Fault: the wall clock is stepped forward and back while the real gateway runs.

The gateway runs on the real system clock with its wall time stepped through the one seam the
clock has (``SystemClock._wall``); monotonic time and the event loop are untouched, as they are
when NTP or a person steps the system clock. Offline detection and the valve retry timer run on
monotonic time, so neither step fires nor starves them; the times the gateway stores never go
backwards. (``tests/test_supervision.py::test_wall_clock_jump_fires_nothing`` checks the same
on a manual clock.)

The leak detector's own clock is as wrong as it gets meanwhile: each of its reports carries the
next of ``tests/test_device_clock.py``'s odd device times (year 0, a leap second, 9999, far past
and future, "yesterday", "", a number, an object, null...), and every report of the leak carries
one no datetime can hold. The gateway acts on them all the same.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.contract import report_topic
from gateway.events import ReportReceived
from gateway.mqtturl import parse_mqtt_url
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto
from tests.test_device_clock import ODD_TIMES, VETOED_BEFORE
from tests.test_gateway_e2e import Kit, settings, wait_until

RETRY_S = 5.0  # longer than the time the test spends stepping the clock around


class SteppedClock(SystemClock):
    """The system clock with a wall-time offset a test can step."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta(0)

    def _wall(self) -> datetime:
        return super()._wall() + self.offset


@dataclass
class OddClockDetector:
    """The leak detector's reports, sent every 0.25 s, each with the next odd device time; while
    it leaks, only times that vetoed a report before (none of its leak reports got through)."""

    url: str
    lel: float = 0.0
    sent: int = 0

    async def run(self) -> None:
        every = [ts for ts, _ in ODD_TIMES]
        async with parse_mqtt_url(self.url).client(identifier=f"odd-{uuid.uuid4().hex}") as c:
            for seq in range(100_000):  # bounded; cancelled when the test ends
                leaking = self.lel >= 50
                times = VETOED_BEFORE if leaking else every
                body = {
                    "kind": "detector",
                    "seq": seq & 0xFFFF,
                    "event": "alarm" if leaking else "periodic",
                    "ts": times[seq % len(times)],
                    "detector": {"lel_pct": self.lel, "flags": ["alarm_high"] if leaking else []},
                }
                await c.publish(report_topic(DETECTOR), json.dumps(body), qos=1)
                self.sent += 1
                await asyncio.sleep(0.25)


def stored_times(gateway: Gateway, table: str) -> list[datetime]:
    """The times of ``table``'s rows, in the order they were written."""
    rows = gateway.store.db.execute(f"SELECT at FROM {table} ORDER BY rowid")
    return [datetime.fromisoformat(r[0]) for r in rows]


def tries(gateway: Gateway) -> list[int]:
    """The try numbers of the close commands sent to the leak's two valves."""
    rows = gateway.store.db.execute(
        "SELECT try FROM valve_command WHERE valve_id IN (?, ?)", VALVES
    )
    return sorted(r[0] for r in rows)


async def test_wall_clock_steps_fire_no_timer_and_keep_times_in_order(
    tmp_path: Path, own_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SteppedClock()
    gateway = Gateway(
        settings(tmp_path, own_mosquitto.url, interval_s=1, valve_retry_s=RETRY_S), clock
    )
    await gateway.start()
    heard: list[datetime] = []
    by_device: defaultdict[str, list[datetime]] = defaultdict(list)

    def hear(event: ReportReceived) -> None:
        heard.append(event.received_at)
        by_device[event.device_id].append(event.received_at)

    gateway.bus.subscribe(ReportReceived, hear)
    kit = Kit(own_mosquitto.url, interval_s=0.5, valve_fails=True)
    kit.detector.silent = True  # its reports come from the odd clock below
    detector = OddClockDetector(own_mosquitto.url)
    await kit.start()
    odd = asyncio.create_task(detector.run())
    try:
        await wait_until(lambda: len(heard) >= 10 and detector.sent >= len(ODD_TIMES))
        clock.offset = timedelta(hours=3)  # forward: nothing is three hours overdue
        detector.lel = 55.0
        await wait_until(lambda: tries(gateway) == [1, 1])
        commanded = asyncio.get_running_loop().time()
        clock.offset = timedelta(hours=-6)  # back, behind the gateway's start
        await asyncio.sleep(1.5)  # reports keep coming, stamped while the clock is behind
        kit.regulator.trip_overflow()  # a second alarm, raised while the clock is behind
        await wait_until(
            lambda: any(a.alarm_type == "overflow" for a in gateway.alarms.open_alarms())
        )
        clock.offset = timedelta(days=2)  # forward again: the retry is not two days overdue
        # The retry comes RETRY_S after the first command on the monotonic clock, not at once
        # (forward step) nor six hours late (back step). Timed from here, not asserted at a
        # fixed moment, so a slow box cannot fail it.
        await wait_until(lambda: tries(gateway) == [1, 1, 2, 2])
        retried_after = asyncio.get_running_loop().time() - commanded
        assert retried_after >= RETRY_S - 0.05, "a wall-clock step fired the valve retry early"

        assert not any(a.alarm_type == "device_offline" for a in gateway.alarms.open_alarms())
        assert all(gateway.supervision.online(d) for d in (DETECTOR, *VALVES))
        # Per device: the bus keeps one device's reports in order, and may run an urgent one
        # (an alarm) ahead of other devices' periodic reports stamped before it.
        for device, times in by_device.items():
            assert times == sorted(times), f"receive times of {device} went backwards"
        for table in ("alarm_history", "valve_command"):
            times = stored_times(gateway, table)
            assert times, table
            assert times == sorted(times), f"stored {table} times went backwards"
        leak = [a for a in gateway.alarms.open_alarms() if a.alarm_type == "leak_high"]
        assert [a.source for a in leak] == [DETECTOR]
        assert leak[0].raised_at >= min(heard)
        assert "wall clock stepped back" in caplog.text
        vetoed = [ts if isinstance(ts, str) else json.dumps(ts) for ts in VETOED_BEFORE]
        assert leak[0].readings["device_ts"] in vetoed  # raised by a report with such a time
        assert gateway.ingest.flagged["device_time"] >= len(vetoed)
        assert "device time flagged" in caplog.text
        assert gateway.ingest.counts["rejected.invalid"] == 0
    finally:
        odd.cancel()
        await asyncio.gather(odd, return_exceptions=True)
        await kit.stop()
        await gateway.stop()
