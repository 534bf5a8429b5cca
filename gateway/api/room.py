"""The API room: builds the HTTP application over the gateway's rooms and serves it with
uvicorn on ``http_host:http_port`` (127.0.0.1:8080 by default) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import uvicorn

from gateway.alarms import Alarms
from gateway.api.app import create_app
from gateway.api.context import ApiContext, Change
from gateway.api.devices import DeviceStates
from gateway.bus import Bus
from gateway.clock import Clock
from gateway.events import AlarmChanged
from gateway.linkage import Linkage
from gateway.metrics import GatewayMetrics
from gateway.registry import Registry
from gateway.store import Store
from gateway.supervision import Supervision
from gateway.users import Users

__all__ = ["ApiRoom"]

log = logging.getLogger(__name__)
START_TIMEOUT_S: Final = 10.0
STOP_GRACE_S: Final = 2


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn would take SIGINT/SIGTERM over; the gateway's process owns them


class ApiRoom:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        bus: Bus,
        store: Store,
        clock: Clock,
        registry: Registry,
        alarms: Alarms,
        supervision: Supervision,
        linkage: Linkage,
        metrics: GatewayMetrics,
        readiness: Callable[[], Mapping[str, bool]],
    ) -> None:
        self._host = host
        self._port = port
        self._bus = bus
        self._registry = registry
        self.devices = DeviceStates(bus, store, clock, self._valve_moved)
        self.users = Users(store)
        self.context = ApiContext(
            store=store,
            clock=clock,
            registry=registry,
            alarms=alarms,
            supervision=supervision,
            linkage=linkage,
            metrics=metrics,
            users=self.users,
            devices=self.devices,
            readiness=readiness,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None  # the bound port (port 0 picks a free one)

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self.users.prepare()
        await self.devices.start()
        self._bus.subscribe(AlarmChanged, self.context.broadcaster.alarm_changed, name="api.events")
        try:
            # Bound here, not by uvicorn: its bind failure would exit the whole process.
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.create_server((self._host, self._port), family=family)
        except OSError as exc:
            # The safety path does not depend on the console: run on, loudly, without it.
            log.error(
                "console and API NOT started: cannot listen on %s:%d: %s",
                self._host, self._port, exc,
            )  # fmt: skip
            return
        self.port = sock.getsockname()[1]
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
                    raise OSError(f"HTTP server on {self.url} did not start")
                await asyncio.sleep(0.02)
        log.info("console and API on %s", self.url)

    def _valve_moved(self, valve_id: str) -> None:
        info = self._registry.device(valve_id)
        state = self.devices.get(valve_id)
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
        await self.devices.stop()
