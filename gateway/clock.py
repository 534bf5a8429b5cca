"""One clock for every room: wall time for records, monotonic time for timers.

Timers run on the monotonic clock, so a wall-clock jump (NTP step, a wrong RTC on an edge box)
can neither fire nor starve them. Tests hand rooms a :class:`ManualClock` and move time with
:meth:`ManualClock.advance` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer"]

log = logging.getLogger(__name__)

_STEP_WARN = timedelta(seconds=1)  # smaller steps back (NTP slews, jitter) are not news


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, UTC, for records: never used to measure an interval."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for intervals and deadlines."""

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` (a plain function; it may create tasks) after ``delay_s`` seconds."""


class SystemClock:
    """The real clocks; timers on the running event loop (whose time is monotonic).

    ``now`` never goes backwards: after the wall clock is stepped back (NTP, an RTC set by
    hand) it repeats the latest time it gave until the wall clock passes it, so the times this
    process records stay in order. Steps forward are taken as corrections.
    """

    def __init__(self) -> None:
        self._latest = datetime.min.replace(tzinfo=UTC)
        self._warned: datetime | None = None

    def now(self) -> datetime:
        wall = self._wall()
        if wall >= self._latest:
            self._latest = wall
        elif self._latest - wall > _STEP_WARN and self._warned != self._latest:
            self._warned = self._latest  # once per step, not on every record
            log.warning(
                "wall clock stepped back %.1f s: record times held at %s until it catches up",
                (self._latest - wall).total_seconds(), self._latest.isoformat(),
            )  # fmt: skip
        return self._latest

    def _wall(self) -> datetime:
        """The system's wall clock (a seam: fault tests step it)."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(max(delay_s, 0.0), callback)


@dataclass(order=True)
class _Entry:
    due: float
    order: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock tests move by hand. ``advance`` runs every timer that comes due, in order."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
        self._mono = 1000.0
        self._timers: list[_Entry] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Timer:
        entry = _Entry(self._mono + max(delay_s, 0.0), next(self._order), callback)
        heapq.heappush(self._timers, entry)
        return entry

    def advance(self, seconds: float) -> None:
        target = self._mono + seconds
        while self._timers and self._timers[0].due <= target:
            entry = heapq.heappop(self._timers)
            self._wall += timedelta(seconds=entry.due - self._mono)
            self._mono = entry.due
            if not entry.cancelled:
                entry.callback()
        self._wall += timedelta(seconds=target - self._mono)
        self._mono = target

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock only, as NTP or a bad RTC would; timers must not notice."""
        self._wall += timedelta(seconds=seconds)
