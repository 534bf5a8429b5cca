"""The people who use the console and the API: names, roles, password hashes (Argon2id), API
tokens, and the record of every write they make. Kept in the gateway store (room ``users``).

Roles (docs/api.md has the full table):

* ``duty_officer`` answers alarms (acknowledge, resolve);
* ``supervisor`` also shelves alarms and takes them out of service, and reads the audit;
* ``regulator`` reads everything (audit, history, escalation trails) but changes nothing and
  never sees a contact's phone number;
* ``installer`` imports the registry;
* ``site_user`` reads their own site's alarms and devices, nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import GasgateError
from gateway.store import Store, StoreError

__all__ = [
    "MIN_PASSWORD",
    "REFUSED_KEPT",
    "REFUSED_PER_MINUTE",
    "Role",
    "User",
    "UserError",
    "Users",
    "Write",
]

log = logging.getLogger(__name__)

MIN_PASSWORD: Final = 10
# A refused write (403, 404, 409, ...) costs the asker nothing, so a script or a finger on a
# button could fill the disk with them: per user, at most REFUSED_PER_MINUTE are recorded a
# minute (the rest are counted, and one row says how many when the next minute's is recorded),
# and the table keeps the newest REFUSED_KEPT refused rows. Accepted writes are all kept: each
# needs a role that grants it.
REFUSED_PER_MINUTE: Final = 30
REFUSED_KEPT: Final = 10_000
_MINUTE: Final = timedelta(minutes=1)
ROOM: Final = "users"
_MIGRATIONS: Final = (
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        site_id TEXT,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    -- Only a SHA-256 of each token is kept: a copied database hands out no working token.
    CREATE TABLE api_tokens (
        token_sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE user_writes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        name TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # The refused rows, for keeping only the newest REFUSED_KEPT of them.
    """
    CREATE INDEX user_writes_refused ON user_writes (id) WHERE result != 'ok';
    """,
)
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class UserError(GasgateError):
    """A user cannot be added (bad name, weak password, unknown role, missing site)."""


class Role(StrEnum):
    DUTY_OFFICER = "duty_officer"
    SUPERVISOR = "supervisor"
    REGULATOR = "regulator"
    INSTALLER = "installer"
    SITE_USER = "site_user"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    site_id: str | None = None  # set for site_user only


@dataclass(frozen=True, slots=True)
class Write:
    at: datetime
    name: str
    action: str
    target: str
    result: str
    detail: str


@dataclass(slots=True)
class _Refusals:
    """One user's refused writes in the current minute."""

    since: datetime
    recorded: int = 0
    unrecorded: int = 0


