"""Telemetry throughput: the TelemetryWriter against a real VictoriaMetrics (its InfluxDB v2
write endpoint), as the gateway runs it.

Cases: ``enqueue`` (the caller's cost: build, encode and queue a report point, on the event
loop), ``write`` (queue → batches → VictoriaMetrics, until every point is acknowledged),
``spool`` (VictoriaMetrics down: points go to the disk spool, fsync'd) and ``drain``
(VictoriaMetrics back: the spool written out in order). Points are detector/valve reports of
many devices (about 17 fields each: VictoriaMetrics stores one sample per numeric field).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.contract import KitReport
from gateway.telemetry import DeviceTags, SiteTags, TelemetrySettings, TelemetryWriter
from tests.support.services import VictoriaMetrics

DEVICES = 2_000


def _reports() -> list[tuple[KitReport, DeviceTags]]:
    out = []
    for n in range(DEVICES):
        site = SiteTags(f"S{n // 2:06d}", f"district-{n % 16}", "restaurant")
        if n % 2:
            body = {"valve": {"state": "open", "cause": "none"}}
            tags = DeviceTags(site, "valve", f"{n:08x}")
        else:
            body = {"detector": {"lel_pct": n % 100 / 10, "flags": [], "temp_c": 24}}
            tags = DeviceTags(site, "detector", f"{n:08x}")
        report = KitReport.model_validate(
            {
                "kind": tags.kind,
                "seq": n,
                "event": "periodic",
                "battery_mv": 3000,
                "rssi_dbm": -70,
                **body,
            }
        )
        out.append((report, tags))
    return out


def _feed(writer: TelemetryWriter, count: int, start: datetime) -> float:
    """Queue ``count`` points, each at its own millisecond; seconds spent in the caller."""
    reports = _reports()
    began = time.perf_counter()
    for i in range(count):
        report, tags = reports[i % DEVICES]
        writer.write_report(report, start + timedelta(milliseconds=i), tags)
    return time.perf_counter() - began


async def _until(check: Callable[[], bool], timeout_s: float) -> float:
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout_s:
            raise TimeoutError("benchmark did not finish in time")
        await asyncio.sleep(0.005)
    return time.perf_counter() - began


def _row(case: str, points: int, batch: int, seconds: float) -> dict[str, object]:
    return {
        "case": case,
        "batch": batch,
        "points": points,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
    }


async def _bench(workdir: Path, count: int, batch: int) -> list[dict[str, object]]:
    rows = []
    start = datetime.now(UTC) - timedelta(hours=1)
    with VictoriaMetrics(workdir).running() as vm:
        settings = TelemetrySettings(
            influx_url=vm.url,
            telemetry_batch_size=batch,
            telemetry_flush_interval_s=0.05,
            telemetry_retry_max_s=0.5,
        )
        writer = TelemetryWriter(settings, workdir / f"data-{batch}")
        await writer.start()
        began = time.perf_counter()
        enqueue_s = _feed(writer, count, start)
        await _until(lambda: writer.stats().written >= count, 600)
        rows.append(_row("enqueue", count, batch, enqueue_s))
        rows.append(_row("write", count, batch, time.perf_counter() - began))

        vm.stop()
        began = time.perf_counter()
        _feed(writer, count, start + timedelta(hours=1))
        await _until(lambda: writer.stats().spooled >= count, 600)
        rows.append(_row("spool", count, batch, time.perf_counter() - began))
        vm.start()
        drain_s = await _until(lambda: writer.stats().spooled == 0, 600)
        rows.append(_row("drain", count, batch, drain_s))
        await writer.stop()
        assert writer.stats().written == 2 * count, writer.stats()
    return rows


def run(quick: bool) -> list[dict[str, object]]:
    logging.getLogger("gateway.telemetry").setLevel(logging.ERROR)
    count = 5_000 if quick else 100_000
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="gasgate-bench-telemetry-") as tmp:
        for batch in (1_000, 5_000):
            workdir = Path(tmp) / f"b{batch}"
            workdir.mkdir()
            rows += asyncio.run(_bench(workdir, count, batch))
    return rows
