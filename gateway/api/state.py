"""What the HTTP side reads and calls, in one place: the console's rooms, its users, its
sessions and its live change stream. Light on purpose (no web stack): the API room builds it
when the gateway starts, before FastAPI is loaded in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
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
    blocks the bus: each event makes the client re-read the current state anyway."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Change | None]] = set()

    def publish(self, change: Change) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(change)

    def alarm_changed(self, event: AlarmChanged) -> None:
        a = event.alarm
        data = {"alarm_id": a.alarm_id, "transition": event.transition.value, "by": event.by}
        self.publish(Change("alarm", a.site_id, data))

    def close(self) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Change | None]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue(_QUEUE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


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
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    broadcaster: Broadcaster = field(default_factory=Broadcaster)
