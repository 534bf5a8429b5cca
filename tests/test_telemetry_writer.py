"""TelemetryWriter against a real HTTP server speaking InfluxDB's /api/v2/write answers.

The server here answers the way InfluxDB does (204, 400 with a JSON error, 429/503 with
Retry-After, or a response slower than the client's timeout), which VictoriaMetrics cannot be
made to do; tests/test_telemetry_victoria.py runs the same writer against a real database.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.contract import KitReport
from gateway.settings import GasgateSettings
from gateway.telemetry import (
    SPOOL_FILE,
    AlarmTransitionPoint,
    DeviceTags,
    SiteTags,
    TelemetrySettings,
    TelemetryWriter,
)
from gateway.telemetry import writer as telemetry_writer

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
SITE = SiteTags("site-1", "chaoyang", "restaurant")
DETECTOR = DeviceTags(SITE, "detector", "1a2b3c4d")


class InfluxLike:
    """Records written lines in arrival order; ``answer`` decides each request's response."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.requests = 0
        self.sizes: list[int] = []  # lines per request, in arrival order
        self.auth: set[str] = set()
        self.answer: Callable[[list[str]], tuple[int, dict[str, str], bytes]] = _accept
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                lines = body.splitlines()
                outer.requests += 1
                outer.sizes.append(len(lines))
                outer.auth.add(self.headers.get("Authorization", ""))
                time.sleep(outer.delay_s)
                status, headers, payload = outer.answer(lines)
                if status == 204:
                    outer.lines.extend(lines)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def _accept(lines: list[str]) -> tuple[int, dict[str, str], bytes]:
    return 204, {}, b""


def _down(lines: list[str]) -> tuple[int, dict[str, str], bytes]:
    return 503, {"Retry-After": "0"}, b'{"code":"unavailable","message":"down"}'


@pytest.fixture
def influx() -> Iterator[InfluxLike]:
    server = InfluxLike()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def settings(url: str, **overrides: object) -> TelemetrySettings:
    base: dict[str, object] = {
        "influx_url": url,
        "influx_token": "secret",
        "telemetry_flush_interval_s": 0.05,
        "telemetry_retry_max_s": 0.2,
        "telemetry_batch_size": 50,
    }
    return TelemetrySettings.model_validate(base | overrides)


def report(seq: int, lel: float = 0.0) -> KitReport:
    return KitReport.model_validate(
        {"kind": "detector", "seq": seq, "event": "periodic", "detector": {"lel_pct": lel}}
    )


def transition(n: int) -> AlarmTransitionPoint:
    return AlarmTransitionPoint(
        f"gw1-{n}",
        SITE,
        "1a2b3c4d",
        "gas_leak",
        "critical",
        "normal",
        "unack_active",
        T0 + timedelta(milliseconds=n),
    )


async def until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def seqs(lines: list[str]) -> list[int]:
    return [int(line.split("seq=")[1].split("i")[0]) for line in lines if "seq=" in line]


async def test_without_influxdb_the_gateway_runs_and_says_so_once(tmp_path, caplog):
    writer = TelemetryWriter(TelemetrySettings(), tmp_path)
    with caplog.at_level(logging.WARNING):
        await writer.start()
        for n in range(3):
            writer.write_report(report(n), T0, DETECTOR)
        await writer.stop()
    assert [r.message for r in caplog.records].count(
        "telemetry: no InfluxDB configured (--influx-url): not recording telemetry"
    ) == 1
    assert not writer.stats().enabled
    assert not (tmp_path / SPOOL_FILE).exists()


async def test_points_are_written_in_batches_with_the_token(tmp_path, influx):
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    await writer.start()
    for n in range(120):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    await until(lambda: len(influx.lines) == 120)
    await writer.stop()
    assert seqs(influx.lines) == list(range(120))
    assert influx.requests <= 120 // 50 + 2  # batched, not one request per point
    assert writer.stats().written == 120
    assert influx.auth == {"Token secret"}


async def test_stop_flushes_what_is_queued(tmp_path, influx):
    writer = TelemetryWriter(settings(influx.url, telemetry_flush_interval_s=60), tmp_path)
    await writer.start()
    for n in range(7):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    await writer.stop()
    assert seqs(influx.lines) == list(range(7))


async def test_a_refused_point_is_logged_and_the_rest_flow(tmp_path, influx, caplog):
    def refuse_regulators(lines: list[str]) -> tuple[int, dict[str, str], bytes]:
        if any("kind=regulator" in line for line in lines):
            return 400, {}, b'{"code":"invalid","message":"field type conflict"}'
        return 204, {}, b""

    influx.answer = refuse_regulators
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    await writer.start()
    bad = KitReport.model_validate(
        {"kind": "regulator", "seq": 999, "event": "periodic", "regulator": {"pressure_pa": 2800}}
    )
    with caplog.at_level(logging.ERROR):
        for n in range(40):
            writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
            if n == 17:
                writer.write_report(bad, T0, DeviceTags(SITE, "regulator", "0badf00d"))
        writer.write_gateway_metrics("gw1", T0, {"loop_lag_s": float("nan")})
        await until(lambda: writer.stats().written + writer.stats().rejected >= 41)
        await writer.stop()
    assert sorted(set(seqs(influx.lines))) == list(range(40))
    assert writer.stats().rejected == 2  # the regulator point and the NaN metric
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "field type conflict" in logged
    assert "0badf00d" in logged
    assert "seq=999i" in logged
    assert "loop_lag_s" in logged
    assert writer.stats().spooled == 0


