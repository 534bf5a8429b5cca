"""An incident's timeline as the console shows it: the gateway publishes a ``valve_changed`` event
for every open alarm a valve is linked to at each of its reports (a stuck valve: open, moving,
partly closed, open, ... across three alarms), ~20 lines per leak that bury the officer steps.
A run of them in a row is one line per valve that changed: how many times, between when, and
its state at the end; the run's own lines stay behind it. An officer's command to the gateway
is written three times (queued, sent, the gateway's answer): it is one line whose state moves,
at its first time, with the time of each step. The printable record keeps every line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from central.incidents import TimelineEntry

__all__ = ["CommandSteps", "ValveRun", "rows"]


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


@dataclass(slots=True)
class CommandSteps:
    """One command to the gateway as far as it went: queued at the center (its first entry),
    sent to the gateway's broker, answered (``accepted``: done; refused, with its reason)."""

    queued: TimelineEntry
    sent: datetime | None = None
    answer: TimelineEntry | None = None


def rows(entries: list[TimelineEntry]) -> list[TimelineEntry | ValveRun | CommandSteps]:
    """The entries with each run of two or more valve changes in a row made one, and each
    command's steps made one line where it was queued."""
    out: list[TimelineEntry | ValveRun | CommandSteps] = []
    run: list[TimelineEntry] = []
    for entry in [*_commands(entries), None]:
        if isinstance(entry, TimelineEntry) and _valve_change(entry):
            run.append(entry)
            continue
        out += [_run(run)] if len(run) > 1 else run
        run = []
        if entry is not None:
            out.append(entry)
    return out


def _commands(entries: list[TimelineEntry]) -> list[TimelineEntry | CommandSteps]:
    """A command's queued entry as its steps, its later entries (sent, answer) folded in; a
    step whose command was not seen queued (an older timeline) stays a line of its own."""
    out: list[TimelineEntry | CommandSteps] = []
    steps: dict[str, CommandSteps] = {}
    for entry in entries:
        cmd_id = entry.detail.get("cmd_id")
        said = steps.get(cmd_id) if isinstance(cmd_id, str) else None
        if entry.kind == "command" and entry.detail.get("event") is None and cmd_id:
            steps[cmd_id] = CommandSteps(entry)
            out.append(steps[cmd_id])
        elif said is not None and entry.kind == "command" and said.sent is None:
            said.sent = entry.at
        elif said is not None and entry.kind == "reply" and said.answer is None:
            said.answer = entry
        else:
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
