"""A device clock can never veto a leak (issue 17, item 6).

A report's ``ts`` is the device's own clock: data, never the event time. Whatever it holds (a
valid but odd RFC 3339 time, a leap second, year 0, a word, a number, an object, null), a leak
report is accepted, raises the leak alarm and closes the linked valve; a ``ts`` that is no usable
time is kept as text, counted and logged with the topic and the reason.

The safety path runs in-process as the gateway wires it: ingest, rules, the alarms room (real
store) and the valve linkage, on one bus and a manual clock; close commands are captured where
the site MQTT queue would take them. ``tests/test_fault_clock.py`` runs odd device times
through the real gateway and broker.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import ksp
from firmware_bridge.bridge import kit_report
from firmware_bridge.link import ReportReceived as SerialReport
from gateway.alarms import Alarms
from gateway.contract import TS_TEXT_MAX, DeviceTime, KitReport, decode, report_topic
from gateway.linkage import Linkage
from gateway.model import Alarm
from gateway.store import Store
from gateway.telemetry.schema import DeviceTags, SiteTags, report_point
from rules.evaluate import readings
from tests.support.safety_core import DETECTOR, VALVE, Core, detector_report
from tests.test_ingest import _json as json_values
from tests.test_linkage import Outbox

#: (ts as the device sent it, whether it is a usable time). Far past and far future are valid
#: RFC 3339 times a wrong device clock sends; year 0 and a leap second are valid RFC 3339 text
#: that no datetime can hold.
ODD_TIMES: list[tuple[object, bool]] = [
    ("0000-01-01T00:00:00Z", False),
    ("2016-12-31T23:59:60Z", False),
    ("9999-12-31T23:59:59Z", True),
    ("yesterday", False),
    ("", False),
    (12345, False),
    ({}, False),
    (None, True),  # no device time at all: nothing to flag
    ("2999-06-01T12:00:00+08:00", True),  # far future
    ("1601-01-01T00:00:00Z", True),  # far past
    ("0001-01-01T00:00:00+01:00", False),  # year 0 once in UTC
    ("2026-11-28T10:00:00", False),  # no UTC offset
    ("2026-11-28t10:00:00.5z", True),  # RFC 3339 allows lower case
]

#: The device times that made a whole report invalid before (no alarm, no valve command).
VETOED_BEFORE: list[object] = ["0000-01-01T00:00:00Z", "2016-12-31T23:59:60Z", "yesterday", "", {}]


@dataclass
class SafetyPath:
    """Ingest, rules, alarms and linkage on one bus: what a leak report sets going."""

    core: Core
    alarms: Alarms
    outbox: Outbox

    async def leak(self, ts: object, seq: int = 1) -> None:
        payload = detector_report(seq, 55.0, ("alarm_high",), ts=ts, event="alarm")
        await self.core.send(DETECTOR, payload)

    def leak_alarms(self) -> list[Alarm]:
        return [a for a in self.alarms.open_alarms() if a.alarm_type == "leak_high"]

    def close_commands(self) -> list[tuple[str, str]]:
        return [(topic.split("/")[2], body["cmd"]) for topic, body in self.outbox.sent]


@asynccontextmanager
async def safety_path(directory: Path) -> AsyncIterator[SafetyPath]:
    core = Core()
    store = Store(directory / "gasgate.db")
    store.open()
    alarms = Alarms(core.bus, store, core.clock, "gw1")
    outbox = Outbox()
    linkage = Linkage(core.bus, core.registry, outbox, store, core.clock)
    await core.start()
    await alarms.start()
    await linkage.start()
    alarms.announce_restored()
    await core.bus.join()
    try:
        yield SafetyPath(core, alarms, outbox)
    finally:
        await core.bus.join()
        await linkage.stop()
        await alarms.stop()
        await core.stop()
        store.close()


def _ids(case: tuple[object, bool]) -> str:
    return json.dumps(case[0])


@pytest.mark.parametrize(("ts", "usable"), ODD_TIMES, ids=[_ids(c) for c in ODD_TIMES])
async def test_a_leak_is_acted_on_whatever_its_device_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ts: object, usable: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.ingest")
    async with safety_path(tmp_path) as path:
        await path.leak(ts)
        assert path.core.rejected == []
        (event,) = path.core.reports
        assert event.received_at == path.core.clock.now()  # the gateway's clock, not the device's
        (leak,) = path.leak_alarms()
        assert leak.source == DETECTOR
        assert path.close_commands() == [(VALVE, "close_valve")]
        flagged = path.core.ingest.flagged["device_time"]
        if ts is None:
            assert event.report.ts is None
            assert "device_ts" not in leak.readings
        else:
            kept = event.report.ts
            assert kept is not None
            assert kept.text == (ts if isinstance(ts, str) else json.dumps(ts))
            assert (kept.at is not None) is usable
            assert leak.readings["device_ts"] == kept.text  # shown as sent, beside the alarm
        assert flagged == (0 if usable else 1)
        if not usable:
            assert f"device time flagged, {report_topic(DETECTOR)}" in caplog.text
            assert leak.readings["device_ts_problem"]


#: Any JSON value (the ingest fuzz's), and times of every zone, as devices write them.
_any_ts = (
    json_values
    | st.text(max_size=80)
    | st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat())
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ts=_any_ts)
async def test_any_json_value_as_ts_never_vetoes_a_leak(ts: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with safety_path(Path(directory)) as path:
            await path.leak(ts)
            assert path.core.ingest.counts["accepted.report"] == 1, path.core.rejected
            assert [a.source for a in path.leak_alarms()] == [DETECTOR]
            assert path.close_commands() == [(VALVE, "close_valve")]


def test_device_time_keeps_its_text_and_says_why_it_is_unusable() -> None:
    leap = DeviceTime.read("2016-12-31T23:59:60Z")
    assert leap is not None
    assert (leap.text, leap.at) == ("2016-12-31T23:59:60Z", None)
    assert "second" in (leap.problem or "")
    china = DeviceTime.read("2026-11-28T18:00:00+08:00")
    assert china == DeviceTime("2026-11-28T18:00:00+08:00", datetime(2026, 11, 28, 10, tzinfo=UTC))
    long = DeviceTime.read("9" * 10_000)
    assert long is not None
    assert (long.text, long.at) == ("9" * TS_TEXT_MAX, None)
    assert long.problem
    deep: object = []
    for _ in range(5_000):  # deeper than json.dumps can print
        deep = [deep]
    assert DeviceTime.read(deep) == DeviceTime(
        "<list>", None, "a JSON list, not an RFC 3339 date-time string"
    )


@pytest.mark.parametrize(("ts", "usable"), ODD_TIMES, ids=[_ids(c) for c in ODD_TIMES])
def test_telemetry_keeps_the_device_time_only_when_usable(ts: object, usable: bool) -> None:
    payload = detector_report(1, 5.0, ts=ts)
    report = decode(KitReport, payload, report_topic(DETECTOR))
    tags = DeviceTags(SiteTags("S0001", "Futian", "restaurant"), "detector", DETECTOR)
    point = report_point(report, datetime(2026, 11, 28, 10, tzinfo=UTC), tags)
    assert ("device_time_ms" in point.fields) is (usable and ts is not None)
    assert readings(report).get("device_ts") == (None if report.ts is None else report.ts.text)


@pytest.mark.parametrize(
    "received_at",
    [
        datetime(2026, 11, 28, 10, 0, 0, 123000, tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),  # a bridge box whose clock was never set
        datetime.max.replace(tzinfo=UTC),
    ],
)
def test_the_serial_bridge_stamps_a_time_the_gateway_accepts(received_at: datetime) -> None:
    """KSP/1 frames carry no device clock: the bridge stamps its own receive time, and whatever
    that clock says, the kit/v1 report it writes decodes to the same leak."""
    body = ksp.DetectorBody(550, frozenset({ksp.DetectorFlag.ALARM_HIGH}), 24)
    frame = ksp.Report(0x1A2B3C4D, ksp.Event.ALARM, 0, -60, body)
    payload = kit_report(SerialReport(frame, received_at), 3).to_json()
    report = decode(KitReport, payload, report_topic(DETECTOR))
    assert (
        report.detector
        == KitReport.model_validate(
            {
                "kind": "detector",
                "seq": 0,
                "event": "alarm",
                "detector": {"lel_pct": 55.0, "flags": ["alarm_high"], "temp_c": 24},
            }
        ).detector
    )
    assert report.ts == DeviceTime.read(received_at)
    assert report.ts is not None
    assert report.ts.at == received_at
