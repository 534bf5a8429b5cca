"""The whole gateway in-process (app.py) against a real Mosquitto (one per test: retained
availability must not leak between tests) and simulated MQTT-native kit
devices: reports in, alarms, valve commands out, confirmations back, supervision.

A spy client records every command published on ``kit/v1/+/cmd`` during each test, and every
test ends by checking that none of them could open a valve.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector, SimDevice, SimRegulator, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice
from gateway.app import Gateway, GatewaySettings
from gateway.contract import KitReport, report_topic
from gateway.events import AlarmChanged, ReportReceived
from gateway.model import Alarm
from gateway.mqtturl import parse_mqtt_url
from tests.support.kit_site import (
    DETECTOR,
    REGULATOR,
    REGULATOR_VALVE,
    SITE,
    VALVES,
    write_registry,
)
from tests.support.services import Mosquitto

TIMEOUT_S = 20.0  # generous: a loaded two-core box must not flake these


async def wait_until(check: Callable[[], object], timeout_s: float = TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - polls state of several rooms, bounded in time
            await asyncio.sleep(0.02)


@dataclass
class Spy:
    """Every command and gateway availability message on the broker, in arrival order."""

    url: str
    commands: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    availability: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await asyncio.wait_for(ready.wait(), TIMEOUT_S)

    async def _run(self, ready: asyncio.Event) -> None:
        async with parse_mqtt_url(self.url).client(identifier=f"spy-{uuid.uuid4().hex}") as c:
            await c.subscribe("kit/v1/+/cmd", qos=1)
            await c.subscribe("gasgate/v1/+/availability", qos=1)
            ready.set()
            async for message in c.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                if message.topic.matches("kit/v1/+/cmd"):
                    self.commands.append((message.topic.value, json.loads(payload)))
                else:
                    self.availability.append(payload.decode())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def to(self, device: str) -> list[dict[str, str]]:
        return [p for topic, p in self.commands if topic == f"kit/v1/{device}/cmd"]

    def assert_no_open_command(self) -> None:
        allowed = {c.value for c in ksp.CommandCode}
        assert all(p["cmd"] in allowed for _, p in self.commands), self.commands
        assert not any("open" in json.dumps(p).lower() for _, p in self.commands)


@dataclass
class Kit:
    """The test site's devices, MQTT-native, reporting every ``interval_s``."""

    url: str
    interval_s: float
    valve_fails: bool = False
    detector: SimDetector = field(init=False)
    valves: dict[str, SimValve] = field(init=False)
    regulator: SimRegulator = field(init=False)
    devices: list[MqttDevice] = field(init=False)

    def __post_init__(self) -> None:
        i = self.interval_s
        self.detector = SimDetector(1, battery_mv=0, interval_s=i)
        self.valves = {
            v: SimValve(n, interval_s=i, close_time_s=0.2, fail_to_close=self.valve_fails)
            for n, v in enumerate((*VALVES, REGULATOR_VALVE), start=2)
        }
        self.regulator = SimRegulator(9, interval_s=i)
        models: dict[str, SimDevice] = {
            DETECTOR: self.detector,
            **self.valves,
            REGULATOR: self.regulator,
        }
        self.devices = [
            MqttDevice(self.url, ident, model.kind, model=model, reconnect_s=0.2)
            for ident, model in models.items()
        ]

    async def start(self) -> None:
        for device in self.devices:
            await device.start()
        await wait_until(lambda: all(d.online.is_set() for d in self.devices))

    async def stop(self) -> None:
        for device in self.devices:
            await device.stop()


def settings(tmp_path: Path, url: str, interval_s: int = 60, **more: object) -> GatewaySettings:
    return GatewaySettings.load(
        None,
        {
            "mqtt": url,
            "data_dir": tmp_path / "data",
            "registry": write_registry(tmp_path / "registry", interval_s),
            "gateway_id": f"gw-{uuid.uuid4().hex[:12]}",
            "log_format": "text",
            **more,
        },
    )


@pytest.fixture
async def spy(own_mosquitto: Mosquitto) -> AsyncIterator[Spy]:
    s = Spy(own_mosquitto.url)
    await s.start()
    yield s
    await s.stop()
    s.assert_no_open_command()


async def started(s: GatewaySettings) -> Gateway:
    gateway = Gateway(s)
    await gateway.start()
    await wait_until(gateway.site_mqtt.connected.is_set)
    return gateway


def open_alarms(gateway: Gateway, alarm_type: str | None = None) -> list[Alarm]:
    return [
        a for a in gateway.alarms.open_alarms() if alarm_type is None or a.alarm_type == alarm_type
    ]


async def test_leak_closes_both_linked_valves_once(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        kit.detector.set_lel(55.0)
        await wait_until(
            lambda: all(
                v.state is ksp.ValveState.CLOSED
                for v in kit.valves.values()
                if v is not kit.valves[REGULATOR_VALVE]
            )
        )
        await wait_until(
            lambda: all(gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES)
        )
        leak = open_alarms(gateway, "leak_high")
        assert [a.source for a in leak] == [DETECTOR]
        assert leak[0].site_id == SITE
        await asyncio.sleep(0.5)  # time for any duplicate command to show up
        for valve in VALVES:
            assert [c["cmd"] for c in spy.to(valve)] == ["close_valve"]
        assert spy.to(REGULATOR_VALVE) == []
        assert spy.to(DETECTOR) == []
        assert kit.valves[REGULATOR_VALVE].state is ksp.ValveState.OPEN
        await wait_until(lambda: gateway.linkage.counts["ack.ok"] == 2)  # devices' cmd/acks
        acks = gateway.store.db.execute("SELECT valve_id, ack FROM valve_command").fetchall()
        assert sorted(tuple(r) for r in acks) == [(v, "ok") for v in sorted(VALVES)]
    finally:
        await kit.stop()
        await gateway.stop()


async def test_valve_that_fails_is_retried_then_critical(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url, valve_retry_s=0.5))
    kit = Kit(own_mosquitto.url, interval_s=60, valve_fails=True)
    await kit.start()
    try:
        kit.detector.set_lel(55.0)
        await wait_until(lambda: len(open_alarms(gateway, "valve_failed_to_close")) == 2)
        failed = open_alarms(gateway, "valve_failed_to_close")
        assert sorted(a.source for a in failed) == sorted(VALVES)
        assert all(a.severity == "critical" for a in failed)
        await asyncio.sleep(1.5)  # three retry periods: no fourth command
        for valve in VALVES:
            assert [c["cmd"] for c in spy.to(valve)] == ["close_valve"] * 3
            assert len({c["id"] for c in spy.to(valve)}) == 3
    finally:
        await kit.stop()
        await gateway.stop()


