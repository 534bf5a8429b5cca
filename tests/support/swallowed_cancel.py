"""A fake aiomqtt client whose publish swallows a cancel, as aiomqtt 2.5's does on Python 3.11.

aiomqtt's ``publish()`` awaits its QoS 1 PUBACK with ``asyncio.wait_for``; on 3.11 a cancel that
comes in the same turn as the PUBACK is swallowed (CPython gh-86296, gateway/tasks.py): the
publish returns as if nothing happened and the cancelled task carries on. The real race is a
window of one loop turn; here the first publish that ``swallows`` picks waits until it is
cancelled and then returns, every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import aiomqtt

from gateway.tasks import cancel_and_wait

__all__ = ["PubackWithTheCancel", "within"]


async def within(awaitable: Awaitable[Any], seconds: float, what: str) -> None:
    """Awaits ``awaitable`` in a task, failing if it takes longer: not wait_for, whose cancel
    the code under test could swallow too. On failure every other task of the loop is ended
    (what the code under test left running could hold the loop's close for good), so that the
    test fails instead of hanging the run."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait([asyncio.ensure_future(cancel_and_wait(others))], timeout=5)
        raise AssertionError(f"{what} still waiting after {seconds} s")
    task.result()


class PubackWithTheCancel:
    """Stands for an ``aiomqtt.Client`` (nothing ever received). The first
    publish for which ``swallows(topic, payload)`` holds waits for its PUBACK, which comes with
    the cancel: it returns when cancelled. :meth:`lose` ends the connection: the message
    iteration raises ``MqttError``, as aiomqtt's does; the next ``async with`` connects again."""

    def __init__(
        self, swallows: Callable[[str, Any], bool], *, swallows_connect: bool = False
    ) -> None:
        self._swallows = swallows
        self._swallows_connect = swallows_connect
        self.connecting = asyncio.Event()  # the first connect waits for its CONNACK
        self.publishing = asyncio.Event()  # the swallowing publish waits for its PUBACK
        self.swallowed = asyncio.Event()  # ... and returned on a cancel
        self.published: list[tuple[str, Any]] = []
        self.connects = 0
        self._lost = asyncio.Event()

    async def __aenter__(self) -> PubackWithTheCancel:
        """Connects; with ``swallows_connect``, the first time as aiomqtt's ``__aenter__`` does
        when the CONNACK (awaited with wait_for too) comes with the cancel: connected."""
        self.connects += 1
        self._lost = asyncio.Event()
        if self._swallows_connect and not self.connecting.is_set():
            self.connecting.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.swallowed.set()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def lose(self) -> None:
        self._lost.set()

    async def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def publish(self, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> None:
        self.published.append((topic, payload))
        if self.publishing.is_set() or not self._swallows(topic, payload):
            return
        self.publishing.set()
        try:
            await asyncio.Event().wait()  # the PUBACK ...
        except asyncio.CancelledError:
            self.swallowed.set()  # ... came with the cancel: the publish returns, cancel gone

    @property
    def messages(self) -> AsyncIterator[Any]:
        return self._until_lost()

    async def _until_lost(self) -> AsyncIterator[Any]:
        await self._lost.wait()
        raise aiomqtt.MqttError("Disconnected during message iteration")
        yield  # pragma: no cover - an async generator that never yields
