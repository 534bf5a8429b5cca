"""The telemetry writer against a real VictoriaMetrics (its InfluxDB v2 write endpoint).

VictoriaMetrics names a written field ``{measurement}_{field}`` with the point's tags as labels,
keeps numeric fields only (string fields come back as 0, so they are not compared), and stores
milliseconds: every point here has its own millisecond per series.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.contract import KitReport
from gateway.telemetry import (
    SPOOL_FILE,
    AlarmTransitionPoint,
    DeviceTags,
    Point,
    SiteTags,
    TelemetrySettings,
    TelemetryWriter,
)
from gateway.telemetry.schema import alarm_point, report_point
from tests.support.services import VictoriaMetrics, free_port

Series = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Series, dict[int, float]]

SITES = [SiteTags("site-1", "chaoyang", "restaurant"), SiteTags("site 2,=x", "海淀", "household")]


@pytest.fixture
def victoria(tmp_path) -> Iterator[VictoriaMetrics]:
    (tmp_path / "vm").mkdir()
    with VictoriaMetrics(tmp_path / "vm").running() as vm:
        yield vm


def settings(url: str, **overrides: object) -> TelemetrySettings:
    base = {
        "influx_url": url,
        "telemetry_flush_interval_s": 0.1,
        "telemetry_retry_max_s": 1.0,
        "telemetry_batch_size": 200,
    }
    return TelemetrySettings.model_validate(base | overrides)


class Load:
    """Reports from five devices of two sites, each at its own millisecond, and what they mean."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        self.n = 0
        self.points: list[Point] = []
        self.devices = [
            DeviceTags(SITES[0], "detector", "1a2b3c4d"),
            DeviceTags(SITES[0], "valve", "00c0ffee"),
            DeviceTags(SITES[0], "regulator", "0badf00d"),
            DeviceTags(SITES[1], "detector", "2b3c4d5e"),
            DeviceTags(SITES[1], "valve", "00beef00"),
        ]

    def _report(self, tags: DeviceTags) -> KitReport:
        body: dict[str, object] = {
            "detector": {"lel_pct": (self.n % 400) / 4, "flags": ["low_battery"] * (self.n % 2)},
            "valve": {"state": ["open", "closed"][self.n % 2], "cause": "manual"},
            "regulator": {"pressure_pa": 2800 + self.n},
        }
        return KitReport.model_validate(
            {
                "kind": tags.kind,
                "seq": self.n % 65536,
                "event": "periodic",
                "battery_mv": 3000 - self.n % 500,
                "rssi_dbm": -60 - self.n % 40,
                tags.kind: body[tags.kind],
            }
        )

    def tick(self, writer: TelemetryWriter) -> None:
        """One report per device."""
        for tags in self.devices:
            self.n += 1
            received = self.start + timedelta(milliseconds=self.n)
            report = self._report(tags)
            writer.write_report(report, received, tags)
            self.points.append(report_point(report, received, tags))

    def alarm(self, writer: TelemetryWriter) -> None:
        self.n += 1
        transition = AlarmTransitionPoint(
            f"gw1-{self.n}",
            SITES[1],
            "2b3c4d5e",
            "gas_leak",
            "critical",
            "normal",
            "unack_active",
            self.start + timedelta(milliseconds=self.n),
        )
        writer.write_alarm_transition(transition)
        self.points.append(alarm_point(transition))


