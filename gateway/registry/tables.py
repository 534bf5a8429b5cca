"""The registry's tables in the gateway store (room ``registry``).

An import is a full snapshot: :func:`replace` deletes every registry row and writes the new
ones in one transaction, with a history row, so a reader sees the old registry or the new one,
never a mix, and a crash mid-import leaves the old one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from gateway.registry.model import (
    Component,
    ComponentType,
    Contact,
    Cylinder,
    DeviceModel,
    KitDefinition,
    Lang,
    Power,
    RegistryData,
    Site,
    SiteType,
)
from gateway.registry.pool import Pool
from gateway.store import Store

__all__ = ["MIGRATIONS", "ROOM", "ImportRecord", "current_generation", "history", "read", "replace"]

ROOM = "registry"
MIGRATIONS = [
    """
    CREATE TABLE registry_import (
        id INTEGER PRIMARY KEY,
        imported_at TEXT NOT NULL,
        who TEXT NOT NULL,
        source TEXT NOT NULL,
        counts TEXT NOT NULL,       -- JSON: table -> rows
        files TEXT NOT NULL,        -- JSON: file name -> sha256
        warnings INTEGER NOT NULL
    );
    CREATE TABLE registry_kit (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        requirements TEXT NOT NULL  -- JSON: list of lists of alternatives
    );
    CREATE TABLE registry_model (
        name TEXT PRIMARY KEY,
        component TEXT NOT NULL,
        power TEXT,
        report_interval_s INTEGER,
        service_life_months INTEGER
    );
    CREATE TABLE registry_site (
        site_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        site_type TEXT NOT NULL,
        kit TEXT NOT NULL,
        district TEXT NOT NULL,
        address TEXT NOT NULL,
        latitude REAL,
        longitude REAL
    );
    CREATE TABLE registry_contact (
        site_id TEXT NOT NULL REFERENCES registry_site (site_id),
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        phone TEXT NOT NULL,
        lang TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (site_id, position)
    );
    CREATE TABLE registry_component (
        site_id TEXT NOT NULL REFERENCES registry_site (site_id),
        position INTEGER NOT NULL,
        component TEXT NOT NULL,
        device_id TEXT UNIQUE,
        model TEXT NOT NULL,
        installed_on TEXT NOT NULL,
        links TEXT NOT NULL,        -- space-separated device ids
        report_interval_s INTEGER,
        PRIMARY KEY (site_id, position)
    );
    CREATE TABLE registry_cylinder (
        cylinder_id TEXT PRIMARY KEY,
        site_id TEXT NOT NULL REFERENCES registry_site (site_id),
        capacity_kg REAL NOT NULL,
        next_inspection_due TEXT NOT NULL
    );
    """,
]

# Children first: deleting in this order keeps the foreign keys satisfied.
_TABLES = (
    "registry_contact",
    "registry_component",
    "registry_cylinder",
    "registry_site",
    "registry_model",
    "registry_kit",
)


@dataclass(frozen=True, slots=True)
class ImportRecord:
    generation: int
    imported_at: datetime
    who: str
    source: str
    counts: Mapping[str, int]
    files: Mapping[str, str]
    warnings: int


def replace(store: Store, data: RegistryData, record: ImportRecord) -> int:
    """Make ``data`` the whole registry; returns the new generation (the history row's id)."""
    store.migrate(ROOM, MIGRATIONS)
    with store.transaction() as db:
        for table in _TABLES:
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - a constant table name
        _insert(db, data)
        cursor = db.execute(
            "INSERT INTO registry_import (imported_at, who, source, counts, files, warnings)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.imported_at.isoformat(),
                record.who,
                record.source,
                json.dumps(dict(record.counts), sort_keys=True),
                json.dumps(dict(record.files), sort_keys=True),
                record.warnings,
            ),
        )
        generation = cursor.lastrowid
    if generation is None:
        raise AssertionError("sqlite gave no row id for the import record")
    return generation


