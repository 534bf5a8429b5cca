"""The API room: the HTTP API, the console and the operations endpoints over the gateway's rooms,
served with uvicorn on ``http_host:http_port`` (127.0.0.1:8080 by default) until stopped.

The room starts last. ``start`` binds the port and returns: the web stack
(:mod:`gateway.api.server`: FastAPI, uvicorn, the console's routes, ~0.6 s of imports) loads
afterwards in a worker thread, so a (re)starting gateway's safety path is up without waiting for
it and keeps the event loop meanwhile. Connections made before it has loaded wait in the
listening socket's queue and are answered once it has.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway.alarms import Alarms
from gateway.api.devices import DeviceStates
from gateway.api.state import ApiContext
from gateway.bus import Bus
from gateway.clock import Clock
from gateway.linkage import Linkage
from gateway.listen import tcp_listener
from gateway.metrics import GatewayMetrics
from gateway.registry import Registry
from gateway.store import Store
from gateway.supervision import Supervision
from gateway.users import Users

if TYPE_CHECKING:
    from gateway.api.server import HttpApi

__all__ = ["ApiRoom"]

log = logging.getLogger(__name__)


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
        timezone: str = "Asia/Shanghai",
    ) -> None:
        self._host = host
        self._port = port
        self._bus = bus
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
            timezone=timezone,
        )
        self._http: HttpApi | None = None
        self._loading: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None  # the bound port (port 0 picks a free one)

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self.users.prepare()
        await self.devices.start()
        try:
            # Bound here, not by uvicorn: its bind failure would exit the whole process.
            sock = tcp_listener(self._host, self._port)
        except OSError as exc:
            # The safety path does not depend on the console: run on, loudly, without it.
            log.error(
                "console and API NOT started: cannot listen on %s:%d: %s",
                self._host, self._port, exc,
            )  # fmt: skip
            return
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._loading = asyncio.create_task(self._serve(sock), name="api-load")

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await asyncio.to_thread(importlib.import_module, "gateway.api.server")
            # Already loaded by the line above (off the event loop): this only binds the name.
            from gateway.api.server import HttpApi  # noqa: PLC0415

            self._http = HttpApi(self.context, self._bus)
            await self._http.serve(sock, self.url)
        except Exception:
            # As for a port in use: the safety path runs on, loudly, without the console.
            log.exception("console and API NOT started on %s", self.url)
            sock.close()  # refuse connections rather than leave them waiting
            return
        log.info("console and API on %s", self.url)

    def _valve_moved(self, valve_id: str) -> None:
        if self._http is not None:  # else no console is open to tell
            self._http.valve_moved(valve_id)

    async def stop(self) -> None:
        loading, self._loading = self._loading, None
        if loading is not None and not loading.done():
            loading.cancel()  # a stop during the load (the import thread finishes on its own)
            await asyncio.gather(loading, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.stop()
        if self._sock is not None:
            self._sock.close()  # uvicorn closed it if it served; else nobody else will
            self._sock = None
        await self.devices.stop()
