"""An incident's timeline as the console shows it: the gateway publishes a ``valve_changed`` event
for every open alarm a valve is linked to at each of its reports (a stuck valve: open, moving,
partly closed, open, ... across three alarms), ~20 lines per leak that bury the officer steps.
A run of them in a row is one line per valve that changed: how many times, between when, and
its state at the end; the run's own lines stay behind it. The printable record keeps every line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from central.incidents import TimelineEntry

__all__ = ["ValveRun", "rows"]


@dataclass(frozen=True, slots=True)
class ValveChanges:
    """One valve within a run: the states it reported in order, each once in a row (the last
    is its state at the end of the run)."""

    valve_id: str
    states: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class ValveRun:
    """Valve changes in a row on the timeline, said as one line per valve."""

    first: datetime
    last: datetime
    valves: tuple[ValveChanges, ...]
    entries: tuple[TimelineEntry, ...]


def rows(entries: list[TimelineEntry]) -> list[TimelineEntry | ValveRun]:
    """The entries with each run of two or more valve changes in a row made one."""
    out: list[TimelineEntry | ValveRun] = []
    run: list[TimelineEntry] = []
    for entry in [*entries, None]:
        if entry is not None and _valve_change(entry):
            run.append(entry)
            continue
        out += [_run(run)] if len(run) > 1 else run
        run = []
        if entry is not None:
            out.append(entry)
    return out


def _valve_change(entry: TimelineEntry) -> bool:
    return entry.kind == "alarm_event" and entry.detail.get("transition") == "valve_changed"


def _run(entries: list[TimelineEntry]) -> ValveRun:
    """Each valve's states across the run: every alarm linked to a valve repeats its change,
    so a state is kept when it differs from the valve's previous one."""
    states: dict[str, list[str | None]] = {}
    for entry in entries:
        for valve in _listed(entry.detail.get("valves")):
            said = states.setdefault(valve["device_id"], [])
            if not said or said[-1] != valve.get("state"):
                said.append(valve.get("state"))
    return ValveRun(
        first=entries[0].at,
        last=entries[-1].at,
        valves=tuple(ValveChanges(v, tuple(s)) for v, s in states.items()),
        entries=tuple(entries),
    )


def _listed(raw: Any) -> list[dict[str, Any]]:
    return [v for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []
