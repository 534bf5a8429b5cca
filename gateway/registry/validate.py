"""Registry files → one validated :class:`RegistryData` snapshot and every problem found.

Pure: file bytes in, (records, problems) out; nothing is read from disk here and nothing
raises on bad input. The caller imports only a snapshot without errors (all or nothing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Final, TypeVar

from gateway.contract import DEVICE_ID_RE
from gateway.registry.catalog import BUILTIN_KITS, DEFAULT_MODELS
from gateway.registry.files import TABLES, Cell, Row, decode, read_csv, read_yaml_tables
from gateway.registry.kits import read_kits
from gateway.registry.model import (
    Component,
    ComponentType,
    Contact,
    Cylinder,
    DeviceModel,
    KitDefinition,
    Lang,
    Power,
    Problem,
    RegistryData,
    Severity,
    Site,
    SiteType,
)
from gateway.registry.pool import Pool

__all__ = ["KITS_FILE", "YAML_FILE", "Parsed", "csv_file", "parse_files"]

KITS_FILE: Final = "kits.yaml"
YAML_FILE: Final = "registry.yaml"
# Site and cylinder ids share the device-id alphabet: safe in topics, tags and file names.
ID_RE: Final = DEVICE_ID_RE
_RADIO_ID_RE: Final = re.compile(r"[0-9a-fA-F]{8}")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_PHONE_RE: Final = re.compile(r"\+?[0-9][0-9 -]*[0-9]")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_PHONE_DIGITS: Final = range(5, 16)  # E.164 allows at most 15 digits
_MAX_INTERVAL_S: Final = 86_400
_MAX_CAPACITY_KG: Final = 100.0
_MAX_SERVICE_LIFE_MONTHS: Final = 600
_TEXT_MAX: Final = {"name": 200, "address": 500, "district": 100, "role": 64, "model": 64}

E = TypeVar("E", bound=StrEnum)
R = TypeVar("R")


def csv_file(table: str) -> str:
    return f"{table}.csv"


@dataclass(frozen=True, slots=True)
class Parsed:
    data: RegistryData
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_files(files: Mapping[str, bytes], today: date) -> Parsed:
    """Validate an import: ``files`` maps a file name (``sites.csv``, ``registry.yaml``,
    ``kits.yaml``...) to its bytes; other names are not registry files and are ignored.
    ``today`` bounds install dates (a fitting date in the future is a typo)."""
    problems: list[Problem] = []
    kits = _kits(files, problems)
    tables = _tables(files, problems)
    checker = _Checker(problems, today, {**BUILTIN_KITS, **{k.name: k for k in kits}})
    data = checker.run(tables, kits)
    ordered = sorted(problems, key=lambda p: (p.file, p.line, p.column))
    return Parsed(data, tuple(ordered))


def _kits(files: Mapping[str, bytes], problems: list[Problem]) -> tuple[KitDefinition, ...]:
    if KITS_FILE not in files:
        return ()
    text, decode_problems = decode(KITS_FILE, files[KITS_FILE])
    problems.extend(decode_problems)
    if text is None:
        return ()
    kits, kit_problems = read_kits(KITS_FILE, text, frozenset(BUILTIN_KITS))
    problems.extend(kit_problems)
    return kits


def _tables(files: Mapping[str, bytes], problems: list[Problem]) -> dict[str, list[Row]]:
    """The readable tables' rows, from the CSV files or registry.yaml."""
    csv_names = [csv_file(t) for t in TABLES if csv_file(t) in files]
    if YAML_FILE in files:
        if csv_names:
            message = f"{YAML_FILE} and {', '.join(csv_names)} both given: use one form"
            problems.append(Problem(YAML_FILE, 1, 1, message, "ambiguous_source"))
            return {}
        text, decode_problems = decode(YAML_FILE, files[YAML_FILE])
        problems.extend(decode_problems)
        if text is None:
            return {}
        tables, yaml_problems = read_yaml_tables(YAML_FILE, text)
        problems.extend(yaml_problems)
        if "sites" not in tables and not yaml_problems:
            problems.append(Problem(YAML_FILE, 1, 1, "no 'sites' table", "missing_file"))
        return tables
    tables = {}
    share = Pool()
    for table, spec in TABLES.items():
        name = csv_file(table)
        if name not in files:
            continue
        text, decode_problems = decode(name, files[name])
        problems.extend(decode_problems)
        if text is not None:
            rows, csv_problems = read_csv(name, text, spec, share)
            problems.extend(csv_problems)
            if rows is not None:  # else its rows are unknown: no cross-file checks against it
                tables[table] = rows
    if "sites.csv" not in files:
        message = f"no sites.csv (nor {YAML_FILE}): nothing to import"
        problems.append(Problem("sites.csv", 1, 1, message, "missing_file"))
    return tables


