"""TelemetryWriter: the gateway's events as InfluxDB points, batched, spooled, never in the way.

Callers (on the event loop) only encode a point and append it to a queue. One worker thread
owns everything slow: it writes batches with the synchronous v2 write API, and while InfluxDB is
unreachable, slow or answering 5xx/429 it appends to the disk spool (:mod:`.spool`) and probes
it about every second with the spool's oldest line alone, draining the spool in order as soon as
InfluxDB answers. A batch InfluxDB refuses (4xx) is bisected until the refused point is alone;
that point is logged and dropped, the rest flow.
Replays are harmless: the same series and timestamp overwrite.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from gateway.contract import KitReport
from gateway.telemetry.lineproto import FieldValue, Point, Priority, encode
from gateway.telemetry.schema import (
    AlarmTransitionPoint,
    DeviceTags,
    SiteTags,
    alarm_point,
    gateway_point,
    report_point,
    site_summary_point,
)
from gateway.telemetry.settings import TelemetrySettings
from gateway.telemetry.sink import InfluxSink, Outcome, WriteResult
from gateway.telemetry.spool import Spool

__all__ = ["SPOOL_FILE", "TelemetryStats", "TelemetryWriter"]

log = logging.getLogger(__name__)

SPOOL_FILE: Final = "telemetry-spool.sqlite3"
_BACKOFF_FIRST_S: Final = 0.5
# While InfluxDB is down the spool's oldest line alone is the probe, so a short retry costs one
# small request; the backlog goes out only once that line is written.
_PROBE_LINES: Final = 1
# Memory holds what arrives while the worker is inside one request (a write timeout at most);
# past this, new periodic points are dropped (counted) rather than growing without bound.
_PENDING_BATCHES: Final = 100

Line = tuple[Priority, str]


@dataclass(frozen=True, slots=True)
class TelemetryStats:
    """Counters are cumulative since start; ``problems`` is what the core should alarm on."""

    enabled: bool
    queued: int  # in memory, not yet written or spooled
    spooled: int  # on disk, waiting for InfluxDB
    spool_bytes: int
    written: int
    dropped: int  # periodic points dropped by a full spool (or a full memory queue)
    rejected: int  # points InfluxDB (or the encoder) refused: logged with the point
    influx_up: bool
    last_error: str

    @property
    def problems(self) -> tuple[str, ...]:
        found = []
        if self.enabled and not self.influx_up:
            found.append("influx_unavailable")
        if self.dropped:
            found.append("telemetry_dropped")
        if self.rejected:
            found.append("telemetry_rejected")
        return tuple(found)


class TelemetryWriter:
    def __init__(self, settings: TelemetrySettings, data_dir: Path) -> None:
        self._settings = settings
        self._spool = Spool(data_dir / SPOOL_FILE, settings.telemetry_spool_max_bytes)
        self._sink = InfluxSink(settings)
        self._pending: deque[Line] = deque()
        self._max_pending = settings.telemetry_batch_size * _PENDING_BATCHES
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._written = self._dropped = self._rejected = 0
        self._up = True
        self._last_error = ""
        self._backoff_s = 0.0
        self._retry_at = 0.0

    # --- lifecycle (event loop) ---------------------------------------------------------------

    async def start(self) -> None:
        if not self._settings.telemetry_enabled:
            log.warning("telemetry: no InfluxDB configured (--influx-url): not recording telemetry")
            return
        await asyncio.to_thread(self._open_spool)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()
        log.info(
            "telemetry: writing to %s bucket %r; %d points waiting in the spool",
            self._settings.influx_url,
            self._settings.influx_bucket,
            self._spool.count,
        )

    def _open_spool(self) -> None:
        try:
            self._spool.open()
        except sqlite3.DatabaseError as exc:
            # Telemetry must never keep the safety gateway from starting: set the damaged
            # spool aside (for a person to look at) and start an empty one.
            self._spool.close()
            path, stamp = self._spool.path, time.time_ns()
            for suffix in ("", "-wal", "-shm"):
                part = path.with_name(path.name + suffix)
                if part.exists():
                    part.rename(part.with_name(f"{part.name}.damaged-{stamp}"))
            log.error("telemetry: spool unreadable (%s), moved aside (.damaged-%d)", exc, stamp)
            self._spool.open()

    async def stop(self) -> None:
        """Flush: write what is queued if InfluxDB answers at once, spool the rest."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        await asyncio.to_thread(thread.join)

    # --- the API the core calls (event loop; never blocks) --------------------------------------

    def write_report(self, report: KitReport, received_at: datetime, tags: DeviceTags) -> None:
        self._enqueue(lambda: report_point(report, received_at, tags))

    def write_alarm_transition(self, transition: AlarmTransitionPoint) -> None:
        self._enqueue(lambda: alarm_point(transition))

    def write_site_summary(
        self,
        site: SiteTags,
        at: datetime,
        *,
        kit_complete: bool,
        devices_online: int,
        devices_offline: int,
        open_alarms: int,
    ) -> None:
        self._enqueue(
            lambda: site_summary_point(
                site,
                at,
                kit_complete=kit_complete,
                devices_online=devices_online,
                devices_offline=devices_offline,
                open_alarms=open_alarms,
            )
        )

    def write_gateway_metrics(
        self, gateway_id: str, at: datetime, metrics: Mapping[str, FieldValue]
    ) -> None:
        """The core's metrics, with the writer's own counters added as ``telemetry_*``."""
        s = self.stats()
        own: dict[str, FieldValue] = {
            "telemetry_queued": s.queued,
            "telemetry_spooled": s.spooled,
            "telemetry_spool_bytes": s.spool_bytes,
            "telemetry_written": s.written,
            "telemetry_dropped": s.dropped,
            "telemetry_rejected": s.rejected,
        }
        self._enqueue(lambda: gateway_point(gateway_id, at, {**metrics, **own}))

    def stats(self) -> TelemetryStats:
        with self._lock:
            return TelemetryStats(
                enabled=self._settings.telemetry_enabled,
                queued=len(self._pending),
                spooled=self._spool.count,
                spool_bytes=self._spool.size,
                written=self._written,
                dropped=self._dropped,
                rejected=self._rejected,
                influx_up=self._up,
                last_error=self._last_error,
            )

    def _enqueue(self, build: Callable[[], Point]) -> None:
        if self._thread is None:
            if self._settings.telemetry_enabled:  # before start() or after stop(): say so
                self._count(dropped=1)
                log.warning("telemetry: writer not running, point dropped")
            return  # telemetry off: the demo runs without InfluxDB
        try:
            point = build()
            line = encode(point)
        except ValueError as exc:
            log.error("telemetry: point refused, not written: %s", exc)
            self._count(rejected=1)
            return
        if point.priority is Priority.TELEMETRY and len(self._pending) >= self._max_pending:
            self._count(dropped=1)
            return
        self._pending.append((point.priority, line))
        if len(self._pending) >= self._settings.telemetry_batch_size:
            self._wake.set()

    def _count(self, *, written: int = 0, dropped: int = 0, rejected: int = 0) -> None:
        with self._lock:
            self._written += written
            self._dropped += dropped
            self._rejected += rejected

    # --- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self._next_wait_s())
                self._wake.clear()
                final = self._stopping.is_set()
                self._cycle(final)
                if final:
                    return
        finally:
            self._sink.close()
            self._spool.close()

    def _next_wait_s(self) -> float:
        """Sleep until the next flush, or sooner when a retry falls due while InfluxDB is down
        (a retry checked only at flushes would come up to a flush interval late)."""
        flush_s = self._settings.telemetry_flush_interval_s
        if not self._spool.count:  # nothing to probe with: new points come at the next flush
            return flush_s
        return min(flush_s, max(0.0, self._retry_at - time.monotonic()))

    def _take_pending(self) -> list[Line]:
        return [self._pending.popleft() for _ in range(len(self._pending))]

    def _cycle(self, final: bool) -> None:
        lines = self._take_pending()
        try:
            self._write_or_spool(lines, final)
        except Exception:
            # A fault of ours (not InfluxDB's): keep the lines, retry them from the spool.
            log.exception("telemetry: write cycle failed; spooling %d points", len(lines))
            self._up = False
            self._retry_at = time.monotonic() + self._settings.telemetry_retry_max_s
            self._to_spool(lines)

    def _write_or_spool(self, lines: list[Line], final: bool) -> None:
        if self._spool.count or not self._up:
            self._to_spool(lines)
            if not final and time.monotonic() >= self._retry_at:
                self._drain()
            return
        size = self._settings.telemetry_batch_size
        for start in range(0, len(lines), size):
            batch = lines[start : start + size]
            done = self._deliver([line for _, line in batch])
            if done < len(batch):
                self._to_spool(batch[done:] + lines[start + size :])
                return

    def _drain(self) -> None:
        """Write the spool head batch by batch, oldest first, until it is empty or a write fails.

        While InfluxDB is down the first request is a probe of one line: the backlog is not
        re-sent on every retry, and once that line is written the rest follows at once.
        """
        progress = _DrainProgress(self._spool.count)
        while self._spool.count and not self._stopping.is_set():
            size = self._settings.telemetry_batch_size if self._up else _PROBE_LINES
            head = self._spool.head(size)
            done = self._deliver([line for _, line in head])
            if done:
                self._spool.remove_through(head[done - 1][0])
                progress.update(done, self._spool.count)
            if done < len(head):
                return
            # Points arriving meanwhile queue behind the spool, keeping the order.
            self._to_spool(self._take_pending())
        if not self._spool.count:
            log.info("telemetry: spool drained")

    def _to_spool(self, lines: list[Line]) -> None:
        try:
            dropped = self._spool.append(lines)
        except sqlite3.Error as exc:
            # The disk failed us: keep alarm transitions in memory for the next cycle.
            alarms = [line for line in lines if line[0] is Priority.ALARM]
            self._pending.extendleft(reversed(alarms))
            dropped = len(lines) - len(alarms)
            log.error(
                "telemetry: spool write failed (%s): %d periodic points lost, "
                "%d alarm transitions kept in memory",
                exc,
                dropped,
                len(alarms),
            )
            self._count(dropped=dropped)
            return
        if dropped:
            log.warning(
                "telemetry: spool over its bound, dropped %d oldest periodic points", dropped
            )
            self._count(dropped=dropped)

    def _deliver(self, lines: list[str]) -> int:
        """Write lines; how many (a prefix) are done: written, or refused and logged."""
        result = self._sink.write(lines)
        if result.outcome is Outcome.UNAVAILABLE:
            self._mark_down(result)
            return 0
        self._mark_up()
        if result.outcome is Outcome.WRITTEN:
            self._count(written=len(lines))
            return len(lines)
        if len(lines) == 1:
            log.error(
                "telemetry: InfluxDB refused a point (%s), dropped: %s", result.detail, lines[0]
            )
            self._count(rejected=1)
            return 1
        # Refused batch: split until the bad point is alone; re-sent good points overwrite.
        half = len(lines) // 2
        left = self._deliver(lines[:half])
        return left if left < half else half + self._deliver(lines[half:])

    def _mark_down(self, result: WriteResult) -> None:
        if self._up:
            log.warning(
                "telemetry: InfluxDB unavailable (%s); spooling to %s",
                result.detail,
                self._spool.path,
            )
        self._up = False
        self._last_error = result.detail
        limit = self._settings.telemetry_retry_max_s
        self._backoff_s = min(limit, self._backoff_s * 2 if self._backoff_s else _BACKOFF_FIRST_S)
        # A draw from the upper half of the backoff: gateways that lost a shared InfluxDB
        # together do not all probe it in step when it comes back.
        wait = random.uniform(self._backoff_s / 2, self._backoff_s)
        if result.retry_after_s is not None:  # "not before", but never past our own bound:
            wait = max(wait, result.retry_after_s)  # a probe is one line, cheap to refuse
        self._retry_at = time.monotonic() + min(wait, limit)

    def _mark_up(self) -> None:
        if not self._up:
            log.info(
                "telemetry: InfluxDB answers again; draining %d spooled points", self._spool.count
            )
        self._up = True
        self._backoff_s = 0.0


class _DrainProgress:
    """A drain after a long outage can take minutes: say how far it is, every ``EVERY_S``."""

    EVERY_S = 10.0

    def __init__(self, total: int) -> None:
        self._start = self._last = time.monotonic()
        self._total = total
        self._written = 0

    def update(self, written: int, left: int) -> None:
        self._written += written
        now = time.monotonic()
        if now - self._last < self.EVERY_S:
            return
        self._last = now
        rate = self._written / max(now - self._start, 1e-9)
        log.info(
            "telemetry: draining the spool: %d of %d point(s) written, %d left, %.0f points/s",
            self._written,
            self._total,
            left,
            rate,
        )
