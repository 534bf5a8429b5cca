"""The gateway's one durable store: a SQLite database (WAL) in the data dir.

Each room owns its own tables and declares them as an ordered list of migrations; ``migrate``
applies the ones a database has not seen yet, on start. Rooms write state here *before* they act
on it, so a ``kill -9`` at any point leaves a state a restart can resume from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import GasgateError

__all__ = ["Store", "StoreError"]


class StoreError(GasgateError):
    """The store cannot be opened, migrated or written (disk full, read-only, corrupt)."""


class Store:
    """Constructing a store does nothing; :meth:`open` connects and :meth:`close` releases it."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed alarm transition survives power loss, not only a process kill.
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (room TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the gateway store: {exc}") from exc
        db.row_factory = sqlite3.Row
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def migrate(self, room: str, migrations: Sequence[str]) -> None:
        """Bring ``room``'s tables to ``len(migrations)``; each entry is one SQL script."""
        row = self.db.execute(
            "SELECT version FROM schema_version WHERE room = ?", (room,)
        ).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise StoreError(
                f"{self.path}: room {room!r} is at schema {current}, newer than this gasgate "
                f"({len(migrations)}); upgrade gasgate or restore a backup"
            )
        for version in range(current + 1, len(migrations) + 1):
            with self.transaction() as db:
                for statement in _statements(migrations[version - 1]):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version (room, version) VALUES (?, ?)"
                    " ON CONFLICT(room) DO UPDATE SET version = excluded.version",
                    (room, version),
                )

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write: committed on exit, rolled back on any exception.

        ``durable=False`` commits without waiting for the disk (WAL, ``synchronous=NORMAL``):
        the transaction survives a process crash, and a power cut can lose it whole (never
        half of it). For state a restart re-derives from what *is* durable (the open alarms),
        so that a leak's close command does not wait for one fsync per room."""
        db = self.db
        relaxed = not durable and self._synchronous != "NORMAL"
        if relaxed:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: commit failed: {exc}") from exc
        finally:
            if relaxed:
                db.execute(f"PRAGMA synchronous={self._synchronous}")


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (sqlite3's execute takes one at a time)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()
