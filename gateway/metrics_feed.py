"""The metrics room: what the gateway does, counted into its Prometheus families.

Counters follow the bus (reports, rejections, alarm transitions). The two latency histograms are
observed when a raised alarm reaches this room, which subscribes after the linkage and the
escalation: by then the close-valve commands are queued on the site MQTT client and the alarm
event is in the outbox, so "report → valve command" is measured to the command handed over for
sending. Gauges (open alarms, queue depths, links) are read when /metrics is scraped, not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from firmware_bridge.ksp import DeviceKind
from gateway.alarm_types import AlarmType, info
from gateway.bus import Bus
from gateway.clock import Clock
from gateway.events import AlarmChanged, InputRejected, ReceiverStatusChanged, ReportReceived
from gateway.metrics import GatewayMetrics
from gateway.model import Alarm, AlarmState, Transition

__all__ = ["MetricsFeed"]

_RAISES = frozenset({Transition.RAISED, Transition.REACTIVATED})


class _OpenAlarms(Protocol):
    def open_alarms(self) -> list[Alarm]: ...


class MetricsFeed:
    def __init__(
        self,
        bus: Bus,
        metrics: GatewayMetrics,
        alarms: _OpenAlarms,
        clock: Clock,
        gauges: Mapping[str, Callable[[], Mapping[str, float]]],
    ) -> None:
        """``gauges``: family name (``outbox_depth``, ``spool_depth``, ``link_up``) → a function
        giving that family's current value per label, read at each scrape."""
        self._bus = bus
        self._metrics = metrics
        self._alarms = alarms
        self._clock = clock
        self._gauges = gauges
        self._last_report: dict[str, float] = {}  # device → monotonic time of its last report
        # Each kind's counter child, looked up once: labels() on every report cost ~2 µs.
        self._reports_of_kind = {k: metrics.reports.labels(kind=k.value) for k in DeviceKind}
        self._receivers: dict[str, bool] = {}

    async def start(self) -> None:
        self._bus.subscribe(ReportReceived, self._on_report, name="metrics.report")
        self._bus.subscribe(InputRejected, self._on_rejected, name="metrics.rejected")
        self._bus.subscribe(AlarmChanged, self._on_alarm, name="metrics.alarm")
        self._bus.subscribe(ReceiverStatusChanged, self._on_receiver, name="metrics.receiver")
        self._metrics.on_collect(self._refresh)

    async def stop(self) -> None:
        """Nothing to release: the families stay readable until the process ends."""

    def _on_report(self, event: ReportReceived) -> None:
        self._reports_of_kind[event.report.kind].inc()
        self._last_report[event.device_id] = event.received_mono

    def _on_rejected(self, event: InputRejected) -> None:
        self._metrics.rejected.labels(reason=event.reason).inc()

    def _on_receiver(self, event: ReceiverStatusChanged) -> None:
        self._receivers[event.bridge_id] = event.status.online

    def _on_alarm(self, event: AlarmChanged) -> None:
        self._metrics.alarm_transitions.labels(transition=event.transition.value).inc()
        alarm = event.alarm
        reported = self._last_report.get(alarm.device_id or "")
        if event.transition not in _RAISES or reported is None:
            return
        elapsed = max(self._clock.monotonic() - reported, 0.0)
        self._metrics.report_to_alarm_event.observe(elapsed)
        if _closes_valves(alarm.alarm_type):
            self._metrics.report_to_valve_command.observe(elapsed)

    def _refresh(self) -> None:
        m = self._metrics
        by_state = dict.fromkeys((s.value for s in AlarmState if s.is_open), 0)
        for alarm in self._alarms.open_alarms():
            by_state[alarm.state.value] += 1
        for state, count in by_state.items():
            m.alarms.labels(state=state).set(count)
        for destination, depth in self._gauges["outbox_depth"]().items():
            m.outbox_depth.labels(destination=destination).set(depth)
        for spool, depth in self._gauges["spool_depth"]().items():
            m.spool_depth.labels(spool=spool).set(depth)
        receivers = {f"receiver:{bridge}": up for bridge, up in self._receivers.items()}
        for link, up in {**self._gauges["link_up"](), **receivers}.items():
            m.set_link(link, bool(up))


def _closes_valves(alarm_type: str) -> bool:
    try:
        return info(AlarmType(alarm_type)).closes_valves
    except ValueError:
        return False
