"""Logging for every gasgate process: JSON lines for machines, plain text for people, no secrets.

``setup_logging`` installs one handler on the root logger. Format ``auto`` writes JSON lines when
stderr is not a terminal (journald, ``docker logs``, a file) and text when a person is watching.
A JSON line carries ``ts`` (UTC, RFC 3339, ms), ``level``, ``logger``, ``msg`` and every field
passed with ``extra=``; an exception adds ``exc``.

Every record passes :class:`RedactSecrets` first: values of keys that look secret (password,
token, secret, hmac, api key, authorization) and the password in ``user:pass@`` URLs become
``***``, in the message, its arguments, the extra fields and the traceback alike. Broker URLs
and webhook settings are logged often enough that relying on each caller's care is not enough.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

from gateway.errors import ConfigError

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "LogGate",
    "RedactSecrets",
    "TextFormatter",
    "redact",
    "setup_logging",
]

LogFormat = Literal["auto", "json", "text"]


class LogGate:
    """At most one log line every ``every_s`` for one kind of bad input (a flood cannot fill
    the disk); the lines held back are counted and said with the next one."""

    __slots__ = ("_every_s", "_next_mono", "suppressed")

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._next_mono = 0.0
        self.suppressed = 0

    def admit(self, now: float) -> int | None:
        """How many lines were held back before this one if it may be logged now; else None."""
        if now < self._next_mono:
            self.suppressed += 1
            return None
        self._next_mono = now + self._every_s
        held, self.suppressed = self.suppressed, 0
        return held


MASK: Final = "***"
_SECRET_WORDS: Final = r"(?:password|passwd|pwd|token|secret|hmac|api[_-]?key|credential)"  # noqa: S105
# A key that names a secret: ``influx_token``, ``X-Gasgate-Signature`` is not one, ``pwd`` is.
_SECRET_KEY: Final = re.compile(rf"(?i)(?:{_SECRET_WORDS}|^authorization$|^auth$)")
# ``password=x``, ``token: x``, ``"secret": "x"``, ``?token=x&``: keep the key, mask the value.
_KEY_VALUE: Final = re.compile(
    rf"""(?ix)
    (?P<key>(?<![\w.-])[\w.-]*{_SECRET_WORDS}[\w.-]*["']?\s*[:=]\s*)
    (?P<quote>["'])?
    (?P<value>(?(quote)[^"']*|[^\s"',;&)}}\]]+))
    """
)
# ``Authorization: Bearer x`` / ``Token x`` / ``Basic x``: the scheme stays, the credential goes.
_AUTH_HEADER: Final = re.compile(
    r"(?i)(?P<key>authorization[\"']?\s*[:=]\s*[\"']?)(?P<scheme>(?:bearer|token|basic)\s+)?"
    r"[^\s\"',;]+"
)
# ``scheme://user:password@host``: the user stays (it says which account), the password goes.
_URL_PASSWORD: Final = re.compile(r"(?i)(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")

# Substrings without which no pattern above can match ("@" for URL passwords): most lines
# contain none, and a few substring scans cost far less than the patterns.
_HINTS: Final = (
    "pass",
    "pwd",
    "token",
    "secret",
    "hmac",
    "key",
    "credential",
    "authorization",
    "@",
)

_RECORD_FIELDS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def redact(text: str) -> str:
    """``text`` with every secret value it shows replaced by ``***``."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):
        return text
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{m['scheme'] or ''}{MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['quote'] or ''}{MASK}", text)


def _redact_value(key: str, value: object) -> object:
    if _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value("", v) for v in value]
    return value


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class RedactSecrets(logging.Filter):
    """Masks secrets in a record before any handler formats it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A caller's format/argument mismatch must not lose the record (or its secrets' mask).
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        for key, value in _extra_fields(record).items():
            setattr(record, key, _redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot encode are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created).astimezone()
        text = (
            f"{at:%H:%M:%S}.{at.microsecond // 1000:03d} {record.levelname:<7} "
            f"{record.name}: {record.getMessage()}"
        )
        extras = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        text = f"{text} {extras}" if extras else text
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{record.stack_info}"
        return text


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        raise ConfigError(f"log level {level!r}: expected one of debug, info, warning, error")
    return number


def setup_logging(
    level: str | int = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> logging.Handler:
    """Route all logging to ``stream`` (stderr) in ``fmt``; calling again replaces the handler."""
    out = stream if stream is not None else sys.stderr
    if fmt not in ("auto", "json", "text"):
        raise ConfigError(f"log format {fmt!r}: expected auto, json or text")
    is_terminal = fmt == "text" or (fmt == "auto" and out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if is_terminal else JsonFormatter())
    handler.addFilter(RedactSecrets())
    handler.set_name("gasgate")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "gasgate"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler
