"""The small interfaces escalation is given: the registry's read side and the alarms room's
operations (``gateway.registry.Registry`` and ``gateway.alarms.Alarms`` satisfy them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.alarms import Refused
from gateway.model import Alarm
from gateway.registry.model import Contact, DeviceInfo, KitStatus, Site

__all__ = ["AlarmDesk", "SiteDirectory"]


class SiteDirectory(Protocol):
    def site(self, site_id: str) -> Site | None: ...

    def sites(self) -> Sequence[Site]: ...

    def contacts(self, site_id: str) -> Sequence[Contact]: ...

    def devices(self) -> Sequence[DeviceInfo]: ...

    def kit_status(self, site_id: str) -> KitStatus | None: ...

    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]: ...

    def valve_for_regulator(self, regulator_id: str) -> str | None: ...


class AlarmDesk(Protocol):
    """What duty officers do over the gas company link."""

    def get(self, alarm_id: str) -> Alarm | None: ...

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused: ...

    def resolve(self, alarm_id: str, by: str, note: str | None = None) -> Alarm | Refused: ...