def _parse_all(rows: Iterable[Row], parse: Callable[[Row], R | None]) -> list[R]:
    return [r for r in (parse(row) for row in rows) if r is not None]


def _where(row: Row) -> str:
    return f"{row.file}:{row.line}"


@dataclass
class _UnknownModel:
    cell: Cell
    file: str
    devices: int = 0


@dataclass(frozen=True, slots=True)
class _Placed:
    """What a component row says of its device, enough to check links to and from it even when
    other fields of the row have errors (so link errors show in the same pass, not after)."""

    row: Row
    site_id: str
    component: ComponentType
    links: tuple[str, ...]


@dataclass
class _Checker:
    """One pass over the rows; keeps the indexes the cross-file checks need."""

    problems: list[Problem]
    today: date
    kits: Mapping[str, KitDefinition]
    sites: dict[str, Site] = field(default_factory=dict)
    declared_sites: set[str] = field(default_factory=set)
    sites_unreadable: bool = False
    models: dict[str, DeviceModel] = field(default_factory=dict)
    # device id → the row that first declared it; the component if its row is valid
    declared: dict[str, Row] = field(default_factory=dict)
    devices: dict[str, Component] = field(default_factory=dict)
    placed: dict[str, _Placed] = field(default_factory=dict)  # device id → its row's say
    linking: list[_Placed] = field(default_factory=list)  # rows of a known kind, in file order
    cylinders: dict[str, Row] = field(default_factory=dict)
    unknown_models: dict[tuple[str, ComponentType], _UnknownModel] = field(default_factory=dict)
    share: Pool = field(default_factory=Pool)  # one date object per install or due day

    def run(self, tables: Mapping[str, list[Row]], kits: tuple[KitDefinition, ...]) -> RegistryData:
        self.sites_unreadable = "sites" not in tables
        models = _parse_all(tables.get("models", []), self._model)
        pairs = _parse_all(tables.get("sites", []), self._site)
        sites = [site for site, _ in pairs]
        contacts = [contact for _, contact in pairs]
        contacts += _parse_all(tables.get("contacts", []), self._contact)
        component_rows = tables.get("components", [])
        components = _parse_all(component_rows, self._component)
        for placed in self.linking:
            self._links(placed)
        self._report_unknown_models()
        cylinders = _parse_all(tables.get("cylinders", []), self._cylinder)
        return RegistryData(
            tuple(sites),
            tuple(sorted(contacts, key=lambda c: c.site_id)),
            tuple(components),
            tuple(cylinders),
            kits,
            tuple(models),
        )

    # --- reporting ------------------------------------------------------------------------

    def error(self, row: Row, cell: Cell, message: str, code: str) -> None:
        self.problems.append(Problem(row.file, cell.line, cell.column, message, code))

    def warn(self, row: Row, cell: Cell, message: str, code: str) -> None:
        self.problems.append(
            Problem(row.file, cell.line, cell.column, message, code, Severity.WARNING)
        )

    # --- field checks: each returns None (and reports) when the value is unusable ---------

    def text(self, row: Row, column: str, *, required: bool = True) -> str | None:
        cell = row[column]
        limit = _TEXT_MAX.get(column.removeprefix("contact_"), 200)
        if required and not cell.value:
            self.error(row, cell, f"{column} is empty", "empty_field")
            return None
        if len(cell.value) > limit:
            self.error(row, cell, f"{column} is longer than {limit} characters", "too_long")
            return None
        if _CONTROL_RE.search(cell.value):
            # A line break in a district or name would break a telemetry line or an SMS.
            message = f"{column} holds a control character (line break, tab...)"
            self.error(row, cell, message, "bad_text")
            return None
        return cell.value

    def ident(self, row: Row, column: str) -> str | None:
        cell = row[column]
        if not cell.value:
            self.error(row, cell, f"{column} is empty", "empty_field")
            return None
        if not ID_RE.fullmatch(cell.value):
            message = f"{column} {cell.value!r} is not 1-64 of A-Z a-z 0-9 _ -"
            self.error(row, cell, message, "bad_id")
            return None
        return cell.value

    def enum(self, row: Row, column: str, kind: type[E], code: str) -> E | None:
        cell = row[column]
        try:
            return kind(cell.value)
        except ValueError:
            allowed = ", ".join(kind)
            self.error(row, cell, f"unknown {column} {cell.value!r} (one of {allowed})", code)
            return None

    def day(self, row: Row, column: str) -> date | None:
        cell = row[column]
        try:
            day = date.fromisoformat(cell.value) if _DATE_RE.fullmatch(cell.value) else None
        except ValueError:  # 2025-02-30
            day = None
        if day is None:
            message = f"{column} {cell.value!r} is not a date (YYYY-MM-DD)"
            self.error(row, cell, message, "bad_date")
            return None
        return self.share(day)

    def integer(self, row: Row, column: str, upper: int, code: str) -> int | None:
        """An optional whole number in 1..upper; None for empty (and for bad, reported)."""
        cell = row[column]
        if not cell.value:
            return None
        if not cell.value.isdecimal() or not 1 <= int(cell.value) <= upper:
            message = f"{column} {cell.value!r} is not a whole number in 1..{upper}"
            self.error(row, cell, message, code)
            return None
        return int(cell.value)

    def number(self, row: Row, column: str) -> float | None:
        cell = row[column]
        try:
            value = float(cell.value)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    def phone(self, row: Row, column: str) -> str | None:
        cell = row[column]
        if not cell.value:
            self.error(row, cell, f"{column} is empty", "empty_field")
            return None
        digits = sum(ch.isdigit() for ch in cell.value)
        if not (_PHONE_RE.fullmatch(cell.value) and digits in _PHONE_DIGITS):
            message = f"{column} {cell.value!r} is not a phone number (+, 5-15 digits, - or space)"
            self.error(row, cell, message, "bad_phone")
            return None
        return cell.value

    def lang(self, row: Row, column: str) -> Lang | None:
        if not row[column].value:
            return Lang.ZH  # Simplified Chinese unless the contact asked for English
        return self.enum(row, column, Lang, "bad_lang")

    # --- models ---------------------------------------------------------------------------

    def _model(self, row: Row) -> DeviceModel | None:
        name = self.text(row, "model")
        component = self.enum(row, "component", ComponentType, "unknown_component")
        life = self.integer(row, "service_life_months", _MAX_SERVICE_LIFE_MONTHS, "bad_life")
        if name is None or component is None:
            return None
        if name in self.models:
            self.error(row, row["model"], f"model {name!r} declared twice", "duplicate_model")
            return None
        if not component.electronic:
            model = DeviceModel(name, component, None, None, life)
        else:
            power = self.enum(row, "power", Power, "bad_power")
            interval = self.integer(row, "report_interval_s", _MAX_INTERVAL_S, "bad_interval")
            if power is None:
                return None
            default = DEFAULT_MODELS[component].report_interval_s if power is Power.MAINS else 600
            model = DeviceModel(name, component, power, interval or default, life)
        self.models[name] = model
        return model

    # --- sites and contacts ---------------------------------------------------------------

    def _site(self, row: Row) -> tuple[Site, Contact] | None:
        """A site and its primary contact (the contact_* columns), or None (reported)."""
        site_id = self.ident(row, "site_id")
        self.declared_sites.add(row["site_id"].value)
        name = self.text(row, "name")
        site_type = self.enum(row, "site_type", SiteType, "unknown_site_type")
        kit = self._kit(row)
        district, address = self.text(row, "district"), self.text(row, "address")
        location = self._location(row)
        contact_name = self.text(row, "contact_name")
        phone, lang = self.phone(row, "contact_phone"), self.lang(row, "contact_lang")
        if site_id is not None and site_id in self.sites:
            self.error(row, row["site_id"], f"site {site_id!r} appears twice", "duplicate_site")
            return None
        if (
            site_id is None
            or name is None
            or site_type is None
            or kit is None
            or district is None
            or address is None
            or location is None
        ):
            return None
        if contact_name is None or phone is None or lang is None:
            return None
        site = Site(site_id, name, site_type, kit, district, address, *location)
        self.sites[site_id] = site
        return site, Contact(site_id, contact_name, phone, lang, "primary")

    def _kit(self, row: Row) -> str | None:
        cell = row["kit"]
        if cell.value not in self.kits:
            known = ", ".join(self.kits)
            self.error(row, cell, f"unknown kit {cell.value!r} (known: {known})", "unknown_kit")
            return None
        return cell.value

    def _location(self, row: Row) -> tuple[float | None, float | None] | None:
        """(latitude, longitude), both None when not given; None if unusable (reported)."""
        lat_cell, lon_cell = row["latitude"], row["longitude"]
        if not lat_cell.value and not lon_cell.value:
            return None, None
        lat, lon = self.number(row, "latitude"), self.number(row, "longitude")
        if lat is None or not -90 <= lat <= 90:
            self.error(row, lat_cell, f"latitude {lat_cell.value!r} is not -90..90", "bad_location")
            return None
        if lon is None or not -180 <= lon <= 180:
            message = f"longitude {lon_cell.value!r} is not -180..180"
            self.error(row, lon_cell, message, "bad_location")
            return None
        return lat, lon

    def _contact(self, row: Row) -> Contact | None:
        site_id = self._known_site(row)
        name, phone = self.text(row, "name"), self.phone(row, "phone")
        lang, role = self.lang(row, "lang"), self.text(row, "role", required=False)
        if site_id is None or name is None or phone is None or lang is None or role is None:
            return None
        return Contact(site_id, name, phone, lang, role)

    def _known_site(self, row: Row) -> str | None:
        cell = row["site_id"]
        if not cell.value:
            self.error(row, cell, "site_id is empty", "empty_field")
            return None
        if cell.value not in self.sites:
            # A site whose own row (or whole file) has errors is reported there, once.
            if cell.value not in self.declared_sites and not self.sites_unreadable:
                self.error(row, cell, f"unknown site {cell.value!r}", "unknown_site")
            return None
        return cell.value

    # --- components -----------------------------------------------------------------------

    def _component(self, row: Row) -> Component | None:
        site_id = self._known_site(row)
        kind = self.enum(row, "component", ComponentType, "unknown_component")
        installed_on = self._installed_on(row)
        model = self.text(row, "model", required=False)
        interval = self.integer(row, "report_interval_s", _MAX_INTERVAL_S, "bad_interval")
        device_id = self._device_id(row, kind)
        links = tuple(self.share(link) for link in dict.fromkeys(row["links"].value.split()))
        self._place(row, kind, device_id, links)
        if site_id is None or kind is None or installed_on is None or model is None:
            return None
        if device_id is None or (row["report_interval_s"].value and interval is None):
            return None
        if not kind.electronic and interval is not None:
            message = f"a {kind} does not report: report_interval_s must be empty"
            self.error(row, row["report_interval_s"], message, "bad_interval")
            return None
        self._check_model(row, kind, model)
        component = Component(
            site_id, kind, device_id or None, model, installed_on, links, interval
        )
        if device_id:
            self.devices[device_id] = component
        return component

    def _place(
        self, row: Row, kind: ComponentType | None, device_id: str | None, links: tuple[str, ...]
    ) -> None:
        if kind is None:
            return
        placed = _Placed(row, row["site_id"].value, kind, links)
        self.linking.append(placed)
        if device_id:
            self.placed[device_id] = placed

    def _installed_on(self, row: Row) -> date | None:
        installed_on = self.day(row, "installed_on")
        if installed_on is not None and installed_on > self.today:
            message = f"installed_on {installed_on} is in the future (today is {self.today})"
            self.error(row, row["installed_on"], message, "future_date")
            return None
        return installed_on

    def _device_id(self, row: Row, kind: ComponentType | None) -> str | None:
        """The device id ('' for a passive part); None if wrong (reported)."""
        cell = row["device_id"]
        if kind is None:
            return None
        if not kind.electronic:
            if cell.value:
                message = f"a {kind} is passive and has no device id"
                self.error(row, cell, message, "unexpected_device_id")
                return None
            return ""
        if not cell.value:
            self.error(row, cell, f"a {kind} needs its device id", "missing_device_id")
            return None
        if not DEVICE_ID_RE.fullmatch(cell.value):
            message = (
                f"device id {cell.value!r} is neither 8 lowercase hex digits (radio)"
                " nor 1-64 of A-Z a-z 0-9 _ - (MQTT)"
            )
            self.error(row, cell, message, "bad_device_id")
            return None
        first = self.declared.setdefault(cell.value, row)
        if first is not row:
            message = f"device id {cell.value!r} appears twice (first at {_where(first)})"
            self.error(row, cell, message, "duplicate_device")
            return None
        if _RADIO_ID_RE.fullmatch(cell.value) and cell.value != cell.value.lower():
            # Valid as an MQTT id, but a radio id is reported in lowercase and would never match.
            message = f"device id {cell.value!r} looks like a radio id in upper case"
            self.warn(row, cell, message, "uppercase_radio_id")
        return cell.value

    def _check_model(self, row: Row, kind: ComponentType, name: str) -> None:
        model = self.models.get(name)
        if model is not None and model.component is not kind:
            message = f"model {name!r} is a {model.component}, not a {kind}"
            self.error(row, row["model"], message, "model_mismatch")
        elif model is None and kind.electronic:
            unknown = self.unknown_models.setdefault(
                (name, kind), _UnknownModel(row["model"], row.file)
            )
            unknown.devices += 1

    def _report_unknown_models(self) -> None:
        for (name, kind), unknown in self.unknown_models.items():
            default = DEFAULT_MODELS[kind]
            message = (
                f"unknown {kind} model {name!r} ({unknown.devices} devices; first here):"
                f" assumed {default.power}, reporting every {default.report_interval_s} s"
                " where the row gives no report_interval_s"
            )
            self.problems.append(
                Problem(
                    unknown.file,
                    unknown.cell.line,
                    unknown.cell.column,
                    message,
                    "unknown_model",
                    Severity.WARNING,
                )
            )

    def _links(self, source: _Placed) -> None:
        """Links are checked once every device is known (a link may point further down)."""
        row, kind, links = source.row, source.component, source.links
        cell = row["links"]
        if kind is ComponentType.SHUTOFF_VALVE:
            wanted = ComponentType.LEAK_DETECTOR
            if not links:
                message = "shut-off valve closes for no detector: a leak would not close it"
                self.warn(row, cell, message, "unlinked_valve")
        elif kind is ComponentType.SMART_REGULATOR:
            wanted = ComponentType.SHUTOFF_VALVE
            if len(links) > 1:
                message = "a smart regulator trips one valve, links has several"
                self.error(row, cell, message, "too_many_links")
        else:
            if links:
                self.error(row, cell, f"a {kind} cannot have links", "link_not_allowed")
            return
        for target in links:
            self._link(source, cell, target, wanted)

    def _link(self, source: _Placed, cell: Cell, target: str, wanted: ComponentType) -> None:
        row = source.row
        other = self.placed.get(target)
        if other is None:
            if target not in self.declared:  # else its own row's error is reported
                self.error(row, cell, f"links to unknown device {target!r}", "unknown_link")
            return
        if other.site_id != source.site_id:
            message = f"links to {target!r} of another site ({other.site_id!r})"
            self.error(row, cell, message, "cross_site_link")
        elif other.component is not wanted:
            message = f"a {source.component} links to a {wanted}, {target!r} is a {other.component}"
            self.error(row, cell, message, "bad_link_target")

    # --- cylinders ------------------------------------------------------------------------

    def _cylinder(self, row: Row) -> Cylinder | None:
        site_id = self._known_site(row)
        cylinder_id = self.ident(row, "cylinder_id")
        capacity = self.number(row, "capacity_kg")
        due = self.day(row, "next_inspection_due")
        if capacity is None or not 0 < capacity <= _MAX_CAPACITY_KG:
            cell = row["capacity_kg"]
            message = f"capacity_kg {cell.value!r} is not a number in (0, {_MAX_CAPACITY_KG:g}]"
            self.error(row, cell, message, "bad_capacity")
            return None
        if cylinder_id is not None:
            first = self.cylinders.setdefault(cylinder_id, row)
            if first is not row:
                message = f"cylinder {cylinder_id!r} appears twice (first at {_where(first)})"
                self.error(row, row["cylinder_id"], message, "duplicate_cylinder")
                return None
        if site_id is None or cylinder_id is None or due is None:
            return None
        return Cylinder(site_id, cylinder_id, capacity, due)
