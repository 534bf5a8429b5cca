"""The monitoring center's people: names, roles, password hashes (Argon2id), API tokens and
console sessions in PostgreSQL (tables ``users``, ``tokens``, ``sessions``), shared by every
instance.

Roles and what they may do are the gateway's (:class:`gateway.users.Role`,
:func:`gateway.api.auth.allowed`): one word means one thing at the edge and at the center. An
officer may be limited to some districts (``districts``; none: every district). The center has no
``site_user``: a household's people use the gateway's console or the alert page.

``gasgate central user add NAME --role R --db DSN [--password-stdin] [--district D ...]`` and
``gasgate central user token NAME --db DSN``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import click
import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool

from gateway.api.auth import SESSION_S, Permission, allowed
from gateway.errors import GasgateError
from gateway.users import MIN_PASSWORD, Role, User

__all__ = [
    "CentralUsers",
    "Officer",
    "OpenSession",
    "UserError",
    "add_user",
    "issue_token",
    "user",
]

_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_ROLES: Final = tuple(r.value for r in Role if r is not Role.SITE_USER)
# Argon2id at OWASP's recommended minimum, as at the gateway: the same hashes verify at both.
_HASHER: Final = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class UserError(GasgateError):
    """A user cannot be added or given a token (bad name, weak password, unknown user)."""


@dataclass(frozen=True, slots=True)
class Officer:
    """A center user. ``districts`` None: every district."""

    name: str
    role: Role
    districts: tuple[str, ...] | None = None

    def may(self, permission: Permission) -> bool:
        return allowed(User(self.name, self.role), permission)

    def sees(self, district: str | None) -> bool:
        return self.districts is None or (district or "") in self.districts


@dataclass(frozen=True, slots=True)
class OpenSession:
    """A console session: its user (as the users table says now) and its CSRF token."""

    officer: Officer
    csrf: str


def _officer(row: tuple[Any, ...]) -> Officer:
    name, role, districts = row[:3]
    return Officer(name, Role(role), tuple(districts) if districts is not None else None)


def add_user(
    conn: psycopg.Connection[tuple[object, ...]],
    name: str,
    role: Role,
    password: str | None,
    *,
    districts: Sequence[str],
    at: datetime,
) -> Officer:
    """Add a user (committed). ``password`` None: a token-only user (scripts, other systems)."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise UserError(f"user name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if role is Role.SITE_USER:
        raise UserError("the center has no site_user: a site's people use the gateway console")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserError(f"user {name}: the password needs at least {MIN_PASSWORD} characters")
    hashed = _HASHER.hash(password) if password is not None else None
    limited = sorted({d.strip() for d in districts if d.strip()}) or None
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO users (name, role, password_hash, districts, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (name, role.value, hashed, limited, at),
            )
    except psycopg.errors.UniqueViolation:
        raise UserError(f"user {name} already exists") from None
    return Officer(name, role, tuple(limited) if limited else None)


def issue_token(conn: psycopg.Connection[tuple[object, ...]], name: str, at: datetime) -> str:
    """A new API token for ``name`` (committed); shown once, only its SHA-256 is kept."""
    token = f"ggc_{secrets.token_urlsafe(32)}"
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone() is None:
            raise UserError(f"no user {name}")
        conn.execute(
            "INSERT INTO tokens (token_sha256, name, created_at) VALUES (%s, %s, %s)",
            (_sha256(token), name, at),
        )
    return token


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CentralUsers:
    """Look-ups for the API, on the instance's pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        # Verified against for unknown names, so a login takes as long either way.
        self._dummy = _HASHER.hash(secrets.token_hex(16))

    async def get(self, name: str) -> Officer | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT name, role, districts FROM users WHERE name = %s", (name,)
            )
            row = await cur.fetchone()
        return _officer(row) if row else None

    async def by_token(self, token: str) -> Officer | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT u.name, u.role, u.districts FROM tokens t JOIN users u USING (name)"
                " WHERE t.token_sha256 = %s",
                (_sha256(token),),
            )
            row = await cur.fetchone()
        return _officer(row) if row else None

    async def check_password(self, name: str, password: str) -> Officer | None:
        """The user if the password is theirs, else None (the same work for unknown names).
        Argon2 runs in a worker thread: it takes tens of milliseconds."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT password_hash FROM users WHERE name = %s", (name,))
            row = await cur.fetchone()
        stored = row[0] if row else None
        if not await asyncio.to_thread(self._verify, stored, password):
            return None
        return await self.get(name)

    async def open_session(self, officer: Officer, now: datetime) -> tuple[str, str]:
        """A new console session (kept in the database: every instance knows it); returns its
        id (the cookie) and CSRF token. Expired sessions are cleared on the way."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM sessions WHERE expires_at <= %s", (now,))
            await conn.execute(
                "INSERT INTO sessions (session_sha256, name, csrf, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (_sha256(session_id), officer.name, csrf, now, now + timedelta(seconds=SESSION_S)),
            )
        return session_id, csrf

    async def session(self, session_id: str, now: datetime) -> OpenSession | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT u.name, u.role, u.districts, s.csrf FROM sessions s JOIN users u"
                " USING (name) WHERE s.session_sha256 = %s AND s.expires_at > %s",
                (_sha256(session_id), now),
            )
            row = await cur.fetchone()
        return OpenSession(_officer(row), row[3]) if row else None

    async def close_session(self, session_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM sessions WHERE session_sha256 = %s", (_sha256(session_id),)
            )

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            _HASHER.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored is not None


# --- gasgate central user ... ------------------------------------------------------------------

_db = click.option(
    "--db", "dsn", required=True, envvar="GASGATE_CENTRAL_DB", help="PostgreSQL DSN."
)


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise click.ClickException(f"database {dsn!r}: {exc}") from None


@click.group("user")
def user() -> None:
    """Center users: duty_officer, supervisor, regulator, installer (optionally per district)."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(_ROLES))
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option(
    "--district", "districts", multiple=True, help="Limit the user to this district (repeat)."
)
@_db
def add(name: str, role: str, password_stdin: bool, districts: tuple[str, ...], dsn: str) -> None:
    """Add user NAME with ROLE; asks for the password (hashed with Argon2id)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else _ask_password()
    with _connect(dsn) as conn:
        try:
            added = add_user(
                conn, name, Role(role), password, districts=districts, at=datetime.now(UTC)
            )
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
    where = f" in {', '.join(added.districts)}" if added.districts else ""
    click.echo(f"user {added.name} added: {added.role}{where}")


def _ask_password() -> str:
    try:
        return str(click.prompt("password", hide_input=True, confirmation_prompt=True))
    except click.Abort:
        raise click.ClickException(
            "no password given: without a terminal, pipe it in with --password-stdin"
        ) from None


@user.command("token")
@click.argument("name")
@_db
def token(name: str, dsn: str) -> None:
    """Issue an API token for NAME (printed once; only its hash is kept)."""
    with _connect(dsn) as conn:
        try:
            click.echo(issue_token(conn, name, datetime.now(UTC)))
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
