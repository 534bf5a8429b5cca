"""The alert page link an SMS carries: ``{base_url}/a/{token}``, signed, short, expiring.

The gateway writes the link itself, so an SMS never waits for the monitoring center; the center
checks it with the same secret (``escalation.alert_page.secret`` at the gateway,
``GASGATE_CENTRAL_ALERT_SECRET`` at the center). A token is bound to one alarm (hence its
incident) and one contact of its site, and says when it expires. Pure: bytes and strings in,
values out, no I/O and no clock of its own.

Layout (then base64url without padding): version (1 byte), expiry in minutes since the Unix
epoch (4 bytes, big-endian), the contact's index in the site's contact list (1 byte), the
contact's language (1 byte: 0 zh, 1 en), the alarm id (UTF-8; a ``{gateway_id}-{ULID}`` id keeps
its ULID as 16 bytes instead of 26 characters, flagged by the version), then the first 12 bytes
of HMAC-SHA256 over all of that. 96 bits of MAC are far beyond what an online guesser, rate
limited by the center, could try; a 30-character alarm id gives a 62-character token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.errors import GasgateError

__all__ = ["AlertGrant", "InvalidAlertLink", "issue", "link", "verify"]

_PLAIN: Final = 1  # the alarm id as UTF-8
_ULID: Final = 2  # "{prefix}-{ULID}": the ULID as 16 bytes
_MAC_BYTES: Final = 12
_HEAD: Final = 7  # version, expiry (4), contact, language
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LANGS: Final = ("zh", "en")
_CONTEXT: Final = b"gasgate-alert-link/1\x00"  # a MAC made for something else never fits


class InvalidAlertLink(GasgateError):
    """A token that is forged, altered, malformed or expired; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"alert link {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AlertGrant:
    alarm_id: str
    contact: int  # index in the site's contacts, as the alarm event lists them
    lang: str  # "zh" or "en"
    expires_at: datetime


def issue(secret: bytes, grant: AlertGrant) -> str:
    if not secret:
        raise ValueError("an alert link needs a secret")
    if not 0 <= grant.contact <= 255:
        raise ValueError("contact index out of range 0..255")
    version, alarm = _pack_alarm(grant.alarm_id)
    minutes = int(grant.expires_at.timestamp() // 60)
    body = (
        bytes((version,))
        + minutes.to_bytes(4, "big")
        + bytes((grant.contact, _LANGS.index(grant.lang) if grant.lang in _LANGS else 0))
        + alarm
    )
    return base64.urlsafe_b64encode(body + _mac(secret, body)).rstrip(b"=").decode("ascii")


def link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/a/{token}"


def verify(secret: bytes, token: str, now: datetime) -> AlertGrant:
    """The grant a token carries; raises :class:`InvalidAlertLink` (``forged`` covers every
    alteration, ``expired`` a genuine token past its time)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidAlertLink("malformed") from None
    if len(raw) <= _HEAD + _MAC_BYTES:
        raise InvalidAlertLink("malformed")
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not secret or not hmac.compare_digest(mac, _mac(secret, body)):
        raise InvalidAlertLink("forged")
    expires_at = datetime.fromtimestamp(int.from_bytes(body[1:5], "big") * 60, UTC)
    if now >= expires_at:
        raise InvalidAlertLink("expired")
    alarm_id = _unpack_alarm(body[0], body[_HEAD:])
    return AlertGrant(alarm_id, body[5], _LANGS[body[6]] if body[6] < 2 else "zh", expires_at)


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + body, hashlib.sha256).digest()[:_MAC_BYTES]


def _pack_alarm(alarm_id: str) -> tuple[int, bytes]:
    prefix, _, ulid = alarm_id.rpartition("-")
    if prefix and len(ulid) == 26 and all(c in _CROCKFORD for c in ulid) and ulid[0] <= "7":
        number = 0
        for char in ulid:
            number = number * 32 + _CROCKFORD.index(char)
        return _ULID, prefix.encode() + number.to_bytes(16, "big")
    return _PLAIN, alarm_id.encode()


def _unpack_alarm(version: int, data: bytes) -> str:
    if version == _PLAIN:
        return _decode(data)
    if version != _ULID or len(data) < 17:
        raise InvalidAlertLink("malformed")
    number = int.from_bytes(data[-16:], "big")
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(_CROCKFORD[digit])
    return f"{_decode(data[:-16])}-{''.join(reversed(chars))}"


def _decode(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidAlertLink("malformed") from None
