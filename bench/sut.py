"""The system under test, in its own process: ``python -m bench.sut gateway SETTINGS_JSON`` runs
``gateway.app.Gateway`` (as ``gasgate run`` does); ``python -m bench.sut bare MQTT_URL`` runs a
bare aiomqtt subscriber on ``kit/v1/#`` (the yardstick of P1).

Either prints one JSON line on stdout when ready, then a status line every ``STATUS_S``:
monotonic time (the system-wide clock, comparable across processes), reports handled, bus
backlog, CPU seconds and resident memory of this process. SIGTERM or SIGINT stops it cleanly
after a last status line. :class:`Counted` is the bench's side of that line, shared with the
peers (``bench/peer/``), which report the same counts their own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import heap
from gateway.app import Gateway, GatewaySettings
from gateway.logs import setup_logging
from gateway.mqtturl import parse_mqtt_url

STATUS_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Counted:
    """A system measured by its last status: ``t`` (monotonic), ``reports`` handled, ``backlog``."""

    status: dict[str, Any]

    def reports(self) -> int:
        return int(self.status.get("reports", 0))

    async def wait_reports(self, target: int, within_s: float) -> float | None:
        """Monotonic time at which ``target`` reports were taken in *and* handled (the backlog
        empty: a gateway's ingest accepts faster than its rooms handle); None if not in time."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.reports() >= target and not self.status.get("backlog"):
                return float(self.status["t"])
            await asyncio.sleep(0.02)
        return None


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process, and of its live descendants, from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # a process may end while we read
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = int(fields[11]) + int(fields[12])
    family, grown = {pid}, True
    while grown:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grown = bool(more)
    tick = os.sysconf("SC_CLK_TCK")
    return cpu.get(pid, 0) / tick, sum(cpu.get(m, 0) for m in family - {pid}) / tick


def run_queue(pid: int) -> tuple[float, int]:
    """(seconds spent runnable but waiting for a core, times put on a core) of all a process's
    threads, from ``/proc/PID/task/*/schedstat``; (0, 0) once it is gone."""
    waited, runs = 0, 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                _, delay, count = (task / "schedstat").read_text().split()
                waited, runs = waited + int(delay), runs + int(count)
    return waited / 1e9, runs


class WaitMeter:
    """Run-queue wait per time on a core of some processes from now on, in ms: how long each
    wake-up of the broker or the interlock waited for a core while others used both."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began = {name: run_queue(pid) for name, pid in pids.items()}

    def per_run_ms(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            (waited, runs), (before_s, before_runs) = run_queue(pid), self.began[name]
            out[name] = 1000 * (waited - before_s) / max(runs - before_runs, 1)
        return out


async def stop_process(proc: asyncio.subprocess.Process | None, within_s: float) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it is not gone within ``within_s``."""
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


class CpuMeter:
    """CPU of a process tree from now on, in % of one core (a gateway and its interlock, or a
    peer): what a step of the bench cost each system."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.began = time.monotonic()
        self.cpu_s = tree_cpu_s(pid)

    def pct(self) -> tuple[float, float]:
        """(the whole tree, its descendants alone: the gateway's interlock) in % of a core."""
        now, seconds = tree_cpu_s(self.pid), max(time.monotonic() - self.began, 1e-3)
        own, children = (100 * (b - a) / seconds for a, b in zip(self.cpu_s, now, strict=True))
        return own + children, children


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def _say(kind: str, **fields: Any) -> None:
    line = {"kind": kind, "t": time.monotonic(), "cpu": time.process_time(), "rss_mb": _rss_mb()}
    sys.stdout.write(json.dumps(line | fields) + "\n")
    sys.stdout.flush()


async def _until_signal(status: Callable[[], dict[str, Any]]) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    while not stopping.is_set():
        _say("status", **status())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STATUS_S)


async def run_gateway(flags: dict[str, Any]) -> None:
    settings = GatewaySettings.load(None, flags)
    setup_logging(settings.log_level, settings.log_format)
    gateway = Gateway(settings)
    began = time.monotonic()
    await gateway.start()
    await asyncio.wait_for(gateway.site_mqtt.connected.wait(), 30)
    _say(
        "ready",
        start_s=time.monotonic() - began,
        devices=len(gateway.registry.devices()),
        open_alarms=len(gateway.alarms.open_alarms()),
        # the interlock process (issue 16), as settings and GASGATE_INTERLOCK chose
        interlock=str(getattr(settings, "interlock", "absent")),
    )
    heap.settle()  # as gasgate run does

    def status() -> dict[str, Any]:
        counts = gateway.ingest.counts
        telemetry = gateway.telemetry.stats()
        return {
            "reports": counts["accepted.report"] + counts["duplicate"],
            "rejected": sum(v for k, v in counts.items() if k.startswith("rejected.")),
            "backlog": gateway.bus.backlog,
            "outgoing": gateway.site_mqtt.queued,
            "points_queued": telemetry.queued,
            "points_spooled": telemetry.spooled,
            "points_written": telemetry.written,
            "points_dropped": telemetry.dropped + telemetry.rejected,
        }

    try:
        await _until_signal(status)
    finally:
        open_alarms = len(gateway.alarms.open_alarms())
        await gateway.stop()
        _say("stopped", open_alarms=open_alarms)


async def run_bare(url: str) -> None:
    received = 0
    client = parse_mqtt_url(url).client(identifier="bench-bare", clean_session=False)
    async with client:
        await client.subscribe("kit/v1/#", qos=1)
        _say("ready", start_s=0.0)

        async def count() -> None:
            nonlocal received
            async for _ in client.messages:
                received += 1

        counter = asyncio.create_task(count())
        try:
            await _until_signal(lambda: {"reports": received, "backlog": 0})
        finally:
            counter.cancel()
    _say("stopped", reports=received)


def main() -> None:
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "gateway":
        asyncio.run(run_gateway(json.loads(arg)))
    elif mode == "bare":
        asyncio.run(run_bare(arg))
    else:
        raise SystemExit(f"unknown mode {mode!r}: gateway or bare")


if __name__ == "__main__":
    main()