async def test_overflow_closes_the_regulators_valve(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        kit.regulator.trip_overflow()
        await wait_until(
            lambda: gateway.linkage.valve_state(REGULATOR_VALVE) is ksp.ValveState.CLOSED
        )
        assert [a.source for a in open_alarms(gateway, "overflow")] == [REGULATOR]
        assert [c["cmd"] for c in spy.to(REGULATOR_VALVE)] == ["close_valve"]
        assert all(spy.to(v) == [] for v in VALVES)
    finally:
        await kit.stop()
        await gateway.stop()


async def test_silent_detector_goes_offline_after_three_intervals(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    heard: list[datetime] = []
    gateway = await started(settings(tmp_path, own_mosquitto.url, interval_s=1))
    gateway.bus.subscribe(
        ReportReceived, lambda e: heard.append(e.received_at) if e.device_id == DETECTOR else None
    )
    kit = Kit(own_mosquitto.url, interval_s=1)
    await kit.start()
    try:
        await wait_until(lambda: len(heard) >= 2)
        kit.detector.silent = True
        await wait_until(lambda: open_alarms(gateway, "device_offline"))
        offline = open_alarms(gateway, "device_offline")
        assert [a.source for a in offline] == [DETECTOR]  # the others keep reporting
        silent_for = (offline[0].raised_at - heard[-1]).total_seconds()
        assert 3.0 - 0.05 <= silent_for <= 3.0 + 2.0, silent_for
        kit.detector.silent = False
        kit.detector.emit(ksp.Event.PERIODIC)
        await wait_until(lambda: not any(a.active for a in open_alarms(gateway, "device_offline")))
    finally:
        await kit.stop()
        await gateway.stop()


async def test_restart_gives_grace_no_offline_flood(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    s = settings(tmp_path, own_mosquitto.url, interval_s=1)
    kit = Kit(own_mosquitto.url, interval_s=1)
    await kit.start()
    try:
        first = await started(s)
        await asyncio.sleep(1.5)
        await first.stop()
        await asyncio.sleep(4)  # down for more than three intervals
        second = await started(s)
        raised: list[str] = []
        second.bus.subscribe(AlarmChanged, lambda e: raised.append(e.alarm.alarm_type))
        await asyncio.sleep(4)
        assert "device_offline" not in raised
        assert open_alarms(second) == []
        assert second.supervision.online(DETECTOR)
        await second.stop()
    finally:
        await kit.stop()


async def test_burst_of_reports_makes_one_alarm(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        async with parse_mqtt_url(own_mosquitto.url).client(identifier="burst") as client:
            for seq in range(50):
                report = KitReport.model_validate(
                    {
                        "kind": "detector",
                        "seq": seq,
                        "event": "alarm",
                        "detector": {"lel_pct": 52 + seq % 7, "flags": ["alarm_low", "alarm_high"]},
                    }
                )
                await client.publish(report_topic(DETECTOR), report.to_json(), qos=1)
        await wait_until(lambda: gateway.ingest.counts["accepted.report"] >= 50)
        await wait_until(
            lambda: all(gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES)
        )
        await gateway.bus.join()
        rows = gateway.store.db.execute(
            "SELECT alarm_type, count(*) FROM alarms WHERE source = ? GROUP BY alarm_type",
            (DETECTOR,),
        ).fetchall()
        assert rows
        assert all(count == 1 for _, count in rows), [tuple(r) for r in rows]
        assert "leak_high" in {r[0] for r in rows}
        for valve in VALVES:
            assert len(spy.to(valve)) == 1
    finally:
        await kit.stop()
        await gateway.stop()


async def test_bad_input_is_counted_logged_and_survived(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    garbage = [
        (report_topic(DETECTOR), b"{not json"),
        (report_topic(DETECTOR), b'{"kind": "toaster", "seq": 1, "event": "alarm"}'),
        (report_topic(DETECTOR), b"x" * 9000),
        (
            report_topic(DETECTOR),
            b'{"kind": "detector", "seq": 1, "event": "alarm", "detector": {"lel_pct": 400}}',
        ),
        (
            report_topic("ghost-1"),
            b'{"kind": "detector", "seq": 1, "event": "alarm",'
            b' "detector": {"lel_pct": 60, "flags": ["alarm_high"]}}',
        ),
        ("kit/v1/bad id/report", b"{}"),
    ]
    try:
        async with parse_mqtt_url(own_mosquitto.url).client(identifier="garbage") as client:
            for topic, payload in garbage:
                await client.publish(topic, payload, qos=1)
        counts = gateway.ingest.counts
        await wait_until(lambda: sum(v for k, v in counts.items() if k.startswith("rejected")) >= 6)
        for reason in ("bad_json", "unknown_kind", "oversized", "invalid", "unregistered_device"):
            assert counts[f"rejected.{reason}"] >= 1, counts
        assert "ghost-1" in caplog.text
        assert spy.commands == []  # the unregistered "leak" closed nothing
        kit.detector.set_lel(55.0)  # and the gateway still works
        await wait_until(
            lambda: all(gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES)
        )
    finally:
        await kit.stop()
        await gateway.stop()
