"""A small typed event bus. Per-key ordering lives here, once.

Every event has a ``key`` (a device id, an alarm id). Events with the same key are handled one at
a time, in publish order, by every subscriber in subscription order: two reports from one
detector milliseconds apart can never race each other into two alarms. Different keys run
concurrently. A lane (the queue of one key) exists only while it has work, so a hundred thousand
quiet devices cost nothing.

:meth:`Bus.publish` never runs a handler itself. Lanes with work wait, in publish order, for
one dispatch callback on the event loop that runs them (``BURST`` lanes at most, then it
yields to I/O and comes back): every handler in gasgate is synchronous, and a task per event
cost more than most handlers. A handler that returns an awaitable moves its lane to a task of
its own until the lane is empty; the other lanes go on meanwhile.

Urgent events (a device's alarm, not its periodic report) jump the queue of waiting lanes, with
everything their handlers publish, and the dispatch callback ends when they are done, so the
close command they queued leaves before the next burst of periodic reports is handled.

:meth:`Bus.when_done` is the other way round: "tell me when all this is handled". Every event
belongs to an epoch: a new event to the current one, an event a handler publishes to its
cause's. ``when_done(callback)`` closes the current epoch and runs ``callback`` once no event of
it, or of an older one, is left. The site MQTT link acknowledges a report to the broker that way:
only after what the report caused (a leak's alarm, committed to disk) is done, so a ``kill -9``
in between leaves the report at the broker, which sends it again.

A failing handler is logged and counted; it never stops the lane or the other handlers: an
exception of any kind from a plain handler (a ``CancelledError`` it let out of a future's
``result()`` too) counts as its failure, not the lane's. Only ``KeyboardInterrupt`` and
``SystemExit`` pass, and they end the process.

Handlers should not wait on the network: a room that must (publish with QoS 1, write to
InfluxDB) hands the work to its own task or queue, so one slow sink cannot hold back a leak.
An async handler is bounded all the same: one that has not finished after
``handler_timeout_s`` is cancelled, logged with its lane's key and counted
(``handler_timeout.<name>``), and the lane goes on; so does it when the handler's awaitable is
cancelled by someone else. :meth:`Bus.lanes` says what each busy lane waits for.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final, Protocol, TypeVar

__all__ = ["BURST", "HANDLER_TIMEOUT_S", "Bus", "Event", "Handler"]

log = logging.getLogger(__name__)

BURST: Final = 64  # lanes per dispatch callback (~6 ms of handlers), then I/O gets its turn
# An async handler still running after this holds its key's lane (a detector's next reports, a
# second leak): it is cancelled and the lane goes on.
HANDLER_TIMEOUT_S: Final = 5.0
_FATAL: Final = (KeyboardInterrupt, SystemExit)  # the only exceptions a handler may pass on


class Event(Protocol):
    @property
    def key(self) -> str:
        """Events with equal keys are handled in order, one at a time."""


E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]

# The epoch of the event whose handlers run now (None: nothing is being handled). A context
# variable, so that an async handler's task keeps it across its awaits.
_CAUSE: ContextVar[int | None] = ContextVar("gasgate_bus_cause", default=None)


class Bus:
    def __init__(self, *, handler_timeout_s: float = HANDLER_TIMEOUT_S) -> None:
        self.handler_timeout_s = handler_timeout_s
        self._handlers: defaultdict[type[Any], list[tuple[str, Handler[Any]]]] = defaultdict(list)
        self._lanes: dict[str, deque[tuple[Event, int]]] = {}  # (event, its epoch)
        self._ready: deque[str] = deque()  # keys of lanes waiting for the dispatch callback
        self._urgent: set[str] = set()  # keys of urgent lanes, at the head of _ready
        self._urgent_waiting = 0  # how many of them are still in _ready
        self._in_urgent = False  # an urgent lane's handlers are running
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._awaiting: dict[str, tuple[str, float]] = {}  # lane in a task: (handler, since)
        self._idle = asyncio.Event()
        self._idle.set()
        self._epoch = 0  # the epoch of events published from outside any handler
        self._unhandled: dict[int, int] = {}  # epoch -> events left, oldest epoch first
        self._waiters: deque[tuple[int, Callable[[], object]]] = deque()
        self.counts: Counter[str] = Counter()

    def subscribe(self, event_type: type[E], handler: Handler[E], *, name: str = "") -> None:
        """Call ``handler`` for every event of exactly ``event_type``."""
        label = name or getattr(handler, "__qualname__", repr(handler))
        self._handlers[event_type].append((label, handler))

    def publish(self, event: Event, *, urgent: bool = False) -> None:
        """Queue ``event`` on its key's lane; never blocks, never raises for a handler.

        An ``urgent`` event's new lane goes ahead of every waiting lane, and so does every
        lane its handlers start: a leak is not handled behind a burst of periodic reports.
        (An event for a lane already waiting keeps that lane's place: one key, one order.)"""
        self.counts[f"published.{type(event).__name__}"] += 1
        epoch = _CAUSE.get()
        if epoch is None:
            epoch = self._epoch
        self._unhandled[epoch] = self._unhandled.get(epoch, 0) + 1
        lane = self._lanes.get(event.key)
        if lane is not None:
            lane.append((event, epoch))
            return
        self._lanes[event.key] = deque(((event, epoch),))
        if urgent or self._in_urgent:
            self._urgent.add(event.key)
            self._ready.insert(self._urgent_waiting, event.key)  # behind earlier urgent ones
            self._urgent_waiting += 1
        else:
            self._ready.append(event.key)
        self._idle.clear()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run_ready)

    def when_done(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once every event published so far, and everything their handlers
        publish, has been handled (at once if nothing is left). Callbacks run in call order."""
        epoch = self._epoch
        self._epoch += 1
        self._waiters.append((epoch, callback))
        self._wake_waiters()

    def _handled(self, epoch: int) -> None:
        left = self._unhandled.get(epoch, 0) - 1
        if left > 0:
            self._unhandled[epoch] = left
            return
        self._unhandled.pop(epoch, None)  # already gone if stop() gave up on it
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        # Epochs enter _unhandled in increasing order (a handler's events join their cause's
        # epoch, which is still there), so its first key is the oldest unfinished one.
        while self._waiters:
            oldest = next(iter(self._unhandled), None)
            epoch, callback = self._waiters[0]
            if oldest is not None and oldest <= epoch:
                return
            self._waiters.popleft()
            try:
                callback()
            except _FATAL:
                raise
            except BaseException:  # logged with its traceback and counted
                self.counts["waiter_error"] += 1
                log.exception("bus: a when_done callback failed")

    @property
    def backlog(self) -> int:
        """Events queued or in a handler right now."""
        return sum(len(lane) for lane in self._lanes.values())

    async def join(self) -> None:
        """Wait until every lane is empty, including events that handlers publish meanwhile."""
        while self._lanes:
            await self._idle.wait()

    def lanes(self) -> dict[str, str]:
        """Every busy lane's key and what it waits for: the dispatch callback, an async
        handler (named, with how long), or nothing at all (stuck: a bug in this module)."""
        now = asyncio.get_running_loop().time()
        ready = set(self._ready)
        busy: dict[str, str] = {}
        for key, lane in self._lanes.items():
            awaiting = self._awaiting.get(key)
            if key in ready:
                what = "waiting for dispatch"
            elif awaiting is not None:
                what = f"in async handler {awaiting[0]} for {now - awaiting[1]:.1f} s"
            else:  # (or being handled right now, if asked from one of its own handlers)
                what = "STUCK: neither waiting for dispatch nor in an async handler"
            busy[key] = f"{len(lane)} event(s), {what}"
        return busy

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let queued events finish (bounded), then cancel what is left."""
        try:
            await asyncio.wait_for(self.join(), timeout_s)
        except TimeoutError:
            log.error("bus stopped with %d event(s) unhandled: %s", self.backlog, self.lanes())
            self._ready.clear()
            self._urgent.clear()
            self._urgent_waiting = 0
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            self._lanes.clear()
            self._awaiting.clear()
            self._unhandled.clear()  # their callbacks never run: nothing is acknowledged
            self._waiters.clear()
            self._idle.set()

    def _run_ready(self) -> None:
        # _scheduled stays True while this runs: what handlers publish waits for the next call.
        try:
            for _ in range(min(len(self._ready), BURST)):
                key = self._ready.popleft()
                if key not in self._urgent:
                    self._run_lane(key)
                elif self._run_urgent(key):
                    break  # urgent work done: what it queued (a close command) goes out first
        finally:
            self._scheduled = bool(self._ready)
            if self._scheduled:
                asyncio.get_running_loop().call_soon(self._run_ready)

    def _run_urgent(self, key: str) -> bool:
        """Run an urgent lane (what it publishes is urgent too); True if none is left."""
        self._urgent_waiting -= 1
        self._in_urgent = True
        try:
            self._run_lane(key)
        finally:
            self._in_urgent = False
            self._urgent.discard(key)
        return not self._urgent_waiting

    def _run_lane(self, key: str) -> None:
        lane = self._lanes[key]
        while lane:
            # The event stays queued while it is handled, so publish() appends behind it.
            event, epoch = lane[0]
            cause = _CAUSE.set(epoch)
            try:
                for index, (label, handler) in enumerate(self._handlers.get(type(event), ())):
                    result = self._call(label, handler, event)
                    if result is not None:  # an async handler: the lane goes on in a task
                        self._awaiting[key] = (label, asyncio.get_running_loop().time())
                        task = asyncio.get_running_loop().create_task(
                            self._drain(key, lane, result, label, index + 1)
                        )  # the task copies the context: the cause with it
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                        return
            finally:
                _CAUSE.reset(cause)
            lane.popleft()
            self._handled(epoch)
        self._lane_done(key, lane)

    def _lane_done(self, key: str, lane: deque[tuple[Event, int]]) -> None:
        # Gone if stop() gave up on it; a new lane of the key since then is not this one's.
        if self._lanes.get(key) is lane:
            del self._lanes[key]
        if not self._lanes:
            self._idle.set()

    def _call(self, label: str, handler: Handler[Any], event: Event) -> Awaitable[None] | None:
        """Run one handler; its awaitable if it returned one (a failure is logged, counted)."""
        try:
            result = handler(event)
        except _FATAL:
            raise
        except BaseException:  # noqa: BLE001 - logged with its traceback and counted in _failed
            # Not only Exception: a plain handler cannot be cancelled (no await), so even a
            # CancelledError is its own failure; let out, it stranded the lane (never
            # dispatched again, its later events never handled, join() never returning).
            self._failed(label, event)
            return None
        return result if inspect.isawaitable(result) else None

    def _failed(self, label: str, event: Event) -> None:
        self.counts[f"handler_error.{label}"] += 1
        log.exception("handler %s failed on %s (key %s)", label, type(event).__name__, event.key)

    async def _drain(
        self,
        key: str,
        lane: deque[tuple[Event, int]],
        pending: Awaitable[None],
        label: str,
        next_index: int,
    ) -> None:
        """The rest of a lane after a handler returned ``pending``: one event at a time."""
        try:
            event, epoch = lane[0]
            await self._settle(key, label, pending, event)
            await self._handle_from(key, event, next_index)
            lane.popleft()
            self._handled(epoch)
            while lane:
                event, epoch = lane[0]
                _CAUSE.set(epoch)  # this task's own context
                await self._handle_from(key, event, 0)
                lane.popleft()
                self._handled(epoch)
        finally:
            self._awaiting.pop(key, None)
            self._lane_done(key, lane)

    async def _handle_from(self, key: str, event: Event, start: int) -> None:
        for label, handler in self._handlers.get(type(event), [])[start:]:
            pending = self._call(label, handler, event)
            if pending is not None:
                self._awaiting[key] = (label, asyncio.get_running_loop().time())
                await self._settle(key, label, pending, event)

    async def _settle(self, key: str, label: str, pending: Awaitable[None], event: Event) -> None:
        """Await an async handler, ``handler_timeout_s`` at most; only stop() cancels a lane."""
        deadline = asyncio.timeout(self.handler_timeout_s)
        try:
            async with deadline:
                await pending
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # stop(): the lane is given up on as a whole
            # The handler's own awaitable was cancelled (a future someone else cancelled): its
            # failure. Let out, it ended the lane and its queued events were never handled.
            self._failed(label, event)
        except Exception:  # noqa: BLE001 - logged with its traceback and counted in _failed
            if not deadline.expired():
                self._failed(label, event)
                return
            self.counts[f"handler_timeout.{label}"] += 1
            log.error(
                "bus lane %s: handler %s still busy with %s after %.1f s: cancelled, the lane "
                "goes on",
                key, label, type(event).__name__, self.handler_timeout_s,
            )  # fmt: skip
