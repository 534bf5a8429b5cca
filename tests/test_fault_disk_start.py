"""Fault: the data dir's disk is already full, or read-only, when ``gasgate run`` starts.

A systemd restart on such a disk used to exit at once (``database or disk is full``, an uncaught
``sqlite3.OperationalError`` from the registry import or the store open) and be restarted into the
same failure every 2 s: no valve closed. Here a real ``gasgate run`` process starts on a real
4 MiB tmpfs that a first, clean run left a store on and that was then filled to the last byte or
remounted read-only. It must start degraded: connect, close a leak's valves, raise the alarm
(logged at CRITICAL as held in memory), answer /readyz 503 with the store's reason and say
CRITICAL that the store is not healthy. When the disk takes writes again the alarm reaches it by
itself and /readyz answers 200; a restart then restores the alarm from disk.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from firmware_bridge import ksp
from tests.support.disk import fill, remount, small_tmpfs
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto, free_port
from tests.test_gateway_e2e import Kit, Spy, spy, wait_until
from tests.test_gateway_e2e_kill import GatewayProcess, online

pytestmark = pytest.mark.slow  # about 10 s each; runs in CI like every test
__all__ = ["spy"]  # the fixture used here: every command on the broker, never an open one


@pytest.fixture
def data_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "data") as mount:  # GatewayProcess's data dir
        yield mount


async def ready(port: int) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
        body: dict[str, object] = answer.json()
        return answer.status_code, body


async def wait_ready(port: int, status: int) -> dict[str, object]:
    async with asyncio.timeout(40):
        while True:
            try:
                code, body = await ready(port)
                if code == status:
                    return body
            except httpx.HTTPError:
                pass  # not listening yet
            await asyncio.sleep(0.2)


def closes(spy: Spy) -> dict[str, list[str]]:
    return {v: [c["cmd"] for c in spy.to(v)] for v in VALVES}


@pytest.mark.parametrize("fault", ["full", "read-only"])
async def test_a_start_on_a_disk_that_refuses_writes_still_protects_then_catches_up(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy, data_fs: Path, fault: str
) -> None:
    port = free_port()
    gateway = GatewayProcess(tmp_path, own_mosquitto.url, GASGATE_HTTP_PORT=str(port))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        gateway.start()  # a good first run: the registry and the store are on disk
        await online(spy, 1)
        assert gateway.terminate() == 0

        ballast = fill(data_fs) if fault == "full" else None
        if fault == "read-only":
            remount(data_fs, "ro")
        gateway.start()  # what systemd does next; it used to exit here
        await online(spy, 2)
        body = await wait_ready(port, 503)
        assert body["checks"] == {"store": False, "site_broker": True, "registry": True}
        reasons = body.get("reasons")
        assert isinstance(reasons, dict)
        assert "degraded" in reasons["store"], reasons

        kit.detector.set_lel(55.0)
        await wait_until(lambda: all(kit.valves[v].state is ksp.ValveState.CLOSED for v in VALVES))
        assert closes(spy) == {v: ["close_valve"] for v in VALVES}
        log = gateway.log.read_text(encoding="utf-8")
        assert gateway.proc is not None
        assert gateway.proc.poll() is None, log
        assert "CRITICAL gateway.store: store: DEGRADED, running in memory" in log
        assert re.search(r"CRITICAL gateway\.store: store \S+ NOT healthy: degraded", log), log
        assert re.search(r"CRITICAL .*registry: the files in .* saved in memory only", log), log
        held = [
            line
            for line in log.splitlines()
            if "CRITICAL" in line and "leak_high" in line and "NOT on disk" in line
        ]
        assert held, log

        if ballast is not None:
            ballast.unlink()
        else:
            remount(data_fs, "rw")
        await wait_until(lambda: gateway.open_alarms("leak_high") != [], 40)
        assert [s for _, s in gateway.open_alarms("leak_high")] == [DETECTOR]
        stored = gateway.open_alarms("leak_high")
        assert (await wait_ready(port, 200))["checks"] == {
            "store": True,
            "site_broker": True,
            "registry": True,
        }
        assert gateway.terminate() == 0

        gateway.start()  # the alarm the degraded start held is restored from disk
        await online(spy, 3)
        await wait_ready(port, 200)
        assert gateway.open_alarms("leak_high") == stored
        assert [s for _, t, s in gateway.raised() if t == "leak_high"] == [DETECTOR]
        assert closes(spy) == {v: ["close_valve"] for v in VALVES}  # closed: not again
        assert gateway.terminate() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill9()
        await kit.stop()
