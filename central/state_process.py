"""The instance's state process: the gateways' availability and site summaries (the ``state``
stream and the retained read at start) in a child process at a lower CPU priority.

A storm of summaries (a district's gateways reconnecting, each re-publishing every site) is
parsing and batch building by the hundred thousand. In the instance's own process it shared one
event loop with the alarms, and on a busy box an alarm's transaction waited behind it; in a
process of its own at ``NICE`` the kernel gives a core to the alarm first. The instance keeps
the alarm events, the command replies, the commands, the watch and the API.

The child shares nothing with the instance but the database and the broker: its own pool, its
own MQTT sessions (``gasgate-central-{instance}-state`` and ``-retained``, as before), the
same :class:`central.link.Link` (acknowledged after commit). It reads its settings as one JSON
line on standard input and ends when that pipe closes (the instance gone, even by SIGKILL) or
on SIGTERM; it writes what its stream does as JSON lines on standard output, which the
instance counts in its own metrics and its ``/readyz`` (``state_link``).

:class:`StateProcess` is the instance's side: it starts the child, restarts it when it ends
(backoff as the links'), and stops it with the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from central.ingest import Applied, Ingest
from central.link import Link, backoff
from central.metrics import CentralMetrics
from gateway.logs import setup_logging

__all__ = ["NICE", "StateProcess"]

log = logging.getLogger(__name__)

NICE: Final = 10  # added to the child's niceness: alarms, API and PostgreSQL go first
_STOP_S: Final = 10.0  # a child not gone this long after SIGTERM is killed
_STEADY_S: Final = 30.0  # a child that ran this long starts the restart backoff afresh
_POOL_MAX: Final = 2  # the state stream's batch and the retained read's


class StateProcess:
    """The child, supervised. ``subscribed``: it runs and its state stream is subscribed."""

    def __init__(self, config: dict[str, Any], metrics: CentralMetrics) -> None:
        self._config = config  # db, gasco_mqtt, instance, group, prefix, session_expiry_s, logs
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.subscribed = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="central-state-process")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            started = time.monotonic()
            returncode = await self._run_once()
            if time.monotonic() - started >= _STEADY_S:
                delay = 0.5
            wait, delay = backoff(delay)
            log.warning("state process ended (%s); started again in %.1f s", returncode, wait)
            await asyncio.sleep(wait)

    async def _run_once(self) -> int | None:
        proc = self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "central.state_process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.starts += 1
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(self._config).encode() + b"\n")  # stays open: our life
            await proc.stdin.drain()
            async for line in proc.stdout:
                self._report(line)
            return await proc.wait()
        except (OSError, ValueError, KeyError):  # a broken pipe or report: a restart
            log.exception("state process: its pipe failed")
            await _end(proc)
            return proc.returncode
        finally:
            if proc.returncode is None:  # cancelled: the instance stops
                await asyncio.shield(_end(proc))
            self._set(False)

    def _set(self, up: bool) -> None:
        self.subscribed = up
        self._metrics.link("state", up)

    def _report(self, line: bytes) -> None:
        report = json.loads(line)
        what, stream = report["what"], report["stream"]
        if what == "link":
            if stream == "state":
                self._set(bool(report["up"]))
            else:
                self._metrics.link(stream, bool(report["up"]))
        elif what == "committed":
            applied = Applied(**report["applied"])
            self._metrics.committed(stream, applied, report["seconds"], report["size"])
        elif what == "failed":
            self._metrics.failed(stream)
        elif what == "rejected":
            self._metrics.rejected(stream, report["reason"], report["result"])


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after ``_STOP_S``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), _STOP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# --- the child ---------------------------------------------------------------------------------


class _Reports:
    """:class:`central.metrics.LinkMetrics` as JSON lines on standard output. A broken pipe is
    the instance gone: ``orphaned`` is called, never an exception into the link (whose retry
    loop would take it for a lost broker)."""

    def __init__(self, orphaned: Callable[[], None]) -> None:
        self._orphaned = orphaned

    def _write(self, report: dict[str, Any]) -> None:
        try:
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()
        except OSError:
            self._orphaned()

    def link(self, stream: str, up: bool) -> None:
        self._write({"what": "link", "stream": stream, "up": up})

    def committed(self, stream: str, applied: Applied, seconds: float, size: int) -> None:
        self._write({
            "what": "committed", "stream": stream, "applied": dataclasses.asdict(applied),
            "seconds": seconds, "size": size,
        })  # fmt: skip

    def failed(self, stream: str) -> None:
        self._write({"what": "failed", "stream": stream})

    def rejected(self, stream: str, reason: str, result: str) -> None:
        self._write({"what": "rejected", "stream": stream, "reason": reason, "result": result})


async def _child(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    # The instance holds our standard input open for as long as it lives.
    stdin = sys.stdin.fileno()

    def orphaned() -> None:
        loop.remove_reader(stdin)
        stopping.set()

    def read() -> None:
        if not os.read(stdin, 4096):
            orphaned()

    loop.add_reader(stdin, read)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config["db"], min_size=1, max_size=_POOL_MAX, open=False,
        check=AsyncConnectionPool.check_connection,
        name=f"gasgate-central-{config['instance']}-state",
    )  # fmt: skip
    await pool.open(wait=False)
    link = Link(
        config["gasco_mqtt"],
        instance=config["instance"],
        group=config["group"],
        prefix=config["prefix"],
        session_expiry_s=config["session_expiry_s"],
        ingest=Ingest(pool, config["instance"]),
        metrics=_Reports(orphaned),
        running=("state",),
    )
    await link.start()
    try:
        await stopping.wait()
    finally:
        await link.stop()
        await pool.close()


def main() -> None:
    """``python -m central.state_process``, started by :class:`StateProcess`."""
    config = json.loads(sys.stdin.readline())
    os.nice(NICE)
    setup_logging(config["log_level"], config["log_format"])
    asyncio.run(_child(config))


if __name__ == "__main__":
    main()
