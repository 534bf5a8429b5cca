from __future__ import annotations

import contextlib
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.metrics import CONTENT_TYPE, GatewayMetrics


@contextlib.contextmanager
def serve(metrics: GatewayMetrics) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def metrics_url(metrics: GatewayMetrics) -> Iterator[str]:
    with serve(metrics) as url:
        yield url


def scrape(url: str) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"] == CONTENT_TYPE
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    [match] = [s.value for s in samples if s.name == name and s.labels == labels]
    return match


def test_every_family_is_scraped_with_its_values(metrics: GatewayMetrics, metrics_url: str) -> None:
    metrics.reports.labels(kind="detector").inc(3)
    metrics.rejected.labels(reason="invalid").inc()
    metrics.rejected.labels(reason="unknown_device").inc(2)
    metrics.alarms.labels(state="unack_active").set(2)
    metrics.alarm_transitions.labels(transition="raised").inc()
    metrics.outbox_depth.labels(destination="gasco").set(7)
    metrics.spool_depth.labels(spool="telemetry").set(120)
    metrics.set_link("site_mqtt", up=True)
    metrics.set_link("gasco_mqtt", up=False)
    metrics.report_to_valve_command.observe(0.004)
    metrics.report_to_alarm_event.observe(0.2)

    families = scrape(metrics_url)

    assert value(families["gasgate_reports"], "gasgate_reports_total", kind="detector") == 3
    rejected = families["gasgate_rejected"]
    assert value(rejected, "gasgate_rejected_total", reason="invalid") == 1
    assert value(rejected, "gasgate_rejected_total", reason="unknown_device") == 2
    assert value(families["gasgate_alarms"], "gasgate_alarms", state="unack_active") == 2
    transitions = families["gasgate_alarm_transitions"]
    assert value(transitions, "gasgate_alarm_transitions_total", transition="raised") == 1
    outbox = families["gasgate_outbox_depth"]
    assert value(outbox, "gasgate_outbox_depth", destination="gasco") == 7
    assert value(families["gasgate_spool_depth"], "gasgate_spool_depth", spool="telemetry") == 120
    links = families["gasgate_link_up"]
    assert value(links, "gasgate_link_up", link="site_mqtt") == 1
    assert value(links, "gasgate_link_up", link="gasco_mqtt") == 0
    valve = families["gasgate_report_to_valve_command_seconds"]
    name = "gasgate_report_to_valve_command_seconds_bucket"
    assert value(valve, name, le="0.0025") == 0
    assert value(valve, name, le="0.005") == 1
    alarm = families["gasgate_report_to_alarm_event_seconds"]
    assert value(alarm, "gasgate_report_to_alarm_event_seconds_count") == 1
    assert value(alarm, "gasgate_report_to_alarm_event_seconds_sum") == pytest.approx(0.2)


def test_two_gateways_in_one_process_do_not_share_series() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # a global registry would refuse this
    first.reports.labels(kind="valve").inc()
    with serve(second) as url:
        families = scrape(url)
    assert families["gasgate_reports"] == []
    assert b'gasgate_reports_total{kind="valve"} 1.0' in first.render()


def test_every_family_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    families = list(GatewayMetrics().registry.collect())
    assert len(families) == 9
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"| `{name}` |" in docs, f"{name} is missing from docs/operations.md"
