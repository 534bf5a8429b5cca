"""Leak → gas company event and → SMS webhook delivered: latency p50 / p99.

A real Mosquitto as the gas company broker with a subscriber on it, a real local HTTP receiver
as the SMS provider, the real alarms room, store (SQLite, synchronous=FULL) and escalation.
Each round raises one new leak alarm (a ``ConditionChanged`` on the bus) and waits until the
event reached the gas company's subscriber and the first SMS reached the receiver; the clock
starts when the condition is published.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.alarms import Alarms
from gateway.bus import Bus
from gateway.clock import SystemClock
from gateway.escalation import EscalationSettings, build
from gateway.store import Store
from tests.support.escalation_kit import eventually, leak, registry, settings_for
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _rounds(
    work: Path, broker: Mosquitto, http: HttpReceiver, smtp: SmtpReceiver, n: int
) -> tuple[list[float], list[float]]:
    arrived: dict[str, float] = {}
    subscriber = aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-gasco")
    bus, clock, store = Bus(), SystemClock(), Store(work / "gasgate.db")
    store.open()
    alarms = Alarms(bus, store, clock, "bench")
    settings = EscalationSettings.model_validate(settings_for(http.url, smtp.port, broker.url))
    service = build(
        settings,
        bus=bus,
        store=store,
        clock=clock,
        registry=registry(),
        desk=alarms,
        gateway_id="bench",
    )
    event_lat: list[float] = []
    sms_lat: list[float] = []
    async with subscriber:
        await subscriber.subscribe("gasco/v1/bench/alarms/events", qos=1)

        async def record() -> None:
            async for m in subscriber.messages:
                assert isinstance(m.payload, bytes)
                event: dict[str, Any] = json.loads(m.payload)
                if event["transition"] == "raised":
                    arrived.setdefault(event["source"], time.monotonic())

        recorder = asyncio.get_running_loop().create_task(record())
        await alarms.start()
        await service.start()
        await asyncio.wait_for(service.gasco.connected.wait(), 10)
        try:
            for i in range(n):
                source = f"bench-{i:05d}"
                before = len(http.received("/sms"))
                started = time.monotonic()
                bus.publish(leak(clock.now(), source=source))
                # Arrival times are stamped by the subscriber and the receiver themselves.
                await eventually(
                    lambda: source in arrived and len(http.received("/sms")) > before,  # noqa: B023
                    within=10,
                    what=f"round {i} delivered",
                )
                event_lat.append(arrived[source] - started)
                sms_lat.append(http.received("/sms")[before].at - started)
                # Acknowledge so the next rounds are not slowed by this alarm's later steps.
                (alarm,) = [a for a in alarms.open_alarms() if a.source == source]
                alarms.acknowledge(alarm.alarm_id, "bench")
                await bus.join()
        finally:
            await service.stop()
            await alarms.stop()
            await bus.stop()
            store.close()
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
    return event_lat, sms_lat


def run(quick: bool) -> list[dict[str, object]]:
    n = 30 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with (
            Mosquitto(work).running() as broker,
            HttpReceiver().running() as http,
            SmtpReceiver().running() as smtp,
        ):
            event_lat, sms_lat = asyncio.run(_rounds(work, broker, http, smtp, n))
    return [
        {"path": "leak -> gas company event", "n": n, **_percentiles(event_lat)},
        {"path": "leak -> SMS webhook", "n": n, **_percentiles(sms_lat)},
    ]


if __name__ == "__main__":
    for row in run(quick=False):
        print(row)