async def test_an_outage_spools_and_drains_in_order(tmp_path, influx):
    influx.answer = _down
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    await writer.start()
    for n in range(100):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    await until(lambda: writer.stats().spooled == 100)
    stats = writer.stats()
    assert not stats.influx_up
    assert "influx_unavailable" in stats.problems
    assert "HTTP 503" in stats.last_error
    influx.answer = _accept
    for n in range(100, 150):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    await until(lambda: len(influx.lines) == 150)
    await writer.stop()
    assert seqs(influx.lines) == list(range(150))
    assert writer.stats().spooled == 0
    assert writer.stats().influx_up


async def test_while_down_one_line_probes_and_the_backlog_follows_once_it_is_written(
    tmp_path, influx
):
    influx.answer = _down  # 503 with Retry-After: 0, so only the writer's own pace holds it
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    await writer.start()
    for n in range(100):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    await until(lambda: writer.stats().spooled == 100)
    started, before = time.monotonic(), influx.requests
    await until(lambda: influx.requests >= before + 5)  # it keeps probing
    await asyncio.sleep(0.5)
    probes, elapsed = influx.requests - before, time.monotonic() - started
    sizes = list(influx.sizes)
    influx.answer = _accept
    await until(lambda: len(influx.lines) == 100)
    await writer.stop()
    # The first request carried a batch and failed; every one after it, one spooled line.
    assert set(sizes[1:]) == {1}, sizes
    # Probes are paced (0.1-0.2 s apart with this retry_max), never back to back.
    assert probes <= elapsed / 0.1 + 3
    assert seqs(influx.lines) == list(range(100))
    assert writer.stats().written == 100  # the probe's line is not sent twice


async def test_a_slow_influxdb_counts_as_down_and_callers_never_wait(tmp_path, influx):
    influx.delay_s = 1.0
    writer = TelemetryWriter(settings(influx.url, telemetry_write_timeout_s=0.2), tmp_path)
    await writer.start()
    started = time.monotonic()
    for n in range(500):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    enqueue_s = time.monotonic() - started
    await until(lambda: not writer.stats().influx_up)
    influx.delay_s = 0.0
    await until(lambda: len(set(seqs(influx.lines))) == 500)
    await writer.stop()
    # Blocking on InfluxDB would take >= 10 batches x 0.2 s timeout; queueing takes milliseconds.
    assert enqueue_s < 1.0
    assert sorted(set(seqs(influx.lines))) == list(range(500))


async def test_a_full_spool_drops_oldest_telemetry_never_alarms(tmp_path, influx):
    influx.answer = _down
    writer = TelemetryWriter(settings(influx.url, telemetry_spool_max_bytes=20_000), tmp_path)
    await writer.start()
    for n in range(400):
        writer.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
        if n % 40 == 0:
            writer.write_alarm_transition(transition(n))
    await until(lambda: writer.stats().queued == 0 and writer.stats().spooled > 0)
    await asyncio.sleep(0.2)
    stats = writer.stats()
    assert stats.dropped > 0
    assert "telemetry_dropped" in stats.problems
    assert stats.spool_bytes <= 20_000
    influx.answer = _accept
    await until(lambda: writer.stats().spooled == 0)
    await writer.stop()
    alarms = [line for line in influx.lines if line.startswith("alarm_transition")]
    assert [a.split('alarm_id="')[1].split('"')[0] for a in alarms] == [
        f"gw1-{n}" for n in range(0, 400, 40)
    ]
    kept = seqs(influx.lines)
    assert kept == list(range(400 - len(kept), 400))  # the newest survive, in order
    assert len(kept) + writer.stats().dropped == 400


async def test_the_spool_survives_a_restart(tmp_path, influx):
    influx.answer = _down
    first = TelemetryWriter(settings(influx.url), tmp_path)
    await first.start()
    for n in range(30):
        first.write_report(report(n), T0 + timedelta(milliseconds=n), DETECTOR)
    first.write_alarm_transition(transition(1))
    await first.stop()
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        assert db.execute("SELECT count(*) FROM spool").fetchone() == (31,)
    influx.answer = _accept
    second = TelemetryWriter(settings(influx.url), tmp_path)
    await second.start()
    await until(lambda: len(influx.lines) == 31)
    await second.stop()
    assert seqs(influx.lines) == list(range(30))
    assert influx.lines[-1].startswith("alarm_transition,")


