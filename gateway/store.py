"""The gateway's one durable store: a SQLite database (WAL) in the data dir.

Each room owns its own tables and declares them as an ordered list of migrations; ``migrate``
applies the ones a database has not seen yet, on start. Rooms write state here *before* they act
on it, so a ``kill -9`` at any point leaves a state a restart can resume from.

A gateway that cannot write its disk (full, remounted read-only, a failing card) must still
close valves: a store made with ``fallback=True`` (the gateway's) then runs *degraded* on an
in-memory copy of the disk database, so every room works unchanged, and :class:`StoreWatch`
copies it back to disk as soon as the disk takes writes again. Tools (``gasgate user add``,
``gasgate registry import``) keep failing loudly instead: a write they report done must be on
disk.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from gateway.clock import Clock, Timer
from gateway.errors import GasgateError

__all__ = ["DISK_RETRY_S", "NAG_S", "Store", "StoreError", "StoreWatch", "disk_trouble"]

log = logging.getLogger(__name__)

DISK_RETRY_S: Final = 5.0  # a degraded store tries the disk again this often
NAG_S: Final = 60.0  # the CRITICAL line repeats this often while the store is not healthy

# SQLite's primary result codes that mean "the disk will not take this" (not a bad statement).
_DISK_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
    }
)


class StoreError(GasgateError):
    """The store cannot be opened, migrated or written (disk full, read-only, corrupt)."""


def disk_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it wraps) is the disk refusing, not a bad statement."""
    cause = exc if isinstance(exc, sqlite3.Error | OSError) else exc.__cause__
    if isinstance(cause, OSError):
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DISK_CODES


