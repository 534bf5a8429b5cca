"""The telemetry room: what travels on the bus, into the writer.

Reports and alarm transitions as they happen; every ``summary_interval_s`` one summary point per
site (kit complete, devices online/offline, open alarms: the coverage dashboard) and the
gateway's own counts. The writer only queues, so nothing here waits on InfluxDB.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.events import AlarmChanged, ReportReceived
from gateway.model import Alarm, AlarmState
from gateway.registry import Registry
from gateway.telemetry.schema import AlarmTransitionPoint, DeviceTags, SiteTags
from gateway.telemetry.writer import TelemetryWriter

__all__ = ["TelemetryFeed"]

log = logging.getLogger(__name__)


class _Online(Protocol):
    def online(self, device_id: str) -> bool | None: ...


class _OpenAlarms(Protocol):
    def open_alarms(self) -> list[Alarm]: ...


class TelemetryFeed:
    def __init__(
        self,
        bus: Bus,
        writer: TelemetryWriter,
        registry: Registry,
        supervision: _Online,
        alarms: _OpenAlarms,
        *,
        clock: Clock,
        gateway_id: str,
        summary_interval_s: float = 60.0,
    ) -> None:
        self._bus = bus
        self._writer = writer
        self._registry = registry
        self._supervision = supervision
        self._alarms = alarms
        self._clock = clock
        self._gateway_id = gateway_id
        self._interval = summary_interval_s
        self._states: dict[str, AlarmState] = {}  # open alarms' last state: the "from" side
        self._timer: Timer | None = None

    async def start(self) -> None:
        for alarm in self._alarms.open_alarms():
            self._states[alarm.alarm_id] = alarm.state
        self._bus.subscribe(ReportReceived, self._on_report, name="telemetry.report")
        self._bus.subscribe(AlarmChanged, self._on_alarm, name="telemetry.alarm")
        self._timer = self._clock.call_later(self._interval, self._on_timer)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_report(self, event: ReportReceived) -> None:
        tags = self._registry.tags(event.device_id)
        if tags is not None:  # ingest lets only registered devices through
            self._writer.write_report(
                event.report, event.received_at, DeviceTags.of(event.device_id, tags)
            )

    def _on_alarm(self, event: AlarmChanged) -> None:
        alarm = event.alarm
        before = self._states.get(alarm.alarm_id, AlarmState.NORMAL)
        if alarm.state.is_open:
            self._states[alarm.alarm_id] = alarm.state
        else:
            self._states.pop(alarm.alarm_id, None)
        self._writer.write_alarm_transition(
            AlarmTransitionPoint(
                alarm.alarm_id,
                self._site_tags(alarm.site_id),
                alarm.device_id or "",
                alarm.alarm_type,
                alarm.severity.value,
                before.value,
                alarm.state.value,
                alarm.updated_at,
                event.transition.value,
            )
        )

    def _site_tags(self, site_id: str | None) -> SiteTags:
        site = self._registry.site(site_id) if site_id else None
        if site is None:
            return SiteTags(site_id or "")
        return SiteTags(site.site_id, site.district, str(site.site_type))

    def _on_timer(self) -> None:
        try:
            self.write_summaries()
        except Exception:  # a bug here must not end the summaries for good
            log.exception("telemetry: site summaries failed")
        self._timer = self._clock.call_later(self._interval, self._on_timer)

    def write_summaries(self) -> None:
        """One summary point per site and one for the gateway, stamped now."""
        at = self._clock.now()
        online: Counter[str] = Counter()
        offline: Counter[str] = Counter()
        for device in self._registry.devices():
            state = self._supervision.online(device.device_id)
            (offline if state is False else online)[device.site_id] += 1
        open_by_site = Counter(a.site_id for a in self._alarms.open_alarms() if a.site_id)
        for site in self._registry.sites():
            kit = self._registry.kit_status(site.site_id)
            self._writer.write_site_summary(
                SiteTags(site.site_id, site.district, str(site.site_type)),
                at,
                kit_complete=kit is not None and kit.complete,
                devices_online=online[site.site_id],
                devices_offline=offline[site.site_id],
                open_alarms=open_by_site[site.site_id],
            )
        self._writer.write_gateway_metrics(
            self._gateway_id,
            at,
            {
                "devices_online": sum(online.values()),
                "devices_offline": sum(offline.values()),
                "open_alarms": sum(open_by_site.values()),
                "bus_backlog": self._bus.backlog,
            },
        )
