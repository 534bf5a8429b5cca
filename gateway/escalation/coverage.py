"""What escalation knows about the kits themselves: the alarm's linked valves and their state
(from the linkage room), each device's availability (from the bus), and the per-site summary the
gas company's coverage view gets (docs/schemas/gasco-site-summary.schema.json), with the edge
audit's verdict on each site (:class:`gateway.audit.Findings`: the same words, decided once)."""

from __future__ import annotations

import json
from typing import Any

from firmware_bridge.ksp import DeviceKind
from gateway.audit import Findings
from gateway.bus import Bus
from gateway.clock import Clock
from gateway.escalation.payloads import site_summary
from gateway.escalation.ports import SiteDirectory, ValveStates
from gateway.events import DeviceAvailabilityChanged
from gateway.model import Alarm
from gateway.store import Store

__all__ = ["Coverage"]

_OPEN_ALARM_FIELDS = ("alarm_id", "alarm_type", "severity", "state", "raised_at")


class Coverage:
    """Constructing it does nothing; :meth:`start` subscribes to device availability. Open
    alarms are read from the escalation room's ``escalation_alarm`` table. Without ``valves``
    (no linkage room) every valve's state is ``unknown``."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        clock: Clock,
        registry: SiteDirectory,
        *,
        valves: ValveStates | None,
        gateway_id: str,
    ) -> None:
        self._bus = bus
        self._store = store
        self._clock = clock
        self._registry = registry
        self._gateway_id = gateway_id
        self._valves = valves
        self._online: dict[str, bool] = {}

    async def start(self) -> None:
        self._bus.subscribe(
            DeviceAvailabilityChanged, self._on_availability, name="escalation.availability"
        )

    async def stop(self) -> None:
        """Nothing to release: the bus outlives the rooms."""

    def _on_availability(self, event: DeviceAvailabilityChanged) -> None:
        self._online[event.device_id] = event.online

    def valve_states(self, alarm: Alarm) -> dict[str, str]:
        """The alarm's linked shut-off valves → last reported state (``unknown`` before any);
        for an alarm about a valve itself (valve failed to close), that valve."""
        device = alarm.device_id
        if device is None:
            return {}
        ids = list(self._registry.valves_for_detector(device))
        regulator_valve = self._registry.valve_for_regulator(device)
        if regulator_valve:
            ids.append(regulator_valve)
        info = self._registry.device(device)
        if not ids and info is not None and info.kind is DeviceKind.VALVE:
            ids = [device]
        return {d: self._state(d) for d in ids}

    def _state(self, valve_id: str) -> str:
        state = self._valves.valve_state(valve_id) if self._valves else None
        return state.value if state is not None else "unknown"

    def summaries(self) -> list[dict[str, Any]]:
        """One summary per registered site."""
        open_alarms: dict[str, list[dict[str, Any]]] = {}
        for site_id, snapshot in self._store.db.execute(
            "SELECT site_id, snapshot FROM escalation_alarm WHERE is_open = 1 ORDER BY alarm_id"
        ):
            alarm = json.loads(snapshot)
            open_alarms.setdefault(site_id, []).append({k: alarm[k] for k in _OPEN_ALARM_FIELDS})
        devices: dict[str, list[str]] = {}
        for device in self._registry.devices():
            devices.setdefault(device.site_id, []).append(device.device_id)
        now = self._clock.now()
        findings = Findings(self._registry, self._store, now)
        out = []
        for site in self._registry.sites():
            ids = devices.get(site.site_id, [])
            counts = {
                "total": len(ids),
                "online": sum(1 for d in ids if self._online.get(d) is True),
                "offline": sum(1 for d in ids if self._online.get(d) is False),
            }
            out.append(
                site_summary(
                    site,
                    gateway_id=self._gateway_id,
                    kit=self._registry.kit_status(site.site_id),
                    devices=counts,
                    open_alarms=open_alarms.get(site.site_id, []),
                    condition=findings.site(site.site_id),
                    at=now,
                )
            )
        return out