def _insert(db: sqlite3.Connection, data: RegistryData) -> None:
    db.executemany(
        "INSERT INTO registry_kit VALUES (?, ?, ?)",
        ((k.name, k.description, json.dumps(k.requirements)) for k in data.kits),
    )
    db.executemany(
        "INSERT INTO registry_model VALUES (?, ?, ?, ?, ?)",
        (
            (m.name, m.component, m.power, m.report_interval_s, m.service_life_months)
            for m in data.models
        ),
    )
    db.executemany(
        "INSERT INTO registry_site VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (s.site_id, s.name, s.site_type, s.kit, s.district, s.address, s.latitude, s.longitude)
            for s in data.sites
        ),
    )
    db.executemany(
        "INSERT INTO registry_contact VALUES (?, ?, ?, ?, ?, ?)",
        ((c.site_id, i, c.name, c.phone, c.lang, c.role) for i, c in enumerate(data.contacts)),
    )
    db.executemany(
        "INSERT INTO registry_component VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                c.site_id,
                i,
                c.component,
                c.device_id,
                c.model,
                c.installed_on.isoformat(),
                " ".join(c.links),
                c.report_interval_s,
            )
            for i, c in enumerate(data.components)
        ),
    )
    db.executemany(
        "INSERT INTO registry_cylinder VALUES (?, ?, ?, ?)",
        (
            (c.cylinder_id, c.site_id, c.capacity_kg, c.next_inspection_due.isoformat())
            for c in data.cylinders
        ),
    )


def read(store: Store) -> tuple[RegistryData, int]:
    """The stored registry and its generation (0 and an empty registry before any import)."""
    store.migrate(ROOM, MIGRATIONS)
    db = store.db
    share = Pool()
    # One read transaction: an import committing meanwhile is seen whole or not at all.
    db.execute("BEGIN")
    try:
        data = RegistryData(
            sites=tuple(
                _site(r, share) for r in db.execute("SELECT * FROM registry_site ORDER BY rowid")
            ),
            contacts=tuple(
                _contact(r, share)
                for r in db.execute("SELECT * FROM registry_contact ORDER BY position")
            ),
            components=tuple(
                _component(r, share)
                for r in db.execute("SELECT * FROM registry_component ORDER BY position")
            ),
            cylinders=tuple(
                Cylinder(
                    share(r["site_id"]),
                    r["cylinder_id"],
                    r["capacity_kg"],
                    share(date.fromisoformat(r["next_inspection_due"])),
                )
                for r in db.execute("SELECT * FROM registry_cylinder ORDER BY rowid")
            ),
            kits=tuple(_kit(r) for r in db.execute("SELECT * FROM registry_kit ORDER BY rowid")),
            models=tuple(
                _model(r) for r in db.execute("SELECT * FROM registry_model ORDER BY rowid")
            ),
        )
        generation = _generation(db)
    finally:
        db.execute("COMMIT")
    return data, generation


def current_generation(store: Store) -> int:
    """The latest import's id: cheap enough to poll, to notice an import by another process."""
    store.migrate(ROOM, MIGRATIONS)
    return _generation(store.db)


def history(store: Store, limit: int = 20) -> tuple[ImportRecord, ...]:
    store.migrate(ROOM, MIGRATIONS)
    rows = store.db.execute("SELECT * FROM registry_import ORDER BY id DESC LIMIT ?", (limit,))
    return tuple(
        ImportRecord(
            r["id"],
            datetime.fromisoformat(r["imported_at"]),
            r["who"],
            r["source"],
            json.loads(r["counts"]),
            json.loads(r["files"]),
            r["warnings"],
        )
        for r in rows
    )


def _generation(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT max(id) FROM registry_import").fetchone()
    return int(row[0] or 0)


def _site(r: sqlite3.Row, share: Pool) -> Site:
    return Site(
        share(r["site_id"]),
        r["name"],
        SiteType(r["site_type"]),
        share(r["kit"]),
        share(r["district"]),
        r["address"],
        r["latitude"],
        r["longitude"],
    )


def _contact(r: sqlite3.Row, share: Pool) -> Contact:
    return Contact(
        share(r["site_id"]), r["name"], share(r["phone"]), Lang(r["lang"]), share(r["role"])
    )


def _component(r: sqlite3.Row, share: Pool) -> Component:
    return Component(
        share(r["site_id"]),
        ComponentType(r["component"]),
        share(r["device_id"]),
        share(r["model"]),
        share(date.fromisoformat(r["installed_on"])),
        tuple(share(link) for link in r["links"].split()),
        share(r["report_interval_s"]),
    )


def _kit(r: sqlite3.Row) -> KitDefinition:
    requirements = tuple(
        tuple(ComponentType(c) for c in alt) for alt in json.loads(r["requirements"])
    )
    return KitDefinition(r["name"], requirements, r["description"])


def _model(r: sqlite3.Row) -> DeviceModel:
    power = Power(r["power"]) if r["power"] is not None else None
    return DeviceModel(
        r["name"],
        ComponentType(r["component"]),
        power,
        r["report_interval_s"],
        r["service_life_months"],
    )
