"""The registry's domain types: pure, frozen, typed. No I/O here.

A *site* (a restaurant or household with bottled gas) has a *kit* (a named set of required
components), *components* (electronic ones carry a device id and report; passive ones only have
an install date for the coverage audit), *contacts*, and *cylinders*.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from firmware_bridge.ksp import DeviceKind

__all__ = [
    "Component",
    "ComponentType",
    "Contact",
    "Cylinder",
    "DeviceInfo",
    "DeviceModel",
    "KitDefinition",
    "KitStatus",
    "Lang",
    "Power",
    "Problem",
    "RegistryData",
    "ServiceFinding",
    "Severity",
    "Site",
    "SiteType",
    "add_months",
]


class SiteType(StrEnum):
    RESTAURANT = "restaurant"
    HOUSEHOLD = "household"
    OTHER = "other"


class Lang(StrEnum):
    """The language a contact is alerted in (Simplified Chinese by default)."""

    ZH = "zh"
    EN = "en"


class Power(StrEnum):
    MAINS = "mains"
    BATTERY = "battery"


class ComponentType(StrEnum):
    LEAK_DETECTOR = "leak_detector"
    SHUTOFF_VALVE = "shutoff_valve"
    SMART_REGULATOR = "smart_regulator"  # electronic over-flow regulator
    OVERFLOW_REGULATOR = "overflow_regulator"
    SELF_CLOSING_REGULATOR = "self_closing_regulator"
    METAL_HOSE = "metal_hose"
    FLAME_FAILURE_COOKER = "flame_failure_cooker"

    @property
    def device_kind(self) -> DeviceKind | None:
        """The KSP/1 / kit/v1 device kind of an electronic component, None for a passive one."""
        return _DEVICE_KINDS.get(self)

    @property
    def electronic(self) -> bool:
        return self in _DEVICE_KINDS


_DEVICE_KINDS = {
    ComponentType.LEAK_DETECTOR: DeviceKind.DETECTOR,
    ComponentType.SHUTOFF_VALVE: DeviceKind.VALVE,
    ComponentType.SMART_REGULATOR: DeviceKind.REGULATOR,
}


class Severity(StrEnum):
    ERROR = "error"  # blocks the import
    WARNING = "warning"  # reported, imported anyway


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in an import file, located at ``file:line:column`` (both 1-based;
    line 1 is a CSV header; column is the CSV column number of the bad field)."""

    file: str
    line: int
    column: int
    message: str
    code: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        warning = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.file}:{self.line}:{self.column}: {warning}{self.message} ({self.code})"


@dataclass(frozen=True, slots=True)
class Contact:
    site_id: str
    name: str
    phone: str
    lang: Lang = Lang.ZH
    role: str = ""


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    name: str
    site_type: SiteType
    kit: str
    district: str
    address: str
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class KitDefinition:
    """A named kit: each requirement is satisfied by any one of its alternatives
    (four_piece's "regulator with over-flow protection" is overflow_ or smart_regulator)."""

    name: str
    requirements: tuple[tuple[ComponentType, ...], ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class KitStatus:
    complete: bool
    # A single component, or "a or b" for a requirement with alternatives.
    missing: tuple[ComponentType | str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What a device model is: its component type, power, default reporting interval and
    service life (None where the model says nothing; the component's rule applies)."""

    name: str
    component: ComponentType
    power: Power | None
    report_interval_s: int | None
    service_life_months: int | None = None

    @property
    def kind(self) -> DeviceKind | None:
        return self.component.device_kind


@dataclass(frozen=True, slots=True)
class Component:
    """One fitted part of a site's kit. ``device_id`` is None for a passive part; ``links``
    are, for a shut-off valve, the detectors it closes for, for a smart regulator the valve
    it trips (one)."""

    site_id: str
    component: ComponentType
    device_id: str | None
    model: str
    installed_on: date
    links: tuple[str, ...] = ()
    report_interval_s: int | None = None  # None: the model's default


@dataclass(frozen=True, slots=True)
class Cylinder:
    site_id: str
    cylinder_id: str
    capacity_kg: float
    next_inspection_due: date


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Everything the hot path needs about one reporting device, resolved once at load."""

    device_id: str
    site_id: str
    component: ComponentType
    kind: DeviceKind
    model: str
    report_interval_s: int
    installed_on: date
    power: Power


@dataclass(frozen=True, slots=True)
class ServiceFinding:
    """A component past its service life on the audit date."""

    site_id: str
    component: ComponentType
    device_id: str | None
    model: str
    installed_on: date
    service_life_months: int
    expired_on: date = field(compare=False)


@dataclass(frozen=True, slots=True)
class RegistryData:
    """One whole registry snapshot, as imported and as stored: the custom kits and declared
    models beside the built-in ones, and every site's records."""

    sites: tuple[Site, ...] = ()
    contacts: tuple[Contact, ...] = ()
    components: tuple[Component, ...] = ()
    cylinders: tuple[Cylinder, ...] = ()
    kits: tuple[KitDefinition, ...] = ()
    models: tuple[DeviceModel, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            "sites": len(self.sites),
            "contacts": len(self.contacts),
            "components": len(self.components),
            "devices": sum(1 for c in self.components if c.device_id is not None),
            "cylinders": len(self.cylinders),
            "kits": len(self.kits),
            "models": len(self.models),
        }


def add_months(day: date, months: int) -> date:
    """``day`` plus whole calendar months, the day clamped to the month's end (31 Jan + 1 →
    28/29 Feb): a service life of N months ends on that date."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
