"""The registry's read API: in-memory, O(1) lookups for the hot path.

Built once from a :class:`RegistryData` at start, and again after an import (off the hot
path), then swapped in whole: a lookup sees one snapshot or the next, never a mix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class _Index:
    """One registry snapshot with its lookup tables, built once and never changed."""

    data: RegistryData
    generation: int
    kits: Mapping[str, KitDefinition]
    models: Mapping[str, DeviceModel]
    sites: Mapping[str, Site]
    components: Mapping[str, tuple[Component, ...]]
    contacts: Mapping[str, tuple[Contact, ...]]
    cylinders: Mapping[str, tuple[Cylinder, ...]]
    devices: Mapping[str, DeviceInfo]
    valves_for_detector: Mapping[str, tuple[str, ...]]
    valve_for_regulator: Mapping[str, str]
    kit_status: Mapping[str, KitStatus]


class Registry:
    """Lookups by device and site. Each method reads the current snapshot; :meth:`swap` (after
    an import) replaces it in one assignment, so a room holding this object sees the new
    registry from its next lookup on, and never a half-built one."""

    def __init__(self, data: RegistryData, generation: int = 0) -> None:
        self._s = _index(data, generation)

    @classmethod
    def empty(cls) -> Registry:
        return cls(RegistryData())

    @classmethod
    def load(cls, store: Store) -> Registry:
        """The stored registry (empty before the first import); migrates the room."""
        data, generation = tables.read(store)
        return cls(data, generation)

    def swap(self, other: Registry) -> None:
        """Take ``other``'s snapshot (built off the hot path: see ``RegistryWatch``)."""
        self._s = other._s

    @property
    def generation(self) -> int:
        """The import this snapshot came from (0: none); see ``tables.current_generation``."""
        return self._s.generation

    @property
    def data(self) -> RegistryData:
        return self._s.data

    @property
    def kits(self) -> Mapping[str, KitDefinition]:
        return self._s.kits

    # --- lookups (O(1)) -------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceInfo | None:
        return self._s.devices.get(device_id)

    def site(self, site_id: str) -> Site | None:
        return self._s.sites.get(site_id)

    def sites(self) -> tuple[Site, ...]:
        return self._s.data.sites

    def devices(self) -> tuple[DeviceInfo, ...]:
        return tuple(self._s.devices.values())

    def components(self, site_id: str) -> tuple[Component, ...]:
        return self._s.components.get(site_id, ())

    def cylinders(self, site_id: str) -> tuple[Cylinder, ...]:
        return self._s.cylinders.get(site_id, ())

    def contacts(self, site_id: str) -> tuple[Contact, ...]:
        """The site's contacts, the primary (sites.csv's contact_* columns) first."""
        return self._s.contacts.get(site_id, ())

    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]:
        """Every shut-off valve a leak at this detector must close."""
        return self._s.valves_for_detector.get(detector_id, ())

    def valve_for_regulator(self, regulator_id: str) -> str | None:
        return self._s.valve_for_regulator.get(regulator_id)

    def kit_status(self, site_id: str) -> KitStatus | None:
        return self._s.kit_status.get(site_id)

    def incomplete_kits(self) -> tuple[tuple[str, KitStatus], ...]:
        """(site_id, status) of every site whose kit lacks a component."""
        return tuple((s, k) for s, k in self._s.kit_status.items() if not k.complete)

    def tags(self, device_id: str) -> Mapping[str, str] | None:
        """Telemetry tags: site_id, district, site_type, kind. Built at each call: a dict per
        device held for the process's life costs more memory than building it costs time."""
        device = self._s.devices.get(device_id)
        return None if device is None else _tags(device, self._s.sites[device.site_id])

    # --- audits (a pass over the registry; not for the hot path) ---------------------------

    def past_service_life(self, on: date) -> tuple[ServiceFinding, ...]:
        """Components whose service life has ended on or before ``on``."""
        snapshot = self._s
        findings = []
        for component in snapshot.data.components:
            months = _service_life_months(snapshot, component)
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
        return _service_life_months(self._s, component)

    def inspection_overdue(self, on: date) -> tuple[Cylinder, ...]:
        """Cylinders whose periodic inspection was due before ``on``."""
        return tuple(c for c in self._s.data.cylinders if c.next_inspection_due < on)


