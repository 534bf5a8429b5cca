"""The interlock as an independent layer, with real processes on a real Mosquitto.

A real ``gasgate run`` (which starts its interlock), the main process SIGSTOPped or SIGKILLed,
then a leak: the linked valves are still commanded closed, within 100 ms of the report. After
SIGCONT or a restart the gateway's own path catches up: the leak alarm exists exactly once and
the escalation has it. And in-process: the interlock follows a new link table, never sends
anything but a close, and journals what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.interlock import Entry, Interlock, dumps
from gateway.interlock.process import JOURNAL_FILE, LOCK_FILE, TABLE_FILE
from gateway.mqtturl import parse_mqtt_url
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import wait_until
from tests.test_gateway_e2e_kill import GatewayProcess

LEAK = json.dumps(
    {"kind": "detector", "seq": 7, "event": "alarm", "detector": {"lel_pct": 55.0}}
).encode()
CLOSE_WITHIN_S = 0.1


@dataclass
class Commands:
    """Every ``kit/v1/+/cmd`` on the broker with the monotonic time it arrived."""

    url: str
    seen: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Commands:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        assert {c["cmd"] for _, _, c in self.seen} <= {"close_valve"}, self.seen

    async def _run(self, ready: asyncio.Event) -> None:
        async with parse_mqtt_url(self.url).client(identifier=f"cmds-{uuid.uuid4().hex}") as c:
            await c.subscribe("kit/v1/+/cmd", qos=1)
            ready.set()
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                valve = message.topic.value.split("/")[2]
                self.seen.append((time.monotonic(), valve, json.loads(message.payload)))

    def first_to(self, valve: str, after: float) -> float | None:
        return next((t for t, v, _ in self.seen if v == valve and t >= after), None)


async def leak(url: str) -> float:
    """Publish the detector's leak once (QoS 1); the monotonic time just before."""
    async with parse_mqtt_url(url).client(identifier=f"det-{uuid.uuid4().hex[:8]}") as device:
        sent = time.monotonic()
        await device.publish(f"kit/v1/{DETECTOR}/report", LEAK, qos=1)
    return sent


async def closes_in_time(commands: Commands, sent: float, gateway_state: str) -> None:
    """Every linked valve commanded within ``CLOSE_WITHIN_S`` of the leak's publish."""
    await wait_until(lambda: all(commands.first_to(v, sent) for v in VALVES), 10)
    delays = [commands.first_to(v, sent) - sent for v in VALVES]  # type: ignore[operator]
    print(f"leak -> close_valve, gateway {gateway_state}: {[f'{d * 1000:.2f}' for d in delays]} ms")
    assert max(delays) <= CLOSE_WITHIN_S, delays


def interlock_pid(gateway: GatewayProcess) -> int:
    return int((gateway.data_dir / LOCK_FILE).read_text().split()[0])


@pytest.fixture
async def gateway(tmp_path: Path, own_mosquitto: Mosquitto) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, own_mosquitto.url, GASGATE_INTERLOCK="spawn")
    process.start()
    try:
        await wait_until(process.log.exists, 30)
        await wait_until(lambda: b"interlock: watching" in process.log.read_bytes(), 30)
        yield process
    finally:
        assert process.proc is not None
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)
            process.proc.kill()
            process.proc.wait(10)
        with contextlib.suppress(OSError, ValueError):
            os.kill(interlock_pid(process), signal.SIGTERM)


def leak_alarms(gateway: GatewayProcess) -> list[tuple[object, ...]]:
    return gateway.query(
        "SELECT alarm_id, alarm_type FROM alarms WHERE source = ? AND alarm_type LIKE 'leak_%'",
        DETECTOR,
    )


async def test_a_stopped_gateway_still_closes_valves_and_catches_up_after(
    gateway: GatewayProcess, own_mosquitto: Mosquitto
) -> None:
    assert gateway.proc is not None
    async with Commands(own_mosquitto.url) as commands:
        os.kill(gateway.proc.pid, signal.SIGSTOP)  # a long stall of the whole gateway
        try:
            await closes_in_time(commands, await leak(own_mosquitto.url), "stopped")
            assert leak_alarms(gateway) == []  # the gateway has done nothing yet
        finally:
            os.kill(gateway.proc.pid, signal.SIGCONT)
        await wait_until(lambda: len(leak_alarms(gateway)) == 2, 30)
        await asyncio.sleep(1.0)
        assert sorted(t for _, t in leak_alarms(gateway)) == ["leak_high", "leak_low"]  # once
        ids = [a for a, _ in leak_alarms(gateway)]
        await wait_until(lambda: gateway.query("SELECT alarm_id FROM escalation_alarm"), 30)
        escalated = {r[0] for r in gateway.query("SELECT alarm_id FROM escalation_alarm")}
        assert set(ids) <= escalated
        assert any(c["id"].startswith("ilk-") for _, _, c in commands.seen)


