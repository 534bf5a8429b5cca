"""Who is asking: API tokens (``Authorization: Bearer``), console sessions (a cookie, with a
CSRF token for every write), what each role may do, and a login rate limit.

Sessions live in memory: a gateway restart logs everyone out of the console, which is safe and
costs a login. API tokens are in the store (:class:`gateway.users.Users`).
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.users import Role, User

__all__ = [
    "LOGIN_TRIES",
    "LOGIN_TRIES_PER_ADDRESS",
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
# Failed logins allowed within the window, per user name and per client address; then 429
# until the oldest ages out. The address allows more: a duty room behind one proxy address
# must not be locked out by one person mistyping (or by someone failing on purpose).
LOGIN_TRIES: Final = 5
LOGIN_TRIES_PER_ADDRESS: Final = 20
LOGIN_WINDOW_S: Final = 300.0
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
    """Failed logins over a sliding window, per user name and per client address."""

    def __init__(self, window_s: float = LOGIN_WINDOW_S) -> None:
        self._window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, ...]:
        return (f"name:{name}", f"addr:{address}")

    def blocked(self, keys: tuple[str, ...], now_mono: float) -> bool:
        return self.retry_after(keys, now_mono) > 0

    def retry_after(self, keys: tuple[str, ...], now_mono: float) -> int:
        """Whole seconds until every key is below its limit again (0: not blocked): when
        enough of its oldest failures have aged out of the window. For ``Retry-After``."""
        wait = 0.0
        for key in keys:
            times = self._recent(key, now_mono)
            over = len(times) - _limit(key)
            if over >= 0:  # the failure that must age out for one more try
                wait = max(wait, times[over] + self._window_s - now_mono)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, keys: tuple[str, ...], now_mono: float) -> None:
        if len(self._failures) > _MAX_KEYS:  # many names tried: forget the ones aged out
            for key in [k for k in self._failures if not self._recent(k, now_mono)]:
                del self._failures[key]
        for key in keys:
            self._recent(key, now_mono).append(now_mono)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        """A login worked: its name starts afresh; the address does not (one good account
        must not reset a guessing run from the same place)."""
        for key in keys:
            if not key.startswith("addr:"):
                self._failures.pop(key, None)

    def _recent(self, key: str, now_mono: float) -> deque[float]:
        """The key's failures still inside the window (older ones dropped)."""
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now_mono - self._window_s:
            times.popleft()
        return times


def _limit(key: str) -> int:
    return LOGIN_TRIES_PER_ADDRESS if key.startswith("addr:") else LOGIN_TRIES
