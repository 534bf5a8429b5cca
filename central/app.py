"""One center instance (``gasgate central run``): settings in, rooms started, stopped.

    database pool → notify hub → link (alarm events and replies into the ingest) → state
    process (availability and summaries, a child at lower CPU priority) → command sender
    → watch (silent or offline gateways) → HTTP (API, console, /healthz /readyz /metrics)

Rooms start in that order and stop in reverse; constructors do nothing. Every instance is the
same: they share the database (their only shared state) and the broker's ``$share`` group;
docs/central.md says how they fail and how many a city needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import psycopg
import uvicorn
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from central import db, watch
from central.api import create_app
from central.commands import CommandSender
from central.ingest import Ingest
from central.link import Link
from central.metrics import CentralMetrics
from central.notify import Hub
from central.settings import CentralSettings
from central.state_process import StateProcess
from gateway.errors import GasgateError
from gateway.listen import tcp_listener

__all__ = ["Central", "run_central"]

log = logging.getLogger(__name__)

WATCH_EVERY_S: Final = 10.0
_HTTP_START_S: Final = 10.0


class _Room(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class _Watch:
    """``central.watch.sweep`` every ``WATCH_EVERY_S`` (every instance: the sweep's locks make
    one incident of a gateway however many sweep). A gateway last heard before this instance
    started is judged silent only ``silent_after_s`` after the start: a center that was itself
    down for an hour must not open an incident for every gateway it could not hear."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], silent_after_s: float, m: CentralMetrics
    ) -> None:
        self._pool = pool
        self._silent_after_s = silent_after_s
        self._metrics = m
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    async def start(self) -> None:
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="central-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _silent_after(self) -> float:
        if time.monotonic() - self._started >= self._silent_after_s:
            return self._silent_after_s
        return 10 * 365 * 86400.0  # only said-offline gateways until then

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            try:
                opened = await watch.sweep(self._pool, datetime.now(UTC), self._silent_after())
            except Exception:  # the database away (or a bug): the next sweep tries again
                log.warning("gateway watch sweep failed", exc_info=True)
                continue
            self._metrics.sweeps.inc()
            if opened:
                log.warning("gateway offline incident(s) opened: %s", opened)


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # the process owns SIGINT/SIGTERM, not uvicorn


class _Http:
    """The API (central.api.create_app) served by uvicorn on a socket bound here, so a port in
    use fails the start with a plain message."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._app, self._host, self._port = app, host, port
        self._server: _Quiet | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        try:
            sock = tcp_listener(self._host, self._port)
        except OSError as exc:
            raise GasgateError(f"cannot listen on {self._host}:{self._port}: {exc}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off")
        server = self._server = _Quiet(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="central-http")
        deadline = time.monotonic() + _HTTP_START_S
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise GasgateError(f"HTTP server on {self._host}:{self.port} did not start")
            await asyncio.sleep(0.02)
        log.info("API and console on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)


class Central:
    """One instance's rooms. ``start`` builds and starts them; ``stop`` undoes it."""

    def __init__(self, settings: CentralSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self._started: list[_Room] = []
        self._pool: AsyncConnectionPool[Any] | None = None
        self.link: Link | None = None
        self.sender: CommandSender | None = None
        self.state: StateProcess | None = None
        self.http: _Http | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        metrics = CentralMetrics(self.registry)
        # Not waiting for the database: an instance started before it comes up is not ready
        # (/readyz says why) and takes the streams in once it is.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            s.db,
            min_size=2,
            max_size=10,
            open=False,
            check=AsyncConnectionPool.check_connection,
            name=f"gasgate-central-{s.instance}",
        )
        await pool.open(wait=False)
        self._pool = pool
        await self._check_schema()
        hub = Hub(s.db)
        self.link = Link(
            s.gasco_mqtt,
            instance=s.instance,
            group=s.group,
            prefix=s.topic_prefix,
            session_expiry_s=s.session_expiry_s,
            ingest=Ingest(pool, s.instance),
            metrics=metrics,
            running=("events",),
        )
        self.state = StateProcess(
            {
                "db": s.db, "gasco_mqtt": s.gasco_mqtt, "instance": s.instance,
                "group": s.group, "prefix": s.topic_prefix,
                "session_expiry_s": s.session_expiry_s, "log_level": s.log_level,
                "log_format": s.log_format,
            },
            metrics,
        )  # fmt: skip
        self.sender = CommandSender(
            pool, s.db, s.gasco_mqtt, instance=s.instance, prefix=s.topic_prefix, metrics=metrics
        )
        app = create_app(pool, s, hub, ready=self.readiness, registry=self.registry)
        self.http = _Http(app, s.http_host, s.http_port)
        rooms: list[_Room] = [
            hub,
            self.link,
            self.state,
            self.sender,
            _Watch(pool, s.silent_after_s, metrics),
            self.http,
        ]
        for room in rooms:
            await room.start()
            self._started.append(room)
        log.info("gasgate central instance %s started (group %s)", s.instance, s.group)

    async def _check_schema(self) -> None:
        """Say it plainly when the schema is behind (the ingest would fail batch after batch)."""
        try:
            status = await asyncio.wait_for(asyncio.to_thread(db.status, self.settings.db), 10)
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("database not reachable at start (%s); waiting for it", exc)
            return
        if status.pending:
            raise GasgateError(
                f"the database schema lacks migration(s) {[m.version for m in status.pending]}:"
                " run gasgate central db upgrade"
            )

    def readiness(self) -> dict[str, bool]:
        """The links' part of /readyz (the API adds the database and its LISTEN)."""
        checks = self.link.ready() if self.link is not None else {}
        checks["state_link"] = self.state is not None and self.state.subscribed
        checks["commands_link"] = self.sender is not None and self.sender.connected
        return checks

    async def stop(self) -> None:
        rooms, self._started = self._started, []
        for room in reversed(rooms):
            try:
                await room.stop()
            except Exception:
                log.exception("stopping %s failed", type(room).__name__)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def run_central(settings: CentralSettings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    central = Central(settings)
    await central.start()
    try:
        await stopping.wait()
        log.info("gasgate central instance %s stopping", settings.instance)
    finally:
        await central.stop()
