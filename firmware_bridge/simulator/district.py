"""A deterministic district of kit sites: restaurants with four-piece kits, households with
two-piece kits and a wireless alarm, as the registry lists them and as simulated devices.

``District.generate(seed=...)`` always builds the same district for the same arguments, so a
registry written by :meth:`District.write_registry` matches the devices a test or demo runs.

Registry layout (the importer reads exactly this; UTF-8 CSV with a header row):

* ``sites.csv``: site_id, name, site_type, kit, district, address, contact_name, contact_phone,
  contact_lang
* ``components.csv``: site_id, component, device_id, model, installed_on, links,
  report_interval_s
* ``cylinders.csv``: site_id, cylinder_id, capacity_kg, next_inspection_due
* ``models.csv``: model, component, power, report_interval_s (the registry importer's optional
  table, so it knows each model's power and interval)
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector, SimDevice, SimRegulator, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice
from firmware_bridge.simulator.receiver import CAPACITY, SimReceiver
from gateway.registry.files import TABLES

__all__ = [
    "COMPONENTS_HEADER",
    "CYLINDERS_HEADER",
    "LOCATION_COLUMNS",
    "MODELS_HEADER",
    "SITES_HEADER",
    "ComponentName",
    "ComponentRow",
    "Cylinder",
    "District",
    "SimSite",
    "SiteType",
]

# The columns the registry importer reads (gateway/registry/files.py is the one definition);
# the district fills the required ones, the optional report interval and, when its sites have
# one, their location.
SITES_HEADER = TABLES["sites"].required
LOCATION_COLUMNS = TABLES["sites"].optional  # latitude, longitude
COMPONENTS_HEADER = TABLES["components"].columns
CYLINDERS_HEADER = TABLES["cylinders"].required
MODELS_HEADER = TABLES["models"].required

SiteType = Literal["restaurant", "household", "other"]
# A radio device's registry id is its KSP/1 id in 8 lowercase hex digits (as the bridge
# publishes it); any other id is an MQTT-native device.
_RADIO_ID = re.compile(r"[0-9a-f]{8}")
ComponentName = Literal[
    "leak_detector",
    "shutoff_valve",
    "smart_regulator",
    "overflow_regulator",
    "self_closing_regulator",
    "metal_hose",
    "flame_failure_cooker",
]

_DISTRICTS = ("东城区", "西城区", "南湖区", "北塘区", "江滨区")
_STREETS = ("解放路", "人民路", "中山路", "建设路", "和平街", "胜利路", "文化路", "新华街")
_SHOPS = ("老王", "福满楼", "湘味", "川香", "粤港", "金记", "好再来", "东北人家", "小南国", "兰州")
_TRADES = ("川菜馆", "饭店", "酒家", "面馆", "火锅店", "小吃店", "大排档", "烧烤店")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰")
_INSTALLED_FROM = date(2020, 1, 1)  # fixed dates: the district is the same whatever the day
_INSTALLED_DAYS = 2495  # .. 2026-10-31
_DUE_FROM = date(2025, 12, 1)  # some cylinders overdue for inspection by late 2026
_DUE_DAYS = 1460
# The fictional models the district uses, declared in models.csv so the registry knows their
# power and reporting interval: (model, component, power, report_interval_s).
_MODELS = (
    ("KD-210C", "leak_detector", "mains", "60"),
    ("KD-110W", "leak_detector", "battery", "600"),
    ("SV-25E", "shutoff_valve", "mains", "60"),
    ("SV-15W", "shutoff_valve", "battery", "600"),
    ("RG-28S", "smart_regulator", "mains", "60"),
    ("RG-28P", "overflow_regulator", "", ""),
    ("ZB-28H", "self_closing_regulator", "", ""),
    ("MH-1500", "metal_hose", "", ""),
    ("MH-1200", "metal_hose", "", ""),
)


@dataclass(frozen=True, slots=True)
class ComponentRow:
    site_id: str
    component: ComponentName
    device_id: str  # empty for passive parts
    model: str
    installed_on: date
    links: tuple[str, ...] = ()
    report_interval_s: int | None = None

    def csv_row(self) -> list[str]:
        interval = "" if self.report_interval_s is None else str(self.report_interval_s)
        return [
            self.site_id,
            self.component,
            self.device_id,
            self.model,
            self.installed_on.isoformat(),
            " ".join(self.links),
            interval,
        ]


@dataclass(frozen=True, slots=True)
class Cylinder:
    site_id: str
    cylinder_id: str
    capacity_kg: int
    next_inspection_due: date

    def csv_row(self) -> list[str]:
        due = self.next_inspection_due.isoformat()
        return [self.site_id, self.cylinder_id, str(self.capacity_kg), due]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.5f}"


@dataclass(slots=True)
class SimSite:
    site_id: str
    name: str
    site_type: SiteType
    kit: str  # four_piece, two_piece, or an integrator's own kit
    district: str
    address: str
    contact_name: str
    contact_phone: str
    contact_lang: Literal["zh", "en"]
    components: list[ComponentRow] = field(default_factory=list)
    cylinders: list[Cylinder] = field(default_factory=list)
    devices: dict[str, SimDevice] = field(default_factory=dict)  # registry device_id → device
    mqtt_native: bool = False  # every electronic part is MQTT-native (no radio device)
    latitude: float | None = None  # the registry's optional location (a map at the center)
    longitude: float | None = None

    @property
    def radio_devices(self) -> list[SimDevice]:
        return [d for ident, d in self.devices.items() if _RADIO_ID.fullmatch(ident)]

    def csv_row(self, located: bool = False) -> list[str]:
        """The ``sites.csv`` row; ``located``: with the location columns (empty if unknown)."""
        where = [_cell(self.latitude), _cell(self.longitude)] if located else []
        return [
            self.site_id,
            self.name,
            self.site_type,
            self.kit,
            self.district,
            self.address,
            self.contact_name,
            self.contact_phone,
            self.contact_lang,
            *where,
        ]

    @property
    def detector(self) -> SimDetector:
        found = next((d for d in self.devices.values() if isinstance(d, SimDetector)), None)
        if found is None:  # a registry's site may have none: scenarios pass it over
            raise LookupError(f"site {self.site_id} has no leak detector")
        return found

    @property
    def valve(self) -> SimValve | None:
        return next((d for d in self.devices.values() if isinstance(d, SimValve)), None)

    @property
    def regulator(self) -> SimRegulator | None:
        return next((d for d in self.devices.values() if isinstance(d, SimRegulator)), None)


@dataclass(slots=True)
class _Builder:
    """Draws every random value of the district, in a fixed order, from one seeded generator."""

    rng: random.Random
    time_scale: float
    used_ids: set[int] = field(default_factory=set)
    used_names: set[str] = field(default_factory=set)

    def device_id(self) -> int:
        while True:
            value = self.rng.randrange(1, 0xFFFF_FFFF)
            if value not in self.used_ids:
                self.used_ids.add(value)
                return value

    def day(self, start: date, days: int) -> date:
        return start + timedelta(days=self.rng.randrange(days))

    def person(self) -> str:
        return self.rng.choice(_SURNAMES) + self.rng.choice(_GIVEN)

    def phone(self) -> str:
        return self.rng.choice(("138", "139", "137")) + f"{self.rng.randrange(10**8):08d}"

    def shop_name(self) -> str:
        name = self.rng.choice(_SHOPS) + self.rng.choice(_TRADES)
        branch = 1
        unique = name
        while unique in self.used_names:
            branch += 1
            unique = f"{name}{branch}号店"
        self.used_names.add(unique)
        return unique

    def street(self) -> tuple[str, str]:
        district = self.rng.choice(_DISTRICTS)
        return district, f"{district}{self.rng.choice(_STREETS)}{self.rng.randrange(1, 400)}号"

    def site(self, site_id: str, name: str, site_type: SiteType) -> SimSite:
        district, street = self.street()
        contact = self.person()
        if site_type == "household":
            name = f"{contact}家"
            street += f"{self.rng.randrange(1, 30)}栋{self.rng.randrange(1, 4)}单元"
            street += f"{self.rng.randrange(1, 19)}0{self.rng.randrange(1, 5)}室"
        return SimSite(
            site_id=site_id,
            name=name,
            site_type=site_type,
            kit="four_piece" if site_type == "restaurant" else "two_piece",
            district=district,
            address=street,
            contact_name=contact,
            contact_phone=self.phone(),
            contact_lang="en" if self.rng.random() < 0.08 else "zh",
            mqtt_native=self.rng.random() < (0.2 if site_type == "restaurant" else 0.1),
        )

    def electronic(
        self,
        site: SimSite,
        component: ComponentName,
        device: SimDevice,
        *,
        role: str,
        model: str,
        links: tuple[str, ...] = (),
    ) -> str:
        """Add an electronic part; returns its registry device id."""
        ident = f"mq-{site.site_id}-{role}" if site.mqtt_native else device.id_hex
        site.devices[ident] = device
        # The interval the device really keeps (scaled in a fast district), so the gateway's
        # offline detection runs on the district's clock, not on three real minutes.
        interval = max(1, round(device.scaled(device.interval_s)))
        installed = self.day(_INSTALLED_FROM, _INSTALLED_DAYS)
        site.components.append(
            ComponentRow(site.site_id, component, ident, model, installed, links, interval)
        )
        return ident

    def passive(self, site: SimSite, component: ComponentName, model: str) -> None:
        installed = self.day(_INSTALLED_FROM, _INSTALLED_DAYS)
        site.components.append(ComponentRow(site.site_id, component, "", model, installed))

    def cylinders(self, site: SimSite, count: int, sizes: Sequence[int]) -> None:
        for n in range(1, count + 1):
            due = self.day(_DUE_FROM, _DUE_DAYS)
            cylinder = Cylinder(site.site_id, f"{site.site_id}-c{n}", self.rng.choice(sizes), due)
            site.cylinders.append(cylinder)

    def restaurant(self, number: int) -> SimSite:
        site = self.site(f"rest-{number:02d}", self.shop_name(), "restaurant")
        scale = self.time_scale
        detector = SimDetector(self.device_id(), battery_mv=0, time_scale=scale)
        valve = SimValve(self.device_id(), time_scale=scale)
        valve.link_to(detector)
        det_id = self.electronic(site, "leak_detector", detector, role="det", model="KD-210C")
        valve_id = self.electronic(
            site, "shutoff_valve", valve, role="valve", model="SV-25E", links=(det_id,)
        )
        if self.rng.random() < 0.1:  # an older kit: a plain over-flow regulator, no electronics
            self.passive(site, "overflow_regulator", "RG-28P")
        else:
            regulator = SimRegulator(self.device_id(), time_scale=scale)
            valve.link_to(regulator)
            self.electronic(
                site, "smart_regulator", regulator, role="reg", model="RG-28S", links=(valve_id,)
            )
        self.passive(site, "metal_hose", "MH-1500")
        self.cylinders(site, self.rng.randrange(2, 4), (15, 50))
        return site

    def household(self, number: int) -> SimSite:
        site = self.site(f"home-{number:03d}", "", "household")
        self.passive(site, "self_closing_regulator", "ZB-28H")
        if self.rng.random() >= 0.06:  # a few still have the old rubber hose: kit incomplete
            self.passive(site, "metal_hose", "MH-1200")
        battery = self.rng.randrange(2700, 3300)
        detector = SimDetector(self.device_id(), battery_mv=battery, time_scale=self.time_scale)
        det_id = self.electronic(site, "leak_detector", detector, role="det", model="KD-110W")
        if self.rng.random() < 0.3:
            valve = SimValve(self.device_id(), battery_mv=3600, time_scale=self.time_scale)
            valve.link_to(detector)
            self.electronic(
                site, "shutoff_valve", valve, role="valve", model="SV-15W", links=(det_id,)
            )
        self.cylinders(site, 1, (5, 15))
        return site


class District:
    """Sites with their kits, registry rows and simulated devices."""

    def __init__(self, sites: list[SimSite], *, time_scale: float = 1.0) -> None:
        self.sites = sites
        self.time_scale = time_scale

    @classmethod
    def generate(
        cls, restaurants: int = 20, households: int = 50, seed: int = 1, time_scale: float = 1.0
    ) -> District:
        builder = _Builder(random.Random(seed), time_scale)
        sites = [builder.restaurant(n) for n in range(1, restaurants + 1)]
        sites += [builder.household(n) for n in range(1, households + 1)]
        return cls(sites, time_scale=time_scale)

    def site(self, site_id: str) -> SimSite:
        return next(s for s in self.sites if s.site_id == site_id)

    @property
    def radio_sites(self) -> list[SimSite]:
        return [s for s in self.sites if s.radio_devices]

    @property
    def radio_devices(self) -> list[SimDevice]:
        return [d for s in self.sites for d in s.radio_devices]

    def receivers_needed(self, capacity: int = CAPACITY) -> int:
        """How many receivers hold the radio devices (a site is never split between two)."""
        return len(list(self._fill(capacity))) or 1

    def _fill(self, capacity: int) -> Iterator[list[SimSite]]:
        batch: list[SimSite] = []
        size = 0
        for site in self.radio_sites:
            radio = len(site.radio_devices)
            if size + radio > capacity and batch:
                yield batch
                batch, size = [], 0
            batch.append(site)
            size += radio
        if batch:
            yield batch

    def attach(self, *receivers: SimReceiver) -> None:
        """Add the radio devices (already paired at install) to the receivers, site by site."""
        capacity = min((r.capacity for r in receivers), default=0)
        batches = list(self._fill(capacity))
        if len(batches) > len(receivers):
            raise ValueError(
                f"{len(self.radio_devices)} radio devices need {len(batches)} receivers of "
                f"{capacity}, {len(receivers)} given"
            )
        for receiver, batch in zip(receivers, batches, strict=False):
            for site in batch:
                for device in site.radio_devices:
                    receiver.add(device)

    def mqtt_devices(self, broker_url: str) -> list[MqttDevice]:
        """One :class:`MqttDevice` per MQTT-native electronic part (not started)."""
        return [
            MqttDevice(broker_url, ident, model.kind, model=model)
            for site in self.sites
            for ident, model in site.devices.items()
            if not _RADIO_ID.fullmatch(ident)
        ]

    def write_registry(self, directory: Path) -> list[Path]:
        """``sites.csv``, ``components.csv``, ``cylinders.csv`` (and ``models.csv``, the
        models they use) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        located = any(s.latitude is not None for s in self.sites)
        tables: dict[str, tuple[tuple[str, ...], list[list[str]]]] = {
            "sites.csv": (
                SITES_HEADER + (LOCATION_COLUMNS if located else ()),
                [s.csv_row(located) for s in self.sites],
            ),
            "components.csv": (
                COMPONENTS_HEADER,
                [c.csv_row() for s in self.sites for c in s.components],
            ),
            "cylinders.csv": (
                CYLINDERS_HEADER,
                [c.csv_row() for s in self.sites for c in s.cylinders],
            ),
            "models.csv": (MODELS_HEADER, [list(m) for m in _MODELS]),
        }
        paths = []
        for name, (header, rows) in tables.items():
            path = directory / name
            with path.open("w", encoding="utf-8", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(header)
                writer.writerows(rows)
            paths.append(path)
        return paths

    def kinds(self) -> dict[ksp.DeviceKind, int]:
        """Electronic devices by kind, radio and MQTT-native together."""
        counts = dict.fromkeys(ksp.DeviceKind, 0)
        for site in self.sites:
            for device in site.devices.values():
                counts[device.kind] += 1
        return counts
