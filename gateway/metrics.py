"""The gateway's Prometheus metrics: one registry per gateway process, rendered for ``/metrics``.

Rooms are handed the one :class:`GatewayMetrics` and update its families directly with the
prometheus-client API (``metrics.reports.labels(kind="detector").inc()``). The registry is the
instance's own, not prometheus-client's global one, so two gateways in one test process (or one
test after another) never share or collide on a series. docs/operations.md lists the families.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_S", "GatewayMetrics"]

# The classic text format: every Prometheus and VictoriaMetrics version scrapes it.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
# The safety path is judged in milliseconds (a valve command well inside 100 ms of the report),
# notifications in seconds (the site is called within 3 s): buckets cover both ends.
LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class GatewayMetrics:
    """Every family the gateway exports; constructing one registers them in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._refreshers: list[Callable[[], None]] = []
        r = self.registry
        self.reports = Counter(
            "gasgate_reports", "Kit reports accepted, by device kind", ["kind"], registry=r
        )
        self.rejected = Counter(
            "gasgate_rejected",
            "Inputs rejected (bad payload, unknown device, duplicate...), by reason code",
            ["reason"],
            registry=r,
        )
        self.alarms = Gauge(
            "gasgate_alarms", "Open alarms, by lifecycle state", ["state"], registry=r
        )
        self.alarm_transitions = Counter(
            "gasgate_alarm_transitions",
            "Alarm state changes (raised, cleared, acknowledged...), by transition",
            ["transition"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "gasgate_outbox_depth",
            "Escalation messages waiting for delivery, by destination",
            ["destination"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "gasgate_spool_depth",
            "Lines waiting on disk for a store that is down, by spool",
            ["spool"],
            registry=r,
        )
        self.link_up = Gauge(
            "gasgate_link_up",
            "1 while a link (site broker, gas company broker, InfluxDB, receiver) is up, else 0",
            ["link"],
            registry=r,
        )
        self.report_to_valve_command = Histogram(
            "gasgate_report_to_valve_command_seconds",
            "From receiving a leak report to publishing the close-valve command",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.report_to_alarm_event = Histogram(
            "gasgate_report_to_alarm_event_seconds",
            "From receiving a report to publishing the alarm event it raised",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

    def on_collect(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` before each render: gauges read at scrape time, never stale."""
        self._refreshers.append(refresh)

    def set_link(self, link: str, up: bool) -> None:
        self.link_up.labels(link=link).set(1 if up else 0)

    def render(self) -> bytes:
        """The registry in Prometheus text format; serve it with :data:`CONTENT_TYPE`."""
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)
