"""The center's PostgreSQL: numbered schema migrations and the connection pool.

Migrations are the files ``central/migrations/NNNN_<what>.sql`` (package data), applied in order,
each in its own transaction, and recorded in ``schema_migrations``. Several instances may start
at once: a session advisory lock lets one apply them while the others wait and then find nothing
to do. A database already migrated past what this code knows is refused, never "downgraded".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Final

import click
import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.errors import GasgateError

__all__ = [
    "CHANNEL",
    "CMD_CHANNEL",
    "DB_ENV",
    "Migration",
    "SchemaError",
    "Status",
    "db",
    "migrations",
    "notify",
    "notify_payloads",
    "open_pool",
    "status",
    "upgrade",
]

DB_ENV: Final = "GASGATE_CENTRAL_DB"
# LISTEN/NOTIFY: what changed, so every instance's consoles re-read it (central/notify.py)
CHANNEL: Final = "gasgate_central"
CMD_CHANNEL: Final = "gasgate_central_cmd"  # payload: a new command's cmd_id (the sender wakes)
_NOTIFY_LIMIT: Final = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
# pg_advisory_lock key of schema upgrades: any constant no other lock uses ("gasgate\0" as bytes)
_UPGRADE_LOCK: Final = 0x6761736761746500
_FILE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_TABLE: Final = b"""CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class SchemaError(GasgateError):
    """The database's schema cannot be used by this code (newer than it, or a migration failed)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: bytes


@dataclass(frozen=True, slots=True)
class Status:
    applied: list[tuple[int, str, datetime]]  # version, name, applied_at
    pending: list[Migration]
    known: int  # the newest version this code knows


def migrations() -> list[Migration]:
    """Every migration shipped with the package, oldest first."""
    found = []
    for entry in (resources.files("central") / "migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_bytes()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"two migration files share a version number: {versions}")
    return found


def _applied(conn: psycopg.Connection) -> list[tuple[int, str, datetime]]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    return [(int(v), str(n), at) for v, n, at in rows.fetchall()]


def _refuse_newer(applied: list[tuple[int, str, datetime]], known: list[Migration]) -> None:
    newest = max((v for v, _, _ in applied), default=0)
    last = known[-1].version if known else 0
    if newest > last:
        raise SchemaError(
            f"the database is at schema version {newest}, newer than this gasgate knows ({last}):"
            " run a newer gasgate central against it"
        )


def status(dsn: str) -> Status:
    """What is applied and what is pending; raises :class:`SchemaError` if the DB is newer."""
    known = migrations()
    with psycopg.connect(dsn, autocommit=True) as conn:
        applied = _applied(conn)
    _refuse_newer(applied, known)
    done = {v for v, _, _ in applied}
    return Status(applied, [m for m in known if m.version not in done], known[-1].version)


def upgrade(dsn: str) -> list[int]:
    """Apply the pending migrations; returns their versions ([] when up to date)."""
    known = migrations()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a session lock: held across the per-migration transactions, released on close
        conn.execute("SELECT pg_advisory_lock(%s)", (_UPGRADE_LOCK,))
        applied = _applied(conn)
        _refuse_newer(applied, known)
        conn.execute(_TABLE)
        done = {v for v, _, _ in applied}
        return [m.version for m in known if m.version not in done and _apply(conn, m)]


def _apply(conn: psycopg.Connection, migration: Migration) -> bool:
    try:
        with conn.transaction():
            conn.execute(migration.sql)  # no parameters: several statements in one go
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    except psycopg.Error as exc:
        raise SchemaError(
            f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
        ) from exc
    return True


async def open_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    """An opened pool (its first connections made) that checks a connection on checkout, so a
    database restart costs a reconnect, not a failed transaction."""
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        name="gasgate-central",
    )
    await pool.open(wait=True)
    return pool


def notify_payloads(
    incidents: Iterable[int] = (),
    gateways: Iterable[str] = (),
    commands: Iterable[str] = (),
    limit: int = _NOTIFY_LIMIT,
) -> list[str]:
    """``{"incidents": [...], "gateways": [...], "commands": [...]}`` split so that each payload
    stays under ``limit`` bytes; an id too long to fit any payload is left out."""
    empty: dict[str, list[int | str]] = {"incidents": [], "gateways": [], "commands": []}
    base = len(json.dumps(empty))
    payloads: list[str] = []
    current, size = _fresh(empty), base
    items: list[tuple[str, int | str]] = [("incidents", i) for i in dict.fromkeys(incidents)]
    items += [("gateways", g) for g in dict.fromkeys(gateways)]
    items += [("commands", c) for c in dict.fromkeys(commands)]
    for kind, item in items:
        cost = len(json.dumps(item).encode()) + 2  # the item and ", "
        if base + cost > limit:
            continue
        if size + cost > limit:
            payloads.append(json.dumps(current))
            current, size = _fresh(empty), base
        current[kind].append(item)
        size += cost
    if size > base:
        payloads.append(json.dumps(current))
    return payloads


def _fresh(empty: dict[str, list[int | str]]) -> dict[str, list[int | str]]:
    return {k: [] for k in empty}


async def notify(
    conn: psycopg.AsyncConnection,
    *,
    incidents: Iterable[int] = (),
    gateways: Iterable[str] = (),
    commands: Iterable[str] = (),
) -> None:
    """Tell every instance what changed; delivered when the transaction commits."""
    payloads = notify_payloads(incidents, gateways, commands)
    if payloads:
        await conn.execute(
            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (CHANNEL, payloads)
        )


_DB_OPTION = click.option(
    "--db", "dsn", envvar=DB_ENV, required=True, help=f"PostgreSQL DSN (env {DB_ENV})"
)


@click.group()
def db() -> None:
    """The center's PostgreSQL schema."""


@db.command("upgrade")
@_DB_OPTION
def _upgrade_command(dsn: str) -> None:
    """Apply the schema migrations not yet applied (a second run does nothing)."""
    try:
        done = upgrade(dsn)
    except (SchemaError, psycopg.Error) as exc:
        raise click.ClickException(str(exc)) from None
    by_version = {m.version: m for m in migrations()}
    for version in done:
        click.echo(f"applied {version:04d}_{by_version[version].name}")
    if not done:
        click.echo(f"up to date (schema version {max(by_version, default=0)})")


@db.command("status")
@_DB_OPTION
def _status_command(dsn: str) -> None:
    """Which migrations are applied, which are pending."""
    try:
        now = status(dsn)
    except (SchemaError, psycopg.Error) as exc:
        raise click.ClickException(str(exc)) from None
    for version, name, at in now.applied:
        click.echo(f"{version:04d}_{name}  applied {at.isoformat(timespec='seconds')}")
    for m in now.pending:
        click.echo(f"{m.version:04d}_{m.name}  pending")
    click.echo(f"code knows version {now.known}; {len(now.pending)} pending")
