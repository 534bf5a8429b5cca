"""Keeping a running gateway's registry current after ``gasgate registry import``.

The import runs in another process and commits a new generation to the store. This room polls
the generation (one indexed SELECT) and, when it moved, loads the new registry in a worker
thread on its own SQLite connection (10,000 sites take about a second to load: not on the event
loop, where alarms are handled), then swaps it into the shared :class:`Registry` in one step.
If the load fails, the old registry stays in use (an old registry protects; none does not) and
the next poll tries again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from gateway.clock import Clock, Timer
from gateway.errors import GasgateError
from gateway.registry import tables
from gateway.registry.registry import Registry
from gateway.store import Store

__all__ = ["RegistryWatch"]

log = logging.getLogger(__name__)


class RegistryWatch:
    def __init__(
        self, registry: Registry, store: Store, clock: Clock, interval_s: float = 5.0
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._interval_s = interval_s
        self._timer: Timer | None = None
        self._poll: asyncio.Task[None] | None = None
        self._running = False
        self.failures = 0

    async def start(self) -> None:
        self._running = True
        await self.reload_if_changed()
        self._schedule()

    async def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        await self.settle()

    async def settle(self) -> None:
        """Wait for a poll in progress, if any."""
        if self._poll is not None:
            await self._poll

    async def reload_if_changed(self) -> bool:
        """Swap in the stored registry if an import has changed it; True if it did."""
        try:
            generation = tables.current_generation(self._store)
            if generation == self._registry.generation:
                return False
            fresh = await asyncio.to_thread(_load, self._store.path)
        except (GasgateError, sqlite3.Error, ValueError) as exc:
            self.failures += 1
            log.error(
                "registry reload failed, keeping generation %d: %s", self._registry.generation, exc
            )
            return False
        old = self._registry.generation
        self._registry.swap(fresh)
        log.info("registry generation %d replaces %d", fresh.generation, old)
        return True

    def _schedule(self) -> None:
        if self._running:
            self._timer = self._clock.call_later(self._interval_s, self._tick)

    def _tick(self) -> None:
        self._poll = asyncio.get_running_loop().create_task(self._run_poll())

    async def _run_poll(self) -> None:
        try:
            await self.reload_if_changed()
        finally:
            self._schedule()


def _load(path: Path) -> Registry:
    """A fresh registry read on a connection of its own (the shared one is the loop's)."""
    store = Store(path)
    store.open()
    try:
        return Registry.load(store)
    finally:
        store.close()