# --- building ---------------------------------------------------------------------------------


def _index(data: RegistryData, generation: int) -> _Index:
    kits = MappingProxyType({**BUILTIN_KITS, **{k.name: k for k in data.kits}})
    models = MappingProxyType({m.name: m for m in data.models})
    components = _by_site(data.components)
    devices = {
        d.device_id: d for d in (_device(models, c) for c in data.components) if d is not None
    }
    return _Index(
        data=data,
        generation=generation,
        kits=kits,
        models=models,
        sites={s.site_id: s for s in data.sites},
        components=components,
        contacts=_by_site(data.contacts),
        cylinders=_by_site(data.cylinders),
        devices=devices,
        valves_for_detector=_valves_by_detector(data.components),
        valve_for_regulator={
            c.device_id: c.links[0]
            for c in data.components
            if c.component is ComponentType.SMART_REGULATOR and c.device_id and c.links
        },
        kit_status=_kit_statuses(data.sites, kits, components),
    )


def _tags(device: DeviceInfo, site: Site) -> Mapping[str, str]:
    return {
        "site_id": site.site_id,
        "district": site.district,
        "site_type": site.site_type.value,
        "kind": device.kind.value,
    }


def _model(models: Mapping[str, DeviceModel], component: Component) -> DeviceModel | None:
    model = models.get(component.model)
    return model if model is not None and model.component is component.component else None


def _service_life_months(snapshot: _Index, component: Component) -> int | None:
    site = snapshot.sites[component.site_id]
    model = _model(snapshot.models, component)
    lives = [
        component_service_life_months(component.component, site.site_type),
        model.service_life_months if model is not None else None,
    ]
    known = [m for m in lives if m is not None]
    return min(known) if known else None


def _device(models: Mapping[str, DeviceModel], component: Component) -> DeviceInfo | None:
    kind = component.component.device_kind
    if component.device_id is None or kind is None:
        return None
    model = _model(models, component)
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


def _kit_statuses(
    sites: Iterable[Site],
    kits: Mapping[str, KitDefinition],
    components: Mapping[str, tuple[Component, ...]],
) -> dict[str, KitStatus]:
    """Each site's kit status; sites with the same kit and the same parts share one object
    (most sites of a district are alike: 100,000 copies of one answer are memory for nothing)."""
    shared: dict[tuple[str, frozenset[ComponentType]], KitStatus] = {}
    statuses = {}
    for site in sites:
        present = frozenset(c.component for c in components.get(site.site_id, ()))
        status = shared.get((site.kit, present))
        if status is None:
            status = shared[site.kit, present] = _kit_status(kits[site.kit], present)
        statuses[site.site_id] = status
    return statuses


def _kit_status(kit: KitDefinition, present: frozenset[ComponentType]) -> KitStatus:
    missing: list[ComponentType | str] = []
    for alternatives in kit.requirements:
        if present.isdisjoint(alternatives):
            missing.append(alternatives[0] if len(alternatives) == 1 else " or ".join(alternatives))
    return KitStatus(not missing, tuple(missing))


def _by_site(records: Iterable[T]) -> dict[str, tuple[T, ...]]:
    """Records grouped by site; a site without any has no entry (its lookup gives ())."""
    grouped: dict[str, list[T]] = defaultdict(list)
    for record in records:
        grouped[record.site_id].append(record)
    return {site_id: tuple(group) for site_id, group in grouped.items()}


def _valves_by_detector(components: Iterable[Component]) -> dict[str, tuple[str, ...]]:
    valves: dict[str, list[str]] = defaultdict(list)
    for component in components:
        if component.component is ComponentType.SHUTOFF_VALVE and component.device_id:
            for detector in component.links:
                valves[detector].append(component.device_id)
    return {detector: tuple(ids) for detector, ids in valves.items()}
