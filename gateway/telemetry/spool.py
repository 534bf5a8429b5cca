"""The disk spool: encoded lines waiting for InfluxDB, in order, surviving a restart.

Its own SQLite file in the data dir (not the gateway's store: a full spool must never slow the
store's writers). WAL with ``synchronous=FULL``: a committed append is on disk before the lines
leave memory, so a power cut loses nothing that was spooled. Used by the telemetry worker thread
only.

Bound: when the spool holds more than ``max_bytes`` of lines, the oldest periodic telemetry is
deleted until it fits; alarm transitions are never deleted, so alarms alone may exceed the bound
(they are few, and each is a safety record).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.telemetry.lineproto import Priority

__all__ = ["Spool", "SpooledLine"]

SpooledLine = tuple[int, str]  # (row id, line)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    size INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_droppable ON spool (priority, id);
"""


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self.count = 0
        self.size = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        self.count, self.size = db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM spool"
        ).fetchone()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db

    def append(self, lines: Sequence[tuple[Priority, str]]) -> int:
        """Append in order; returns how many periodic lines the bound made it drop."""
        if not lines:
            return 0
        rows = [(int(p), len(line.encode()), line) for p, line in lines]
        added = sum(r[1] for r in rows)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO spool (priority, size, line) VALUES (?, ?, ?)", rows)
            excess = self.size + added - self.max_bytes
            dropped, freed = self._drop_oldest_periodic(excess) if excess > 0 else (0, 0)
        self.count += len(rows) - dropped
        self.size += added - freed
        return dropped

    def _drop_oldest_periodic(self, excess: int) -> tuple[int, int]:
        """Delete the oldest periodic lines worth ``excess`` bytes: (lines, bytes) deleted."""
        freed = dropped = 0
        last_id = None
        cursor = self.db.execute(
            "SELECT id, size FROM spool WHERE priority = ? ORDER BY id", (int(Priority.TELEMETRY),)
        )
        for row_id, size in cursor:
            if freed >= excess:
                break
            freed += size
            dropped += 1
            last_id = row_id
        if last_id is not None:
            self.db.execute(
                "DELETE FROM spool WHERE priority = ? AND id <= ?",
                (int(Priority.TELEMETRY), last_id),
            )
        return dropped, freed

    def head(self, limit: int) -> list[SpooledLine]:
        """The oldest ``limit`` lines, in order."""
        return list(self.db.execute("SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,)))

    def remove_through(self, last_id: int) -> None:
        """Forget every line up to and including ``last_id`` (written or rejected)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            count, size = self.db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM spool WHERE id <= ?", (last_id,)
            ).fetchone()
            self.db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
        self.count -= count
        self.size -= size
