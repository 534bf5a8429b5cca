"""InfluxDB line protocol, built by one pure function: escaping here, nowhere else.

Names and tag values come from the registry (site ids, districts, site types) and from devices
(device ids): whatever they hold, a point encodes to exactly one line with exactly its own tags and
fields. Separators inside names are backslash-escaped and control characters (a newline would end
the line and start a forged one) are replaced by U+FFFD, so nothing can be injected.

A backslash in a name (measurement, tag key or value, field key) becomes U+FF3C, the fullwidth
one: InfluxDB 1.x keeps an escaped ``\\`` in a tag as two backslashes and refuses a tag value
ending in one, so no escaping reads back the same everywhere. String field values keep theirs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Final

__all__ = ["FieldValue", "Point", "Priority", "encode", "time_ns"]

FieldValue = bool | int | float | str

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# InfluxDB integers are signed 64-bit; a larger one would make the whole batch fail to parse.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1


class Priority(IntEnum):
    """Spool classes: periodic telemetry may be dropped when the spool is full, alarms never."""

    TELEMETRY = 0
    ALARM = 1


@dataclass(frozen=True, slots=True)
class Point:
    """One line: ``measurement,tags fields time``; time in ns since the epoch (receive time)."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int
    priority: Priority = Priority.TELEMETRY


def time_ns(at: datetime) -> int:
    """Exact ns since the epoch of an aware datetime (float seconds would lose the µs)."""
    if at.tzinfo is None:
        raise ValueError(f"time {at.isoformat()} has no time zone; telemetry times are UTC")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _clean(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _clean_name(text: str) -> str:
    return _clean(text).replace("\\", "\uff3c")


# Names are a bounded set (the schema's keys, the registry's sites, districts and devices), so
# caching their escaped form makes encoding a point mostly dictionary lookups.
@functools.lru_cache(maxsize=65_536)
def _escape_name(text: str) -> str:
    """Tag keys, tag values, field keys: the three separators."""
    return _clean_name(text).replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


@functools.lru_cache(maxsize=64)
def _escape_measurement(text: str) -> str:
    return _clean_name(text).replace(",", r"\,").replace(" ", r"\ ")


def _field_value(key: str, value: FieldValue) -> str:
    # The exact common types first (a report has a dozen fields), then their subclasses.
    if type(value) is int:
        return _int_value(key, value)
    if type(value) is float:
        return _float_value(key, value)
    # bool before int: it is an int subclass, and InfluxDB types a field by its first write.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_value(key, value)
    if isinstance(value, float):
        return _float_value(key, value)
    escaped = _clean(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _int_value(key: str, value: int) -> str:
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"field {key!r}: integer {value} does not fit in 64 bits")
    return f"{value}i"


def _float_value(key: str, value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"field {key!r}: {value} is not a finite number")
    return repr(value)


@functools.lru_cache(maxsize=65_536)
def _tags_text(tags: tuple[tuple[str, str], ...]) -> str:
    """``,key=value`` for each tag with a value, sorted by key (a device's tags: one lookup)."""
    if any(not k for k, _ in tags):
        raise ValueError("tag and field keys must not be empty")
    return "".join(f",{_escape_name(k)}={_escape_name(v)}" for k, v in sorted(tags) if v)


@functools.lru_cache(maxsize=1_024)
def _field_keys(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each field key with its escaped ``key=``, sorted by key (a point's layout: one lookup)."""
    if any(not k for k in keys):
        raise ValueError("tag and field keys must not be empty")
    return tuple((k, f"{_escape_name(k)}=") for k in sorted(keys))


def encode(point: Point) -> str:
    """The point's line (no trailing newline); ``ValueError`` for a point InfluxDB would refuse.

    Tags are sorted by key (InfluxDB's preferred order) and empty tag values left out (line
    protocol has no empty tag value; InfluxQL's ``tag = ''`` matches the missing tag).
    """
    if not point.measurement:
        raise ValueError("a point needs a measurement name")
    if not point.fields:
        raise ValueError(f"{point.measurement}: a point needs at least one field")
    fields = point.fields
    try:
        keys = _field_keys(tuple(fields))
        head = _escape_measurement(point.measurement) + _tags_text(tuple(point.tags.items()))
    except ValueError as exc:
        raise ValueError(f"{point.measurement}: {exc}") from None
    values = ",".join([key + _field_value(k, fields[k]) for k, key in keys])
    return f"{head} {values} {point.time_ns}"
