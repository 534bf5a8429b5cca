"""The bridge against the kit simulator: a receiver with real retransmit timing behind a pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge import ksp
from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.link import LinkConfig
from firmware_bridge.simulator.devices import SimDetector, SimRegulator, SimValve
from firmware_bridge.simulator.port import PtyPort
from firmware_bridge.simulator.receiver import SimReceiver
from gateway import contract
from gateway.mqtturl import parse_mqtt_url
from tests.support.services import Mosquitto
from tests.test_bridge import Watcher, eventually, watching

DETECTOR, VALVE, REGULATOR = 0x5EC70001, 0x5EC70002, 0x5EC70003


@dataclass
class Site:
    port: PtyPort
    receiver: SimReceiver
    detector: SimDetector
    valve: SimValve
    bridge: Bridge


@contextlib.asynccontextmanager
async def site(tmp_path: Path, url: str) -> AsyncIterator[Site]:
    port = PtyPort(tmp_path / "ttyKIT")
    receiver = SimReceiver(port, heartbeat_s=30, retransmit_s=0.5, max_retransmits=3)
    detector = SimDetector(DETECTOR)
    valve = SimValve(VALVE, close_time_s=0.2)
    valve.link_to(detector)
    for device in (detector, valve, SimRegulator(REGULATOR)):
        receiver.add(device)
    bridge = Bridge(
        BridgeConfig(f"s{uuid.uuid4().hex[:8]}", parse_mqtt_url(url)),
        LinkConfig(str(port.link_path)),
    )
    await port.start()
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.mqtt_connected.wait(), 10)
        yield Site(port, receiver, detector, valve, bridge)
    finally:
        await receiver.stop()
        await bridge.stop()
        await port.stop()


def reports_of(watcher: Watcher, device_id: int) -> list[dict[str, object]]:
    return [r for device, r in watcher.reports() if device == ksp.format_device_id(device_id)]


async def test_alarm_is_delivered_once_through_dropped_acks_noise_and_corruption(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, site(tmp_path, mosquitto.url) as s:
        await s.receiver.start()  # power-on reports from the three devices
        await watcher.wait_for(lambda: len(watcher.reports()) == 3)
        s.receiver.drop_next_acks(2)
        s.receiver.inject_noise(b"\x00\xa5\xa5\x01\xff")
        s.receiver.corrupt_next_frames(1)
        s.detector.set_lel(35.0)  # alarm; its linked valve closes by radio
        await watcher.wait_for(lambda: any(r["event"] == "alarm" for _, r in watcher.reports()))
        async with asyncio.timeout(10):
            await s.receiver.all_acked()
        await asyncio.sleep(0.6)  # past one more retransmit period: any duplicate shows now
        alarms = [r for r in reports_of(watcher, DETECTOR) if r["event"] == "alarm"]
        assert len(alarms) == 1
        assert alarms[0]["detector"]["lel_pct"] == 35.0  # type: ignore[index]
        assert s.receiver.stats.retransmits >= 2
        assert s.receiver.stats.gave_up == 0
        assert s.bridge.link.counters.duplicates >= 1
        assert s.bridge.link.counters.drops["bad_crc"] >= 1
        seqs = [r["seq"] for r in reports_of(watcher, DETECTOR)]
        assert seqs == list(range(len(seqs)))  # per device, in order, no gaps


async def test_close_valve_command_round_trip_and_replug(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, site(tmp_path, mosquitto.url) as s:
        await s.receiver.start()
        await watcher.wait_for(lambda: len(watcher.reports()) == 3)
        ack_topic = contract.cmd_ack_topic(ksp.format_device_id(VALVE))
        payload = b'{"id": "sim-1", "cmd": "close_valve"}'
        await watcher.client.publish(contract.cmd_topic(ksp.format_device_id(VALVE)), payload)
        await watcher.wait_for(lambda: bool(watcher.on(ack_topic)))
        assert json.loads(watcher.on(ack_topic)[0]) == {"id": "sim-1", "result": "ok"}
        await watcher.wait_for(
            lambda: any(
                r["valve"] == {"state": "closed", "cause": "remote_command", "flags": []}
                for r in reports_of(watcher, VALVE)
            )
        )
        s.port.replug()  # USB pulled and plugged back: a new pty behind the same path
        await watcher.client.publish(
            contract.cmd_topic(ksp.format_device_id(DETECTOR)),
            b'{"id": "sim-2", "cmd": "query"}',
        )
        detector_ack = contract.cmd_ack_topic(ksp.format_device_id(DETECTOR))
        await watcher.wait_for(lambda: bool(watcher.on(detector_ack)))
        assert json.loads(watcher.on(detector_ack)[0]) == {"id": "sim-2", "result": "ok"}
        assert s.bridge.link.counters.reconnects >= 1
        assert [c.command.command for c in s.receiver.stats.commands] == [
            ksp.CommandCode.CLOSE_VALVE,
            ksp.CommandCode.QUERY,
        ]


async def test_with_two_bridges_only_the_home_receiver_answers_a_command(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # A second receiver + bridge on the same broker, holding another site's detector: it sees
    # the valve's command too, its receiver says unknown_device, and it must stay silent.
    other_port = PtyPort(tmp_path / "ttyOTHER")
    other = SimReceiver(other_port, heartbeat_s=30)
    other.add(SimDetector(0x5EC70101))
    other_bridge = Bridge(
        BridgeConfig(f"o{uuid.uuid4().hex[:8]}", parse_mqtt_url(mosquitto.url)),
        LinkConfig(str(other_port.link_path)),
    )
    await other_port.start()
    await other_bridge.start()
    try:
        async with watching(mosquitto.url) as watcher, site(tmp_path, mosquitto.url) as s:
            await other.start()
            await s.receiver.start()
            await watcher.wait_for(lambda: len(watcher.reports()) == 4)
            ack_topic = contract.cmd_ack_topic(ksp.format_device_id(VALVE))
            payload = b'{"id": "two-1", "cmd": "close_valve"}'
            await watcher.client.publish(contract.cmd_topic(ksp.format_device_id(VALVE)), payload)
            await watcher.wait_for(lambda: bool(watcher.on(ack_topic)))
            await eventually(lambda: other.stats.commands != [])
            await eventually(
                lambda: other_bridge.counters.commands["not_behind_this_receiver"] == 1
            )
            await asyncio.sleep(0.3)  # a late wrong answer would show now
            assert [json.loads(p) for p in watcher.on(ack_topic)] == [
                {"id": "two-1", "result": "ok"}
            ]
    finally:
        await other.stop()
        await other_bridge.stop()
        await other_port.stop()