async def test_report_fields_follow_the_schema(tmp_path, influx):
    # Nothing is written before stop(), so the writer's own counters below are exact.
    writer = TelemetryWriter(settings(influx.url, telemetry_flush_interval_s=60), tmp_path)
    await writer.start()
    valve = KitReport.model_validate(
        {
            "kind": "valve",
            "seq": 3,
            "event": "state_change",
            "ts": "2026-11-28T09:59:59.5Z",
            "battery_mv": 3600,
            "rssi_dbm": -60,
            "valve": {"state": "closed", "cause": "linked_alarm", "flags": ["motor_fault"]},
        }
    )
    writer.write_report(valve, T0, DeviceTags(SITE, "valve", "00c0ffee"))
    writer.write_site_summary(
        SITE, T0, kit_complete=False, devices_online=2, devices_offline=1, open_alarms=1
    )
    site_alarm = AlarmTransitionPoint(
        "gw1-01J", SITE, "", "kit_incomplete", "low", "normal", "unack_active", T0, "raised"
    )
    writer.write_alarm_transition(site_alarm)
    writer.write_gateway_metrics("gw1", T0, {"devices_online": 2, "loop_lag_s": 0.25})
    await writer.stop()
    assert influx.lines == [
        "kit_report,device_id=00c0ffee,district=chaoyang,kind=valve,site_id=site-1,"
        'site_type=restaurant battery_mv=3600i,device_time_ms=1795859999500i,event="state_change",'
        'flag_low_battery=0i,flag_motor_fault=1i,flag_position_fault=0i,flags="motor_fault",'
        'rssi_dbm=-60i,seq=3i,valve_cause="linked_alarm",valve_cause_code=2i,'
        'valve_state="closed",valve_state_code=1i 1795860000000000000',
        "site_summary,district=chaoyang,site_id=site-1,site_type=restaurant devices_offline=1i,"
        "devices_online=2i,kit_complete=0i,open_alarms=1i 1795860000000000000",
        "alarm_transition,alarm_type=kit_incomplete,district=chaoyang,severity=low,"
        'site_id=site-1,site_type=restaurant alarm_id="gw1-01J",from_state="normal",raised=1i,'
        'to_state="unack_active",transition="raised",transitions=1i 1795860000000000000',
        "gateway,gateway_id=gw1 devices_online=2i,loop_lag_s=0.25,telemetry_dropped=0i,"
        "telemetry_queued=3i,telemetry_rejected=0i,telemetry_spool_bytes=0i,telemetry_spooled=0i,"
        "telemetry_written=0i 1795860000000000000",
    ]


def test_settings_flags_and_env_layer_like_every_gasgate_setting(tmp_path, monkeypatch):
    class Gateway(GasgateSettings, TelemetrySettings):
        pass

    monkeypatch.setenv("GASGATE_INFLUX_TOKEN", "from-env")
    config = tmp_path / "gateway.yaml"
    config.write_text("influx-url: http://127.0.0.1:1\ninflux_bucket: file-bucket\n")
    loaded = Gateway.load(config, {"influx_bucket": "flag-bucket", "influx_org": None})
    assert loaded.influx_url == "http://127.0.0.1:1"
    assert loaded.influx_bucket == "flag-bucket"
    assert loaded.influx_org == "gasgate"
    assert loaded.influx_token is not None
    assert loaded.influx_token.get_secret_value() == "from-env"
    assert loaded.telemetry_enabled


async def test_a_damaged_spool_is_set_aside_and_telemetry_still_runs(tmp_path, influx, caplog):
    (tmp_path / SPOOL_FILE).write_bytes(b"this is not a SQLite database" * 100)
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    with caplog.at_level(logging.ERROR):
        await writer.start()
    writer.write_report(report(1), T0, DETECTOR)
    await until(lambda: len(influx.lines) == 1)
    await writer.stop()
    assert len(list(tmp_path.glob(f"{SPOOL_FILE}.damaged-*"))) == 1
    assert "spool unreadable" in caplog.text


async def test_points_before_start_are_counted_as_dropped(tmp_path, influx, caplog):
    writer = TelemetryWriter(settings(influx.url), tmp_path)
    writer.write_alarm_transition(transition(1))
    assert writer.stats().dropped == 1
    assert "writer not running" in caplog.text


@pytest.mark.parametrize("url", ["127.0.0.1:8086", "ftp://host", "http://"])
def test_an_influx_url_must_be_http(url):
    with pytest.raises(ValueError, match="not an http"):
        TelemetrySettings(influx_url=url)


def test_device_tags_come_from_the_registry_mapping():
    tags = {
        "site_id": "site-1",
        "district": "chaoyang",
        "site_type": "restaurant",
        "kind": "detector",
    }
    assert DeviceTags.of("1a2b3c4d", tags) == DETECTOR


def test_a_long_drain_reports_its_progress(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(telemetry_writer._DrainProgress, "EVERY_S", 0.0)
    progress = telemetry_writer._DrainProgress(total=3000)
    with caplog.at_level(logging.INFO, logger="gateway.telemetry.writer"):
        progress.update(1000, left=2000)
        progress.update(1000, left=1000)
    lines = [r.getMessage() for r in caplog.records]
    assert any("2000 of 3000 point(s) written, 1000 left" in line for line in lines), lines
