"""The Node-RED peer of ``bench system`` (issue 16): the flow in ``bench/peer/node-red/``
("MQTT in ``kit/v1/+/report`` → threshold → ``close_valve`` to the linked valves + InfluxDB v2
write") run by a pinned Node-RED 4 in its own process, against its own private Mosquitto.

``./dev bench`` installs its packages (``npm ci``); ``./dev test`` never does, so the peer may be
absent: :func:`missing` says why, and the bench prints that instead of the peer's rows.

The flow answers ``GET /bench/status`` with the writes the database confirmed: what the bench
counts as reports handled, as it counts a gateway's handled reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sut import Counted, stop_process
from gateway.mqtturl import parse_mqtt_url

HOME = Path(__file__).with_name("node-red")
NOT_INSTALLED = "node-red: not installed (run ./dev bench)"
START_TIMEOUT_S = 60.0
STATUS_S = 0.1


def missing() -> str | None:
    """Why the peer cannot run here (None: it can)."""
    if not (HOME / "node_modules" / ".bin" / "node-red").exists():
        return NOT_INSTALLED
    if shutil.which("node") is None:
        return "node-red: no node on PATH (Node.js 20 or later)"
    return None


def write_links(path: Path, pairs: Iterable[tuple[str, str]]) -> Path:
    """The registry's links as the flow reads them: ``{detector: [valve, ...]}``."""
    links: dict[str, list[str]] = {}
    for detector, valve in pairs:
        links.setdefault(detector, []).append(valve)
    path.write_text(json.dumps(links) + "\n")
    return path


@dataclass
class NodeRed(Counted):
    """Node-RED running the peer flow; ``status`` polled from its ``/bench/status``."""

    work: Path
    mqtt_url: str
    influx_url: str
    links: Path
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    status: dict[str, Any] = field(default_factory=dict)
    _poller: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _env(self) -> dict[str, str]:
        broker = parse_mqtt_url(self.mqtt_url)
        return os.environ | {
            "NODE_RED_USER_DIR": str(self.work / "node-red-user"),
            "NODE_RED_PORT": str(self.port),
            "MQTT_HOST": broker.host,
            "MQTT_PORT": str(broker.port),
            "VM_URL": self.influx_url,
            "KIT_LINKS_FILE": str(self.links),
        }

    def _fetch(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/bench/status"
        with urllib.request.urlopen(url, timeout=2) as answer:
            body: dict[str, Any] = json.loads(answer.read())
        return body

    async def poll(self) -> dict[str, Any]:
        body = await asyncio.to_thread(self._fetch)
        self.status = {"t": time.monotonic(), "reports": body["written"], "backlog": 0} | body
        return self.status

    def _log(self) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        return self.work / "node-red.log"

    async def start(self) -> None:
        with self._log().open("ab") as log_file:  # the child keeps its own copy of the fd
            self.proc = await asyncio.create_subprocess_exec(
                str(HOME / "start.sh"), env=self._env(), stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.returncode is None:
            with contextlib.suppress(OSError, ValueError):
                if (await self.poll())["links"]:  # up, and the links loaded
                    self._poller = asyncio.create_task(self._poll_forever())
                    return
            await asyncio.sleep(0.2)
        tail = (self.work / "node-red.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"node-red did not come up within {START_TIMEOUT_S:g} s:\n{tail}")

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                await self.poll()
            await asyncio.sleep(STATUS_S)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await stop_process(self.proc, 15)


@contextlib.asynccontextmanager
async def running(
    work: Path, mqtt_url: str, influx_url: str, links: Path, port: int
) -> AsyncIterator[NodeRed]:
    """The peer started, connected and holding its links; stopped (by its pid) afterwards."""
    peer = NodeRed(work, mqtt_url, influx_url, links, port)
    try:
        await peer.start()
        yield peer
    finally:
        await peer.stop()