class Users:
    """The users table. :meth:`prepare` creates it; every other method needs it prepared."""

    def __init__(
        self,
        store: Store,
        *,
        refused_per_minute: int = REFUSED_PER_MINUTE,
        refused_kept: int = REFUSED_KEPT,
    ) -> None:
        self._store = store
        # Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): a gateway box
        # is small, and a login must not starve the safety path of memory or CPU.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
        self._dummy = ""
        self._refused_per_minute = refused_per_minute
        self._refused_kept = refused_kept
        # Pruned once this many refused rows were added: at most kept + kept/20 on disk.
        self._prune_every = max(1, refused_kept // 20)
        self._refused_since_prune = 0
        self._refusals: dict[str, _Refusals] = {}  # per user name: the users table bounds it
        self.counts: Counter[str] = Counter()

    @property
    def store(self) -> Store:
        return self._store

    def prepare(self) -> None:
        self._store.migrate(ROOM, _MIGRATIONS)
        self._prune_refused()

    def add(
        self, name: str, role: Role, password: str, at: datetime, site_id: str | None = None
    ) -> User:
        if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
            raise UserError(f"user name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"user {name}: the password needs at least {MIN_PASSWORD} characters")
        if (role is Role.SITE_USER) != (site_id is not None):
            raise UserError(f"user {name}: a site_user needs --site, other roles take none")
        try:
            with self._store.transaction() as db:
                db.execute(
                    "INSERT INTO users (name, role, site_id, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, role.value, site_id, self._hasher.hash(password), at.isoformat()),
                )
        except sqlite3.IntegrityError:
            raise UserError(f"user {name} already exists") from None
        return User(name, role, site_id)

    def get(self, name: str) -> User | None:
        row = self._store.db.execute(
            "SELECT name, role, site_id FROM users WHERE name = ?", (name,)
        ).fetchone()
        return User(row[0], Role(row[1]), row[2]) if row else None

    def all(self) -> list[User]:
        rows = self._store.db.execute("SELECT name, role, site_id FROM users ORDER BY name")
        return [User(r[0], Role(r[1]), r[2]) for r in rows]

    def check_password(self, name: str, password: str) -> User | None:
        """The user if the password is theirs, else None (same work for unknown names)."""
        return self.get(name) if self.verify(self.password_hash(name), password) else None

    def password_hash(self, name: str) -> str | None:
        row = self._store.db.execute(
            "SELECT password_hash FROM users WHERE name = ?", (name,)
        ).fetchone()
        return str(row[0]) if row else None

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches (False for no hash, after the same work). Touches no
        store: the slow part of a login, safe to run in a worker thread."""
        if not self._dummy:
            # Verified against for unknown names, so a login takes as long either way.
            self._dummy = self._hasher.hash(secrets.token_hex(16))
        try:
            self._hasher.verify(password_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def issue_token(self, name: str, at: datetime) -> str:
        """A new API token for ``name``; shown once, only its hash is stored."""
        if self.get(name) is None:
            raise UserError(f"no user {name}")
        token = f"gg_{secrets.token_urlsafe(32)}"
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO api_tokens (token_sha256, name, created_at) VALUES (?, ?, ?)",
                (_sha256(token), name, at.isoformat()),
            )
        return token

    def by_token(self, token: str) -> User | None:
        row = self._store.db.execute(
            "SELECT name FROM api_tokens WHERE token_sha256 = ?", (_sha256(token),)
        ).fetchone()
        return self.get(row[0]) if row else None

    def record_write(
        self, at: datetime, user: User, action: str, target: str, *, result: str, detail: str = ""
    ) -> None:
        """One line per write made through the API or console, refused ones included (any
        ``result`` but ``ok``; bounded: see :data:`REFUSED_PER_MINUTE`)."""
        row = (at.isoformat(), user.name, action, target, result, detail)
        if result == "ok":
            with self._store.transaction() as db:
                db.execute(_INSERT_WRITE, row)
            return
        rows = self._refusal_rows(at, user, row)
        if not rows:
            return
        try:
            # Not fsync'd: a flood of refusals must not cost the event loop a disk sync each.
            with self._store.transaction(durable=False) as db:
                db.executemany(_INSERT_WRITE, rows)
        except (StoreError, sqlite3.Error) as exc:
            # The refusal is answered all the same; only its record is lost, and counted.
            self.counts["refused_write_not_stored"] += 1
            log.warning(
                "user %s: refused %s of %s not recorded: %s", user.name, action, target, exc
            )
            return
        self._refused_since_prune += len(rows)
        if self._refused_since_prune >= self._prune_every:
            self._prune_refused()

    def _refusal_rows(
        self, at: datetime, user: User, row: tuple[str, ...]
    ) -> list[tuple[str, ...]]:
        """The rows to write for one refused write: none past the user's limit this minute;
        with a row saying how many were not recorded in the user's previous minute."""
        window = self._refusals.get(user.name)
        rows: list[tuple[str, ...]] = []
        if window is None or not window.since <= at < window.since + _MINUTE:
            if window is not None and window.unrecorded:
                rows.append((
                    at.isoformat(), user.name, "refused_not_recorded", "", "flood",
                    f"{window.unrecorded} more refused write(s) from {window.since.isoformat()}"
                    f" not recorded (over {self._refused_per_minute} a minute)",
                ))  # fmt: skip
            window = self._refusals[user.name] = _Refusals(at)
        if window.recorded >= self._refused_per_minute:
            window.unrecorded += 1
            self.counts["refused_write_not_recorded"] += 1
            if window.unrecorded == 1:
                log.warning(
                    "user %s: over %d refused writes this minute; the rest are counted, not"
                    " recorded", user.name, self._refused_per_minute,
                )  # fmt: skip
            return rows
        window.recorded += 1
        rows.append(row)
        return rows

    def _prune_refused(self) -> None:
        """Keep the newest :data:`REFUSED_KEPT` refused rows (accepted ones are never deleted)."""
        self._refused_since_prune = 0
        try:
            with self._store.transaction(durable=False) as db:
                db.execute(
                    "DELETE FROM user_writes WHERE result != 'ok' AND id <= (SELECT id FROM"
                    " user_writes WHERE result != 'ok' ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self._refused_kept,),
                )
        except (StoreError, sqlite3.Error) as exc:
            log.warning("old refused writes not deleted: %s", exc)

    def writes(self, limit: int = 200) -> list[Write]:
        rows = self._store.db.execute(
            "SELECT at, name, action, target, result, detail FROM user_writes"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Write(datetime.fromisoformat(r[0]), *r[1:]) for r in rows]


_INSERT_WRITE: Final = (
    "INSERT INTO user_writes (at, name, action, target, result, detail) VALUES (?, ?, ?, ?, ?, ?)"
)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
