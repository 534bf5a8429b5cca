"""The small interfaces escalation is given: the registry's read side, the alarms room's
operations and the linkage's valve states (``gateway.registry.Registry``,
``gateway.alarms.Alarms`` and ``gateway.linkage.Linkage`` satisfy them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol

from firmware_bridge.ksp import ValveState
from gateway.alarms import Refused
from gateway.model import Alarm
from gateway.registry.model import (
    Component,
    Contact,
    Cylinder,
    DeviceInfo,
    KitStatus,
    ServiceFinding,
    Site,
)

__all__ = ["AlarmDesk", "SiteDirectory", "ValveStates"]


class SiteDirectory(Protocol):
    def site(self, site_id: str) -> Site | None: ...

    def sites(self) -> Sequence[Site]: ...

    def contacts(self, site_id: str) -> Sequence[Contact]: ...

    def device(self, device_id: str) -> DeviceInfo | None: ...

    def devices(self) -> Sequence[DeviceInfo]: ...

    def kit_status(self, site_id: str) -> KitStatus | None: ...

    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]: ...

    def valve_for_regulator(self, regulator_id: str) -> str | None: ...

    # What the edge audit reads (gateway.audit.AuditRegistry), for the site summaries.
    def components(self, site_id: str) -> Sequence[Component]: ...

    def past_service_life(self, on: date) -> Sequence[ServiceFinding]: ...

    def inspection_overdue(self, on: date) -> Sequence[Cylinder]: ...


class AlarmDesk(Protocol):
    """What duty officers do over the gas company link."""

    def get(self, alarm_id: str) -> Alarm | None: ...

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused: ...

    def resolve(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused: ...


class ValveStates(Protocol):
    """The linkage room's knowledge of each valve (``gateway.linkage.Linkage``)."""

    def valve_state(self, valve_id: str) -> ValveState | None: ...
