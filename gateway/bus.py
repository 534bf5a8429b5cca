"""A small typed event bus. Per-key ordering lives here, once.

Every event has a ``key`` (a device id, an alarm id). Events with the same key are handled one at
a time, in publish order, by every subscriber in subscription order: two reports from one
detector milliseconds apart can never race each other into two alarms. Different keys run
concurrently. A lane (the queue of one key) exists only while it has work, so a hundred thousand
quiet devices cost nothing.

A failing handler is logged and counted; it never stops the lane or the other handlers.
Handlers should not wait on the network: a room that must (publish with QoS 1, write to
InfluxDB) hands the work to its own task or queue, so one slow sink cannot hold back a leak.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

__all__ = ["Bus", "Event", "Handler"]

log = logging.getLogger(__name__)


class Event(Protocol):
    @property
    def key(self) -> str:
        """Events with equal keys are handled in order, one at a time."""


E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]


class Bus:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Any], list[tuple[str, Handler[Any]]]] = defaultdict(list)
        self._lanes: dict[str, deque[Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()

    def subscribe(self, event_type: type[E], handler: Handler[E], *, name: str = "") -> None:
        """Call ``handler`` for every event of exactly ``event_type``."""
        label = name or getattr(handler, "__qualname__", repr(handler))
        self._handlers[event_type].append((label, handler))

    def publish(self, event: Event) -> None:
        """Queue ``event`` on its key's lane; never blocks, never raises for a handler."""
        self.counts[f"published.{type(event).__name__}"] += 1
        lane = self._lanes.get(event.key)
        if lane is not None:
            lane.append(event)
            return
        self._lanes[event.key] = deque((event,))
        task = asyncio.get_running_loop().create_task(self._drain(event.key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def backlog(self) -> int:
        """Events queued or in a handler right now."""
        return sum(len(lane) for lane in self._lanes.values())

    async def join(self) -> None:
        """Wait until every lane is empty, including events that handlers publish meanwhile."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let queued events finish (bounded), then cancel what is left."""
        try:
            await asyncio.wait_for(self.join(), timeout_s)
        except TimeoutError:
            log.error("bus stopped with %d event(s) unhandled", self.backlog)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _drain(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                # The event stays queued while it is handled, so publish() appends behind it.
                await self._dispatch(lane[0])
                lane.popleft()
        finally:
            del self._lanes[key]

    async def _dispatch(self, event: Event) -> None:
        for label, handler in self._handlers.get(type(event), ()):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.counts[f"handler_error.{label}"] += 1
                log.exception(
                    "handler %s failed on %s (key %s)", label, type(event).__name__, event.key
                )
