"""The live side of the consoles: one ``LISTEN gasgate_central`` connection per instance, fanned
out to every open console's queue, so an officer at instance A sees at once what instance B
ingested (the notification is sent in the transaction that wrote it, delivered on commit).

A console that does not keep up is dropped (its queue is bounded; it is told why and its browser
reconnects and reads everything afresh): one slow reader never holds the others or the ingest.
When the database goes away the hub reconnects; notifications sent meanwhile are lost, so every
subscriber then gets a ``resync`` change and reads everything afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import psycopg

from central.db import CHANNEL

__all__ = ["Change", "Hub", "Subscription"]

log = logging.getLogger(__name__)

QUEUE_SIZE: Final = 256
_IDLE_CHECK_S: Final = 30.0  # a LISTEN connection silent this long is checked with a round trip
_RETRY_S: Final = (0.5, 1.0, 2.0, 5.0)  # waits between reconnects, the last repeated


@dataclass(frozen=True, slots=True)
class Change:
    """What changed: ids of incidents, gateways, commands. ``resync``: notifications may have
    been missed (the hub reconnected); re-read everything. ``dropped``: this subscriber fell
    too far behind and gets nothing more."""

    incidents: tuple[int, ...] = ()
    gateways: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    resync: bool = False
    dropped: bool = False

    @classmethod
    def parse(cls, payload: str) -> Change | None:
        """The plan's payload ``{"incidents": [...], "gateways": [...], "commands": [...]}``;
        None for anything else (logged by the caller)."""
        try:
            data = json.loads(payload)
            return cls(
                tuple(int(i) for i in data.get("incidents") or ()),
                tuple(str(g) for g in data.get("gateways") or ()),
                tuple(str(c) for c in data.get("commands") or ()),
            )
        except (ValueError, TypeError, AttributeError):
            return None

    def merge(self, other: Change) -> Change:
        return Change(
            tuple(dict.fromkeys(self.incidents + other.incidents)),
            tuple(dict.fromkeys(self.gateways + other.gateways)),
            tuple(dict.fromkeys(self.commands + other.commands)),
            self.resync or other.resync,
            self.dropped or other.dropped,
        )


@dataclass(eq=False, slots=True)
class Subscription:
    queue: asyncio.Queue[Change]

    async def next(self) -> Change:
        """The next change merged with every one already waiting (one read serves them all)."""
        change = await self.queue.get()
        while not self.queue.empty():
            change = change.merge(self.queue.get_nowait())
        return change


class Hub:
    """``start()`` opens the LISTEN connection (and keeps it), ``stop()`` closes it."""

    def __init__(self, dsn: str, *, queue_size: int = QUEUE_SIZE) -> None:
        self._dsn = dsn
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.dropped = 0  # subscribers dropped for being slow

    @property
    def listening(self) -> bool:
        """LISTEN is in place: notifications reach subscribers (for /readyz)."""
        return self._listening.is_set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="central-notify-hub")

    async def wait_listening(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._listening.clear()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        sub = Subscription(asyncio.Queue(self._queue_size))
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def publish(self, change: Change) -> None:
        """Hand a change to every subscriber; one whose queue is full is dropped."""
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(change)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self.dropped += 1
        log.warning(
            "a live console fell %d changes behind and was dropped (it reconnects and reads"
            " afresh)", sub.queue.qsize(),
        )  # fmt: skip
        # Make room for the one word it still gets: stop, you are behind.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(Change(dropped=True))

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()  # returns only by raising
            except (psycopg.Error, OSError) as exc:
                if self._listening.is_set():  # it was up: the waits start afresh
                    failures = 0
                wait = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                if failures == 0:
                    log.warning("LISTEN %s lost: %s; reconnecting in %.1f s", CHANNEL, exc, wait)
                failures += 1
                self._listening.clear()
                await asyncio.sleep(wait)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._listening.set()
            # Anything sent while the connection was down is lost: everyone re-reads.
            self.publish(Change(resync=True))
            while True:
                async for note in conn.notifies(timeout=_IDLE_CHECK_S):
                    self._deliver(note.payload)
                # Idle for a while: make sure the server is still there (a dead peer on a
                # silent network never closes the socket by itself).
                await conn.execute("SELECT 1")

    def _deliver(self, payload: str) -> None:
        change = Change.parse(payload)
        if change is None:
            log.warning("%s: not a change: %.200r", CHANNEL, payload)
            return
        self.publish(change)
