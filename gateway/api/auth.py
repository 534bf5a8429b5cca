"""Who is asking: API tokens (``Authorization: Bearer``), console sessions (a cookie, with a
CSRF token for every write), what each role may do, and a login rate limit.

Sessions live in memory: a gateway restart logs everyone out of the console, which is safe and
costs a login. API tokens are in the store (:class:`gateway.users.Users`).
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.users import Role, User

__all__ = [
    "LOGIN_TRIES",
    "LOGIN_WINDOW_S",
    "SESSION_COOKIE",
    "SESSION_S",
    "LoginLimiter",
    "Permission",
    "Session",
    "Sessions",
    "allowed",
    "csrf_ok",
]

SESSION_COOKIE: Final = "gasgate_session"
SESSION_S: Final = 12 * 3600.0
LOGIN_TRIES: Final = 5  # failed logins per name, and per client address, ...
LOGIN_WINDOW_S: Final = 300.0  # ... within this many seconds; then 429 until the oldest ages out
_MAX_KEYS: Final = 10_000


class Permission(StrEnum):
    READ = "read"  # alarms, devices, sites (a site_user: their own site only)
    READ_CONTACT_PHONES = "read_contact_phones"
    READ_AUDIT = "read_audit"  # coverage audit, user writes
    ANSWER = "answer"  # acknowledge, resolve
    SUPPRESS = "suppress"  # shelve, unshelve, out of service
    IMPORT_REGISTRY = "import_registry"


_GRANTS: Final = {
    Role.DUTY_OFFICER: {Permission.READ, Permission.READ_CONTACT_PHONES, Permission.ANSWER},
    Role.SUPERVISOR: {
        Permission.READ,
        Permission.READ_CONTACT_PHONES,
        Permission.READ_AUDIT,
        Permission.ANSWER,
        Permission.SUPPRESS,
    },
    Role.REGULATOR: {Permission.READ, Permission.READ_AUDIT},
    Role.INSTALLER: {Permission.READ, Permission.READ_CONTACT_PHONES, Permission.IMPORT_REGISTRY},
    Role.SITE_USER: {Permission.READ, Permission.READ_CONTACT_PHONES},
}


def allowed(user: User, permission: Permission) -> bool:
    return permission in _GRANTS[user.role]


@dataclass(slots=True)
class Session:
    user: User
    csrf: str
    expires_mono: float


class Sessions:
    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self, user: User, now_mono: float) -> tuple[str, Session]:
        self._expire(now_mono)
        session_id = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now_mono + SESSION_S)
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str, now_mono: float) -> Session | None:
        session = self._by_id.get(session_id)
        if session is None or session.expires_mono <= now_mono:
            self._by_id.pop(session_id, None)
            return None
        return session

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _expire(self, now_mono: float) -> None:
        for sid in [s for s, v in self._by_id.items() if v.expires_mono <= now_mono]:
            del self._by_id[sid]


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf, presented)


class LoginLimiter:
    """Failed logins, counted per user name and per client address over a sliding window."""

    def __init__(self, tries: int = LOGIN_TRIES, window_s: float = LOGIN_WINDOW_S) -> None:
        self._tries = tries
        self._window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, keys: tuple[str, ...], now_mono: float) -> bool:
        return any(len(self._recent(k, now_mono)) >= self._tries for k in keys)

    def failed(self, keys: tuple[str, ...], now_mono: float) -> None:
        if len(self._failures) > _MAX_KEYS:  # many names tried: forget the ones aged out
            for key in [k for k in self._failures if not self._recent(k, now_mono)]:
                del self._failures[key]
        for key in keys:
            self._recent(key, now_mono).append(now_mono)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now_mono: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now_mono - self._window_s:
            times.popleft()
        return times
