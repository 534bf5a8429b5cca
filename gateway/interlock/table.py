"""The interlock's link table and its leak test: pure (bytes in, values out, no I/O).

The table is all the interlock holds: for each leak detector that has linked shut-off valves,
those valves and the gas level at which it closes them (the detector's site's first alarm
level, ``leak.low_lel_pct``). The gateway writes it as JSON whenever the registry or the rules
change; the interlock process reads it.

:func:`is_leak` decides on a raw ``kit/v1`` report without validating the rest of it: a report
the gateway would refuse for another reason (an odd device time, an unknown key) is still a
leak if its detector says so. Whatever the bytes, it answers and never raises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from firmware_bridge.ksp import DetectorFlag, DeviceKind
from gateway.registry.model import DeviceInfo, Site
from rules.schema import RuleSet

__all__ = ["Entry", "LinkSource", "build", "dumps", "is_leak", "loads"]

_LEAK_FLAGS: Final = frozenset({DetectorFlag.ALARM_LOW.value, DetectorFlag.ALARM_HIGH.value})
VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One detector's linked valves and the %LEL at which they are closed."""

    valves: tuple[str, ...]
    close_at_lel: float


class LinkSource(Protocol):
    """What :func:`build` reads from :class:`gateway.registry.Registry`."""

    def devices(self) -> tuple[DeviceInfo, ...]: ...
    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]: ...
    def site(self, site_id: str) -> Site | None: ...


def build(links: LinkSource, rules: RuleSet) -> dict[str, Entry]:
    """The table for the registry's linked detectors under ``rules`` (per-site thresholds)."""
    table: dict[str, Entry] = {}
    for device in links.devices():
        valves = links.valves_for_detector(device.device_id)
        if device.kind is not DeviceKind.DETECTOR or not valves:
            continue
        site = links.site(device.site_id)
        site_type = site.site_type.value if site is not None else None
        leak = rules.for_site(device.site_id, site_type).leak
        table[device.device_id] = Entry(valves, float(leak.low_lel_pct))
    return table


def dumps(table: Mapping[str, Entry]) -> bytes:
    body = {d: {"valves": list(e.valves), "close_at_lel": e.close_at_lel} for d, e in table.items()}
    return json.dumps({"version": VERSION, "detectors": body}, sort_keys=True).encode()


def loads(data: bytes) -> dict[str, Entry]:
    """The table written by :func:`dumps`; ``ValueError`` with the reason if it is not one."""
    try:
        doc = json.loads(data)
        version = doc.get("version")
        detectors = doc["detectors"] if version == VERSION else {}
        table = {
            str(d): Entry(tuple(str(v) for v in e["valves"]), float(e["close_at_lel"]))
            for d, e in detectors.items()
        }
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not an interlock table: {exc}") from None
    if version != VERSION:
        raise ValueError(f"not an interlock table: version {version!r}, expected {VERSION}")
    return table


def is_leak(payload: bytes, entry: Entry) -> bool:
    """Whether a detector's report says gas: its level at or above the entry's threshold, or
    its own alarm flag. Anything that is not a detector report with such a reading: False."""
    try:
        report = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return False
    reading = report.get("detector") if isinstance(report, dict) else None
    if not isinstance(reading, dict):
        return False
    flags = reading.get("flags")
    if isinstance(flags, list) and any(isinstance(f, str) and f in _LEAK_FLAGS for f in flags):
        return True
    lel = reading.get("lel_pct")
    if isinstance(lel, bool) or not isinstance(lel, int | float):
        return False
    return math.isfinite(lel) and lel >= entry.close_at_lel