class Store:
    """Constructing a store does nothing; :meth:`open` connects and :meth:`close` releases it."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", fallback: bool = False) -> None:
        self.path = path
        self._synchronous = synchronous
        self._fallback = fallback
        self._db: sqlite3.Connection | None = None
        self.degraded: str | None = None  # why the store runs in memory, None: on disk
        self._degraded_at = 0.0
        self._disk_refusal = ""  # why the latest try to go back to disk failed
        self._copy_complete = True  # the memory copy holds all the disk database held
        self.commit_error: str | None = None  # the last commit's failure; cleared by a success

    # --- opening and closing ----------------------------------------------------------------

    def open(self) -> None:
        """Open the disk database. With ``fallback``, a disk that refuses writes (checked with
        a real write: a full disk opens fine) degrades the store instead of raising."""
        self.degraded, self.commit_error, self._copy_complete = None, None, True
        try:
            self._db = self._connect_disk()
            if self._fallback:
                _probe(self._db)
        except (StoreError, sqlite3.Error, OSError) as exc:
            if not (self._fallback and disk_trouble(exc)):
                self.close()
                raise StoreError(f"{self.path}: cannot open the gateway store: {exc}") from exc
            self.degrade(f"cannot write {self.path}: {exc}")

    def _connect_disk(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed alarm transition survives power loss, not only a process kill.
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            _prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Release the connection; a degraded store tries the disk one last time first."""
        if self.degraded is not None and self._db is not None and not self.try_disk():
            log.critical(
                "store: stopping DEGRADED: every change since the start is lost (the disk "
                "refused it: %s)",
                self._disk_refusal or self.degraded,
            )
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The live connection: read it each time (a degraded store swaps it)."""
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # --- degraded: in memory until the disk takes writes --------------------------------------

    def degrade(self, reason: str) -> None:
        """Go on in memory, from a copy of what the disk database holds. Loud: a kill from now
        on loses what the rooms write, until :meth:`try_disk` succeeds."""
        if self.degraded is not None:
            return
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._copy_complete = self._copy_disk_into(memory)
        _prepare(memory)
        if self._db is not None:
            self._db.close()
        self._db = memory
        self.degraded = reason
        self._degraded_at = time.monotonic()
        self.commit_error = None
        log.critical(
            "store: DEGRADED, running in memory (%s); %s; valves still close and alarms are "
            "raised, but nothing is on disk until it takes writes again (tried every %.0f s)",
            reason,
            "the disk database was copied"
            if self._copy_complete
            else "the disk database could NOT be read whole (it is kept aside on recovery)",
            DISK_RETRY_S,
        )

    def _copy_disk_into(self, memory: sqlite3.Connection) -> bool:
        """Copy the disk database into ``memory``; whether the copy is whole."""
        if self._db is not None:  # open, only writes fail (a full disk)
            with suppress(sqlite3.Error):
                self._db.backup(memory)
                return True
        if not self.path.exists():
            return True
        # mode=ro reads the write-ahead log too, but needs its -shm; immutable=1 (a read-only
        # mount after a clean stop) does not, and misses a log a kill left behind.
        for query in ("mode=ro", "immutable=1"):
            with suppress(sqlite3.Error):
                disk = sqlite3.connect(f"file:{self.path}?{query}", uri=True)
                try:
                    disk.backup(memory)
                finally:
                    disk.close()
                wal = self.path.with_name(f"{self.path.name}-wal")
                return query == "mode=ro" or not _nonempty(wal)
        return False

    def try_disk(self) -> bool:
        """Copy the memory database to disk and go on there; whether the store is on disk."""
        if self.degraded is None:
            return True
        try:
            if not self._copy_complete:
                self._set_aside()
            disk = self._connect_disk()
            try:
                self.db.backup(disk)
                disk.execute("PRAGMA journal_mode=WAL")  # the copy's header says otherwise
            except BaseException:
                disk.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            self._disk_refusal = str(exc)
            return False
        memory, self._db = self.db, disk
        memory.close()
        log.warning(
            "store: back on disk after %.0f s degraded (%s): everything since is written",
            time.monotonic() - self._degraded_at,
            self.degraded,
        )
        self.degraded = None
        self._disk_refusal = ""
        return True

    def _set_aside(self) -> None:
        """Keep the disk database the memory copy lacks a part of, for a person to merge."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.rename(part.with_name(f"{part.name}.unread-{stamp}"))
        log.critical(
            "store: %s could not be read whole; kept as %s.unread-%s",
            self.path,
            self.path.name,
            stamp,
        )
        self._copy_complete = True

    @property
    def problem(self) -> str | None:
        """Why the store is not healthy (for /readyz and the CRITICAL line), None if it is."""
        if self.degraded is not None:
            refused = (
                f"; the disk still refuses: {self._disk_refusal}" if self._disk_refusal else ""
            )
            return (
                f"degraded for {time.monotonic() - self._degraded_at:.0f} s, changes held in "
                f"memory only: {self.degraded}{refused}"
            )
        if self.commit_error is not None:
            return f"commits fail: {self.commit_error}"
        return None

    # --- schema and writes ------------------------------------------------------------------

    def migrate(self, room: str, migrations: Sequence[str]) -> None:
        """Bring ``room``'s tables to ``len(migrations)``; each entry is one SQL script."""
        try:
            self._migrate(room, migrations)
        except (StoreError, sqlite3.Error) as exc:
            if not (self._fallback and self.degraded is None and disk_trouble(exc)):
                raise
            self.degrade(f"room {room}: cannot migrate {self.path}: {exc}")
            self._migrate(room, migrations)

    def _migrate(self, room: str, migrations: Sequence[str]) -> None:
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
        so that a leak's close command does not wait for one fsync per room.

        A failure of the disk (not of a statement) is remembered in :attr:`commit_error`
        until a later commit succeeds: /readyz reports it."""
        db = self.db
        relaxed = not durable and self._synchronous != "NORMAL"
        if relaxed:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._noted(db, "BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException as exc:
                _rollback(db)
                self._note(exc)
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                self.commit_error = str(exc)
                raise StoreError(f"{self.path}: commit failed: {exc}") from exc
            self.commit_error = None
        finally:
            if relaxed:
                db.execute(f"PRAGMA synchronous={self._synchronous}")

    def _noted(self, db: sqlite3.Connection, sql: str) -> None:
        try:
            db.execute(sql)
        except sqlite3.Error as exc:
            self._note(exc)
            raise

    def _note(self, exc: BaseException) -> None:
        if disk_trouble(exc):
            self.commit_error = str(exc)


class StoreWatch:
    """The store's room: while the store is degraded, the disk is tried every
    :data:`DISK_RETRY_S`; while it is not healthy (degraded, or its last commit failed), a
    CRITICAL line says so every :data:`NAG_S`. ``held`` says what is at stake (open alarms)."""

    def __init__(self, store: Store, clock: Clock, held: Callable[[], str]) -> None:
        self._store = store
        self._clock = clock
        self._held = held
        self._timer: Timer | None = None
        self._nag_at = 0.0

    async def start(self) -> None:
        self._nag_at = self._clock.monotonic()
        self._tick()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        store = self._store
        if store.degraded is not None:
            store.try_disk()
        problem = store.problem
        now = self._clock.monotonic()
        if problem is None:
            self._nag_at = now  # a new problem is said at once
        elif now >= self._nag_at:
            self._nag_at = now + NAG_S
            log.critical("store %s NOT healthy: %s; %s", store.path, problem, self._held())
        self._timer = self._clock.call_later(DISK_RETRY_S, self._tick)


def _prepare(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (room TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    db.row_factory = sqlite3.Row


def _probe(db: sqlite3.Connection) -> None:
    """One real write. A full disk opens and reads fine; the log emptied first makes this
    write need new space, as every later one would."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at REAL)")
        db.execute("INSERT OR REPLACE INTO store_probe (id, at) VALUES (1, ?)", (time.time(),))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with suppress(sqlite3.Error):  # the failure being raised is the one worth telling
            db.execute("ROLLBACK")


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


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
