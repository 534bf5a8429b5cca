"""What the HTTP side reads and calls, in one place: the console's rooms, its users, its
sessions and its live change stream. Light on purpose (no web stack): the API room builds it
when the gateway starts, before FastAPI is loaded in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway.alarms import Alarms
from gateway.api.auth import LoginLimiter, Sessions
from gateway.api.devices import DeviceStates
from gateway.clock import Clock
from gateway.events import AlarmChanged
from gateway.linkage import Linkage
from gateway.metrics import GatewayMetrics
from gateway.registry import Registry
from gateway.store import Store
from gateway.supervision import Supervision
from gateway.users import Users

__all__ = ["ApiContext", "Broadcaster", "Change"]

_QUEUE: Final = 256


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the console should re-read: an alarm changed, or a valve moved."""

    kind: str  # "alarm" or "valve"
    site_id: str | None
    data: Mapping[str, str | None]


class Broadcaster:
    """Changes to every open event stream. A stream that falls behind misses events, never
    blocks the bus: each event makes the client re-read the current state anyway.

    :meth:`close` ends every stream, a full one too, and any opened after it: a stream left
    open when the HTTP server stops is cancelled mid-send (an ERROR traceback in the log)."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Change | None]] = set()
        self._closed = False

    def publish(self, change: Change) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(change)

    def alarm_changed(self, event: AlarmChanged) -> None:
        a = event.alarm
        data = {"alarm_id": a.alarm_id, "transition": event.transition.value, "by": event.by}
        self.publish(Change("alarm", a.site_id, data))

    def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            _end(queue)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[Change | None]]:
        """A queue of changes, ended by ``None``. A plain (not async) context manager: the
        stream's generator holds no second async generator whose finalisation order at a
        stop could raise "generator didn't stop after athrow()"."""
        queue: asyncio.Queue[Change | None] = asyncio.Queue(_QUEUE)
        if self._closed:
            _end(queue)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


def _end(queue: asyncio.Queue[Change | None]) -> None:
    """End a stream at once: what it had not sent yet is dropped (its page re-reads anyway)."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)


@dataclass(slots=True)
class ApiContext:
    store: Store
    clock: Clock
    registry: Registry
    alarms: Alarms
    supervision: Supervision
    linkage: Linkage
    metrics: GatewayMetrics
    users: Users
    devices: DeviceStates
    readiness: Callable[[], Mapping[str, bool]]
    timezone: str = "Asia/Shanghai"  # the zone the console gives times in (escalation.timezone)
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    broadcaster: Broadcaster = field(default_factory=Broadcaster)