def expected(points: list[Point]) -> Samples:
    samples: Samples = {}
    for p in points:
        labels = frozenset((k, v) for k, v in p.tags.items() if v)
        for name, value in p.fields.items():
            if not isinstance(value, str):
                series = (f"{p.measurement}_{name}", labels)
                samples.setdefault(series, {})[p.time_ns // 1_000_000] = float(value)
    return samples


def string_fields(points: list[Point]) -> set[str]:
    return {
        f"{p.measurement}_{k}" for p in points for k, v in p.fields.items() if isinstance(v, str)
    }


def exported(vm: VictoriaMetrics, points: list[Point], selector: str = "") -> Samples:
    """What VictoriaMetrics holds, less the string fields (stored as 0, not compared)."""
    samples: Samples = {}
    skip = string_fields(points)
    for row in vm.export(selector or '{__name__=~"kit_report_.*|alarm_.*"}'):
        metric = dict(row["metric"])  # type: ignore[call-overload]
        name = metric.pop("__name__")
        if name in skip:
            continue
        series = samples.setdefault((name, frozenset(metric.items())), {})
        for ts, value in zip(row["timestamps"], row["values"], strict=True):  # type: ignore[call-overload]
            assert ts not in series, f"{name} has two samples at {ts}"
            series[ts] = float(value)
    return samples


async def until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_points_are_read_back_exactly(tmp_path, victoria):
    load = Load()
    writer = TelemetryWriter(settings(victoria.url), tmp_path)
    await writer.start()
    for _ in range(60):
        load.tick(writer)
    load.alarm(writer)
    await until(lambda: writer.stats().written == len(load.points))
    await writer.stop()
    want = expected(load.points)
    assert sum(map(len, want.values())) > 60 * 5 * 5  # the comparison covers real data
    assert exported(victoria, load.points) == want


async def test_a_bad_point_is_logged_and_the_rest_flow(tmp_path, victoria, caplog):
    # A line an older gateway left in the spool that no parser accepts: VictoriaMetrics skips it.
    load = Load()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spool_writer = TelemetryWriter(settings(nowhere), tmp_path)
    await spool_writer.start()
    load.tick(spool_writer)
    await until(lambda: spool_writer.stats().spooled == 5, timeout_s=20)
    await spool_writer.stop()
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        db.execute("INSERT INTO spool (priority, size, line) VALUES (0, 9, 'garbage x')")
    writer = TelemetryWriter(settings(victoria.url), tmp_path)
    await writer.start()
    load.tick(writer)
    with caplog.at_level(logging.ERROR):
        writer.write_gateway_metrics("gw1", load.start, {"loop_lag_s": float("nan")})
    load.tick(writer)
    await until(lambda: writer.stats().spooled == 0 and writer.stats().queued == 0)
    await until(lambda: writer.stats().written == 16)  # the garbage line counts as sent
    await writer.stop()
    assert writer.stats().rejected == 1
    assert any("loop_lag_s" in r.getMessage() for r in caplog.records)
    assert exported(victoria, load.points) == expected(load.points)
    assert exported(victoria, [], '{__name__=~"gateway_.*"}') == {}


async def test_a_restart_with_a_full_spool_drains_it(tmp_path, victoria):
    load = Load()
    victoria.stop()
    first = TelemetryWriter(settings(victoria.url), tmp_path)
    await first.start()
    for _ in range(50):
        load.tick(first)
    load.alarm(first)
    await until(lambda: first.stats().spooled == len(load.points))
    await first.stop()
    victoria.start()
    second = TelemetryWriter(settings(victoria.url), tmp_path)
    await second.start()
    await until(lambda: second.stats().spooled == 0)
    await second.stop()
    assert second.stats().written == len(load.points)
    assert exported(victoria, load.points) == expected(load.points)


def lines_received(vm: VictoriaMetrics) -> int:
    """Line-protocol lines this VictoriaMetrics process has parsed (a replay counts again)."""
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=30) as r:
        text = r.read().decode()
    name = 'vm_protoparser_rows_read_total{type="influx"} '
    return next(int(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def holds(vm: VictoriaMetrics, point: Point) -> bool:
    want = expected([point])
    held = exported(vm, [point])
    return all(held.get(series, {}).items() >= samples.items() for series, samples in want.items())


async def test_writes_resume_within_seconds_of_the_database_answering_again(tmp_path, victoria):
    """The shipped settings. Down for 9 s after the first failed write: a doubling backoff
    would next try at 15 s (then 31 s...); the writer probes about every second instead."""
    load = Load()
    writer = TelemetryWriter(TelemetrySettings(influx_url=victoria.url), tmp_path)
    await writer.start()
    load.tick(writer)
    await until(lambda: writer.stats().written == len(load.points))
    victoria.stop()
    before = len(load.points)
    load.tick(writer)
    await until(lambda: not writer.stats().influx_up, timeout_s=20)
    down_at = time.monotonic()
    while time.monotonic() - down_at < 9:
        load.tick(writer)
        await asyncio.sleep(0.2)
    victoria.start()
    restarted = time.monotonic()
    await until(lambda: holds(victoria, load.points[before]), timeout_s=60)
    resumed_s = time.monotonic() - restarted
    await until(lambda: writer.stats().spooled == 0 and writer.stats().queued == 0)
    await writer.stop()
    print(f"first spooled point readable {resumed_s:.2f} s after VictoriaMetrics restarted")
    assert resumed_s < 4.0
    assert exported(victoria, load.points) == expected(load.points)
    # Every point of the outage reached the restarted database exactly once.
    assert lines_received(victoria) == len(load.points) - before
    assert writer.stats().written == len(load.points)


@pytest.mark.slow
async def test_a_60_s_outage_under_steady_load_loses_nothing(tmp_path, victoria):
    """50 reports/s throughout; VictoriaMetrics down for 60 s in the middle."""
    load = Load()
    writer = TelemetryWriter(settings(victoria.url), tmp_path)
    await writer.start()

    async def steady(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            load.tick(writer)
            await asyncio.sleep(0.1)

    await steady(5)
    victoria.stop()
    await steady(60)
    stats = writer.stats()
    assert not stats.influx_up
    assert stats.spooled > 0
    load.alarm(writer)
    victoria.start()
    await steady(5)
    await until(lambda: writer.stats().spooled == 0 and writer.stats().queued == 0, 120)
    await writer.stop()
    assert writer.stats().dropped == 0
    assert writer.stats().written == len(load.points)
    assert exported(victoria, load.points) == expected(load.points)
