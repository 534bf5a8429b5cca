"""The system under test, in its own process: ``python -m bench.sut gateway SETTINGS_JSON`` runs
``gateway.app.Gateway`` (as ``gasgate run`` does); ``python -m bench.sut bare MQTT_URL`` runs a
bare aiomqtt subscriber on ``kit/v1/#`` (the yardstick of P1).

Either prints one JSON line on stdout when ready, then a status line every ``STATUS_S``:
monotonic time (the system-wide clock, comparable across processes), reports handled, bus
backlog, CPU seconds and resident memory of this process. SIGTERM or SIGINT stops it cleanly
after a last status line.
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
from typing import Any

from gateway import heap
from gateway.app import Gateway, GatewaySettings
from gateway.logs import setup_logging
from gateway.mqtturl import parse_mqtt_url

STATUS_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE")


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
