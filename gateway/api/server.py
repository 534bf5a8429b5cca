"""The console's HTTP side: the application (:mod:`gateway.api.app`) over an :class:`ApiContext`,
served by uvicorn on a socket the API room bound, and the live changes it streams.

Only :class:`gateway.api.room.ApiRoom` imports this module, when it starts: FastAPI, uvicorn and
the console's routes are most of the gateway's import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Final

import uvicorn

from gateway.api.app import create_app
from gateway.api.context import ApiContext, Change
from gateway.bus import Bus
from gateway.events import AlarmChanged

__all__ = ["HttpApi"]

START_TIMEOUT_S: Final = 10.0
STOP_GRACE_S: Final = 2


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn would take SIGINT/SIGTERM over; the gateway's process owns them


class HttpApi:
    def __init__(self, ctx: ApiContext, bus: Bus) -> None:
        self.context = ctx
        self._bus = bus
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self, sock: socket.socket, url: str) -> None:
        """Serve on ``sock``; return once uvicorn answers (raise if it cannot)."""
        self._bus.subscribe(AlarmChanged, self.context.broadcaster.alarm_changed, name="api.events")
        config = uvicorn.Config(
            create_app(self.context),
            log_config=None,  # the gateway's logging, not uvicorn's own
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=STOP_GRACE_S,
        )
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="api-http")
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started:
                if self._task.done():
                    self._task.result()  # raises why it could not start
                    raise OSError(f"HTTP server on {url} did not start")
                await asyncio.sleep(0.02)

    def valve_moved(self, valve_id: str) -> None:
        info = self.context.registry.device(valve_id)
        state = self.context.devices.get(valve_id)
        data = {"device_id": valve_id, "state": state.valve_state if state else None}
        self.context.broadcaster.publish(Change("valve", info.site_id if info else None, data))

    async def stop(self) -> None:
        self.context.broadcaster.close()  # ends the event streams, so shutdown is not held
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            try:
                await asyncio.wait_for(task, STOP_GRACE_S + 3)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
