"""The registry's read API: an immutable, in-memory snapshot with O(1) lookups for the hot path.

Built once from a :class:`RegistryData` (at start, and again after an import: build a new
:class:`Registry` and swap the reference; a snapshot never changes under a reader).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from types import MappingProxyType
from typing import TypeVar

from gateway.registry import tables
from gateway.registry.catalog import BUILTIN_KITS, DEFAULT_MODELS, component_service_life_months
from gateway.registry.model import (
    Component,
    ComponentType,
    Contact,
    Cylinder,
    DeviceInfo,
    DeviceModel,
    KitDefinition,
    KitStatus,
    RegistryData,
    ServiceFinding,
    Site,
    add_months,
)
from gateway.store import Store

__all__ = ["Registry"]

T = TypeVar("T", Component, Contact, Cylinder)


class Registry:
    def __init__(self, data: RegistryData, generation: int = 0) -> None:
        #: The import this snapshot came from (0: none); see ``tables.current_generation``.
        self.generation = generation
        self.data = data
        self.kits: Mapping[str, KitDefinition] = MappingProxyType(
            {**BUILTIN_KITS, **{k.name: k for k in data.kits}}
        )
        self.models: Mapping[str, DeviceModel] = MappingProxyType({m.name: m for m in data.models})
        self._sites = {s.site_id: s for s in data.sites}
        self._components = _by_site(data.components, data.sites)
        self._contacts = _by_site(data.contacts, data.sites)
        self._cylinders = _by_site(data.cylinders, data.sites)
        self._devices = {
            d.device_id: d for d in (self._device(c) for c in data.components) if d is not None
        }
        self._tags = {
            d.device_id: MappingProxyType(
                {
                    "site_id": d.site_id,
                    "district": self._sites[d.site_id].district,
                    "site_type": self._sites[d.site_id].site_type.value,
                    "kind": d.kind.value,
                }
            )
            for d in self._devices.values()
        }
        self._valves_for_detector = _valves_by_detector(data.components)
        self._valve_for_regulator = {
            c.device_id: c.links[0]
            for c in data.components
            if c.component is ComponentType.SMART_REGULATOR and c.device_id and c.links
        }
        self._kit_status = {s.site_id: self._status(s) for s in data.sites}

    @classmethod
    def empty(cls) -> Registry:
        return cls(RegistryData())

    @classmethod
    def load(cls, store: Store) -> Registry:
        """The stored registry (empty before the first import); migrates the room."""
        data, generation = tables.read(store)
        return cls(data, generation)

    # --- lookups (O(1)) -------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def site(self, site_id: str) -> Site | None:
        return self._sites.get(site_id)

    def sites(self) -> tuple[Site, ...]:
        return self.data.sites

    def devices(self) -> tuple[DeviceInfo, ...]:
        return tuple(self._devices.values())

    def components(self, site_id: str) -> tuple[Component, ...]:
        return self._components.get(site_id, ())

    def cylinders(self, site_id: str) -> tuple[Cylinder, ...]:
        return self._cylinders.get(site_id, ())

    def contacts(self, site_id: str) -> tuple[Contact, ...]:
        """The site's contacts, the primary (sites.csv's contact_* columns) first."""
        return self._contacts.get(site_id, ())

    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]:
        """Every shut-off valve a leak at this detector must close."""
        return self._valves_for_detector.get(detector_id, ())

    def valve_for_regulator(self, regulator_id: str) -> str | None:
        return self._valve_for_regulator.get(regulator_id)

    def kit_status(self, site_id: str) -> KitStatus | None:
        return self._kit_status.get(site_id)

    def incomplete_kits(self) -> tuple[tuple[str, KitStatus], ...]:
        """(site_id, status) of every site whose kit lacks a component."""
        return tuple((s, k) for s, k in self._kit_status.items() if not k.complete)

    def tags(self, device_id: str) -> Mapping[str, str] | None:
        """Telemetry tags: site_id, district, site_type, kind."""
        return self._tags.get(device_id)

    # --- audits (a pass over the registry; not for the hot path) ---------------------------

    def past_service_life(self, on: date) -> tuple[ServiceFinding, ...]:
        """Components whose service life has ended on or before ``on``."""
        findings = []
        for component in self.data.components:
            months = self.service_life_months(component)
            if months is None:
                continue
            expired_on = add_months(component.installed_on, months)
            if expired_on <= on:
                findings.append(
                    ServiceFinding(
                        component.site_id,
                        component.component,
                        component.device_id,
                        component.model,
                        component.installed_on,
                        months,
                        expired_on,
                    )
                )
        return tuple(findings)

    def service_life_months(self, component: Component) -> int | None:
        """The shorter of the safety rule for this component at its kind of site and the
        model's own service life (either may be absent)."""
        site = self._sites[component.site_id]
        model = self._model(component)
        lives = [
            component_service_life_months(component.component, site.site_type),
            model.service_life_months if model is not None else None,
        ]
        known = [m for m in lives if m is not None]
        return min(known) if known else None

    def inspection_overdue(self, on: date) -> tuple[Cylinder, ...]:
        """Cylinders whose periodic inspection was due before ``on``."""
        return tuple(c for c in self.data.cylinders if c.next_inspection_due < on)

    # --- building -------------------------------------------------------------------------

    def _model(self, component: Component) -> DeviceModel | None:
        model = self.models.get(component.model)
        return model if model is not None and model.component is component.component else None

    def _device(self, component: Component) -> DeviceInfo | None:
        kind = component.component.device_kind
        if component.device_id is None or kind is None:
            return None
        model = self._model(component)
        if model is None or model.power is None or model.report_interval_s is None:
            model = DEFAULT_MODELS[component.component]  # (validation warned about it)
        if model.power is None or model.report_interval_s is None:
            raise AssertionError(f"{model.name}: a default model without power or interval")
        return DeviceInfo(
            component.device_id,
            component.site_id,
            component.component,
            kind,
            component.model,
            component.report_interval_s or model.report_interval_s,
            component.installed_on,
            model.power,
        )

    def _status(self, site: Site) -> KitStatus:
        present = {c.component for c in self.components(site.site_id)}
        missing: list[ComponentType | str] = []
        for alternatives in self.kits[site.kit].requirements:
            if present.isdisjoint(alternatives):
                missing.append(
                    alternatives[0] if len(alternatives) == 1 else " or ".join(alternatives)
                )
        return KitStatus(not missing, tuple(missing))


def _by_site(records: Iterable[T], sites: Iterable[Site]) -> dict[str, tuple[T, ...]]:
    grouped: dict[str, list[T]] = defaultdict(list)
    for record in records:
        grouped[record.site_id].append(record)
    return {site.site_id: tuple(grouped.get(site.site_id, ())) for site in sites}


def _valves_by_detector(components: Iterable[Component]) -> dict[str, tuple[str, ...]]:
    valves: dict[str, list[str]] = defaultdict(list)
    for component in components:
        if component.component is ComponentType.SHUTOFF_VALVE and component.device_id:
            for detector in component.links:
                valves[detector].append(component.device_id)
    return {detector: tuple(ids) for detector, ids in valves.items()}