async def test_a_killed_gateway_still_closes_valves_and_the_restart_records_it_once(
    gateway: GatewayProcess, own_mosquitto: Mosquitto
) -> None:
    interlock = interlock_pid(gateway)
    async with Commands(own_mosquitto.url) as commands:
        gateway.kill9()
        await closes_in_time(commands, await leak(own_mosquitto.url), "killed")
        gateway.start()  # finds the interlock running and keeps it
        await wait_until(lambda: len(leak_alarms(gateway)) == 2, 30)
        await asyncio.sleep(1.0)
        assert sorted(t for _, t in leak_alarms(gateway)) == ["leak_high", "leak_low"]
        assert interlock_pid(gateway) == interlock
        assert b"already running" in gateway.log.read_bytes()
        await wait_until(lambda: gateway.query("SELECT alarm_id FROM escalation_alarm"), 30)


# --- in-process: the interlock alone against a real broker -------------------------------------


@pytest.fixture
async def interlock(tmp_path: Path, own_mosquitto: Mosquitto) -> AsyncIterator[Interlock]:
    (tmp_path / TABLE_FILE).write_bytes(dumps({DETECTOR: Entry(VALVES[:1], 20.0)}))
    it = Interlock(own_mosquitto.url, tmp_path, "gwtest", retry_s=0.3)
    task = asyncio.create_task(it.run())
    await wait_until(lambda: it.counts.get("subscribed", 0) >= 1, 10)
    yield it
    it.stop()
    await asyncio.wait_for(task, 10)


async def test_the_interlock_follows_a_new_link_table(
    tmp_path: Path, own_mosquitto: Mosquitto, interlock: Interlock
) -> None:
    async with Commands(own_mosquitto.url) as commands:
        table = {DETECTOR: Entry(VALVES, 20.0), "det-new": Entry(("valve-new",), 20.0)}
        (tmp_path / TABLE_FILE).write_bytes(dumps(table))  # the gateway after an import
        await wait_until(lambda: interlock.counts.get("subscribed", 0) >= 2, 10)
        async with parse_mqtt_url(own_mosquitto.url).client(identifier="det-new") as device:
            await device.publish("kit/v1/det-new/report", LEAK, qos=1)
        await wait_until(lambda: commands.first_to("valve-new", 0.0) is not None, 10)
        sent = await leak(own_mosquitto.url)
        await wait_until(lambda: all(commands.first_to(v, sent) for v in VALVES), 10)
    lines = [json.loads(x) for x in (tmp_path / JOURNAL_FILE).read_text().splitlines()]
    assert {(x["event"], x["detector"]) for x in lines} >= {
        ("closed", "det-new"),
        ("closed", DETECTOR),
    }


async def test_a_valve_that_said_closed_is_not_commanded_again_until_it_opens(
    own_mosquitto: Mosquitto, interlock: Interlock
) -> None:
    valve = VALVES[0]
    state = {"kind": "valve", "seq": 1, "event": "state_change", "valve": {"state": "closed"}}
    url = parse_mqtt_url(own_mosquitto.url)
    async with Commands(own_mosquitto.url) as commands, url.client(identifier=valve) as device:
        await leak(own_mosquitto.url)
        await wait_until(lambda: len(commands.seen) == 1, 10)
        await device.publish(f"kit/v1/{valve}/report", json.dumps(state).encode(), qos=1)
        await wait_until(lambda: interlock.counts.get("confirmed", 0) == 1, 10)
        for _ in range(3):  # the detector repeats its leak: the closed valve is left alone
            await leak(own_mosquitto.url)
        await asyncio.sleep(0.2)
        assert len(commands.seen) == 1
        state["valve"] = {"state": "open"}  # opened by hand on site
        await device.publish(f"kit/v1/{valve}/report", json.dumps(state).encode(), qos=1)
        await asyncio.sleep(0.1)
        await leak(own_mosquitto.url)
        await wait_until(lambda: len(commands.seen) == 2, 10)
