"""The bridge end to end: a raw KSP/1 peer on a real pty, a real Mosquitto, an MQTT watcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware_bridge import ksp
from firmware_bridge.bridge import Bridge, BridgeConfig, kit_report
from firmware_bridge.link import LinkConfig, ReportReceived
from gateway import contract
from gateway.mqtturl import parse_mqtt_url
from tests.support.ksp_peer import RawPeer
from tests.support.services import Mosquitto, free_port
from tests.test_ksp import VECTORS

VALVE = "00c0ffee"


def vector(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


@dataclass
class Watcher:
    """An MQTT client that records everything on ``kit/v1/#``."""

    client: aiomqtt.Client
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def pump(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.messages.append((str(message.topic), message.payload, message.retain))
            self.arrived.set()

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def live_online(self, topic: str) -> list[bool]:
        """``online`` of each receiver status published while watching (not a retained one)."""
        return [
            json.loads(p)["online"]
            for t, p, retained in self.messages
            if t == topic and not retained
        ]

    def reports(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (contract.parse_topic(t)[1], json.loads(p))
            for t, p, _ in self.messages
            if t.endswith("/report")
        ]

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 15.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


async def eventually(predicate: Callable[[], bool], within_s: float = 15.0) -> None:
    """Poll ``predicate`` (for state no MQTT message announces) until true or ``within_s``."""
    for _ in range(int(within_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within_s} s")


@contextlib.asynccontextmanager
async def watching(url: str, identifier: str | None = None) -> AsyncIterator[Watcher]:
    persistent = identifier is not None  # a session that outlives a broker restart
    client = parse_mqtt_url(url).client(identifier=identifier, clean_session=not persistent)
    async with client:
        await client.subscribe("kit/v1/#", qos=1)
        watcher = Watcher(client)
        pump = asyncio.create_task(watcher.pump())
        try:
            yield watcher
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


@dataclass
class Rig:
    peer: RawPeer
    bridge: Bridge

    @property
    def bridge_id(self) -> str:
        return self.bridge.config.bridge_id

    async def connected(self) -> None:
        assert (await self.peer.next_message())[1] == ksp.Ping()

    async def command(self, watcher: Watcher, device: str, payload: bytes) -> None:
        await watcher.client.publish(contract.cmd_topic(device), payload, qos=1)


@contextlib.asynccontextmanager
async def bridged(
    tmp_path: Path, url: str, bridge_id: str | None = None, **link: float
) -> AsyncIterator[Rig]:
    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    bridge_id = bridge_id or f"b{uuid.uuid4().hex[:8]}"
    config = BridgeConfig(bridge_id, parse_mqtt_url(url), drain_on_stop_s=2)
    bridge = Bridge(config, LinkConfig(str(peer.path), **link))  # type: ignore[arg-type]
    await bridge.start()
    try:
        yield Rig(peer, bridge)
    finally:
        await bridge.stop()
        peer.close()


async def test_reports_arrive_decoded_once_despite_retransmits_noise_and_bad_crc(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        await rig.connected()
        await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
        names = ("detector periodic", "detector alarm", "valve closed", "regulator trip")
        for name in names:
            bad_crc = bytearray(vector(name))
            bad_crc[-2] ^= 0x01
            # The receiver never sees our ACKs: it sends each report 4 times, noise in between.
            for _ in range(4):
                rig.peer.write(b"\x00\xa5\x17" + bytes(bad_crc) + vector(name) + b"\xff")
        await watcher.wait_for(lambda: len(watcher.reports()) >= 4)
        await asyncio.sleep(0.5)  # any duplicate would arrive now
        reports = watcher.reports()
        assert [(device, r["kind"], r["event"], r["seq"]) for device, r in reports] == [
            ("1a2b3c4d", "detector", "periodic", 0),
            ("1a2b3c4d", "detector", "alarm", 1),  # seq counts per device
            (VALVE, "valve", "state_change", 0),
            ("0badf00d", "regulator", "alarm", 0),
        ]
        alarm = reports[1][1]
        assert alarm["detector"] == {
            "lel_pct": 31.5,
            "flags": ["alarm_low", "alarm_high"],
            "temp_c": 25,
        }
        assert (alarm["battery_mv"], alarm["rssi_dbm"]) == (2950, -70)
        assert alarm["ts"].endswith("Z")  # bridge receive time, UTC
        assert reports[2][1]["valve"] == {"state": "closed", "cause": "linked_alarm", "flags": []}
        for _, report in reports:
            contract.KitReport.model_validate(report)
        counters = rig.bridge.link.counters
        assert counters.duplicates == 12
        assert counters.drops["bad_crc"] == 16
        assert counters.acks_sent == 16


async def test_availability_and_receiver_status(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with watching(mosquitto.url) as watcher:
        async with bridged(tmp_path, mosquitto.url, heartbeat_timeout_s=1.0) as rig:
            availability = contract.bridge_availability_topic(rig.bridge_id)
            receiver = contract.receiver_topic(rig.bridge_id)
            await rig.connected()
            await watcher.wait_for(lambda: watcher.on(availability) == [b"online"])
            rig.peer.write(vector("heartbeat"))
            await watcher.wait_for(
                lambda: any(json.loads(p)["online"] for p in watcher.on(receiver))
            )
            status = json.loads(watcher.on(receiver)[-1])
            assert (status["uptime_s"], status["paired_count"], status["fw_version"]) == (
                86400,
                12,
                "1.2",
            )
            contract.ReceiverStatus.model_validate(status)
            # No heartbeat within the (shortened) timeout: offline.
            await watcher.wait_for(lambda: not json.loads(watcher.on(receiver)[-1])["online"])
            rig.peer.write(vector("heartbeat"))
            await watcher.wait_for(lambda: json.loads(watcher.on(receiver)[-1])["online"])
        await watcher.wait_for(lambda: watcher.on(availability)[-1:] == [b"offline"])
    # Both are retained: a newcomer learns the bridge is offline, and so is its receiver.
    async with watching(mosquitto.url) as late:
        await late.wait_for(lambda: bool(late.on(receiver) and late.on(availability)))
        assert late.on(availability) == [b"offline"]
        assert json.loads(late.on(receiver)[0])["online"] is False


async def test_a_clean_stop_says_stopping_before_offline_a_timeout_does_not(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # The gateway gives a planned stop (SIGTERM) a grace instead of paging: it must be told
    # apart from a receiver gone silent and from the last will of a crash.
    async with watching(mosquitto.url) as watcher:
        async with bridged(tmp_path, mosquitto.url, heartbeat_timeout_s=1.0) as rig:
            receiver = contract.receiver_topic(rig.bridge_id)
            availability = contract.bridge_availability_topic(rig.bridge_id)
            await rig.connected()
            rig.peer.write(vector("heartbeat"))
            await watcher.wait_for(lambda: watcher.live_online(receiver) == [True])
            await watcher.wait_for(lambda: watcher.live_online(receiver) == [True, False])
            assert "stopping" not in json.loads(watcher.on(receiver)[-1])  # silent: not planned
            rig.peer.write(vector("heartbeat"))
            await watcher.wait_for(lambda: watcher.live_online(receiver) == [True, False, True])
        await watcher.wait_for(lambda: watcher.on(availability)[-1:] == [b"offline"])
    order = [t for t, _, _ in watcher.messages if t in (receiver, availability)]
    assert order[-2:] == [receiver, availability]  # the reason first, then the availability
    stopped = contract.ReceiverStatus.model_validate_json(watcher.on(receiver)[-1])
    assert (stopped.online, stopped.stopping, stopped.paired_count) == (False, True, 12)


async def test_a_start_publishes_no_receiver_status_until_the_receiver_answers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        receiver = contract.receiver_topic(rig.bridge_id)
        availability = contract.bridge_availability_topic(rig.bridge_id)
        await rig.connected()
        await watcher.wait_for(lambda: watcher.on(availability) == [b"online"])
        await asyncio.sleep(0.5)  # connected to the broker, the receiver not heard yet
        assert watcher.on(receiver) == []  # no made-up "offline" that would alarm the duty room
        rig.peer.write(vector("heartbeat"))  # the answer to the PING
        await watcher.wait_for(lambda: bool(watcher.on(receiver)))
        await asyncio.sleep(0.5)  # a second status would arrive now
        assert watcher.live_online(receiver) == [True]
        assert rig.bridge.counters.published["receiver"] == 1


async def test_a_receiver_that_never_answers_is_offline_after_the_timeout_not_before(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    bridge_id = f"b{uuid.uuid4().hex[:8]}"
    receiver = contract.receiver_topic(bridge_id)
    # The status a previous run of this bridge left retained: the truth as last known.
    before = contract.ReceiverStatus(online=True, paired_count=12, ts=datetime.now(UTC))
    async with parse_mqtt_url(mosquitto.url).client() as seeder:
        await seeder.publish(receiver, before.model_dump_json(), qos=1, retain=True)
    timeout_s = 2.0
    async with watching(mosquitto.url) as watcher:
        await watcher.wait_for(lambda: bool(watcher.on(receiver)))  # the retained one
        started = asyncio.get_running_loop().time()
        async with bridged(tmp_path, mosquitto.url, bridge_id, heartbeat_timeout_s=timeout_s):
            await watcher.wait_for(lambda: bool(watcher.live_online(receiver)))
            offline_after = asyncio.get_running_loop().time() - started
            await asyncio.sleep(timeout_s)  # the deadline is not re-armed: no second offline
            assert watcher.live_online(receiver) == [False]
            assert offline_after >= timeout_s
    status = contract.ReceiverStatus.model_validate_json(watcher.on(receiver)[1])
    assert (status.online, status.paired_count) == (False, None)  # never heard by this run


async def test_an_online_receiver_is_offline_at_once_when_the_port_is_lost(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        receiver = contract.receiver_topic(rig.bridge_id)
        await rig.connected()
        rig.peer.write(vector("heartbeat"))
        await watcher.wait_for(lambda: watcher.live_online(receiver) == [True])
        rig.peer.unplug()
        # Well within the 90 s heartbeat timeout: only the port loss can have caused it.
        await watcher.wait_for(lambda: len(watcher.live_online(receiver)) == 2, within_s=10)
        assert watcher.live_online(receiver) == [True, False]


async def test_command_round_trip(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        await rig.connected()
        await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
        await rig.command(watcher, VALVE, b'{"id": "c-1", "cmd": "close_valve"}')
        seq, message = await rig.peer.next_message()
        assert message == ksp.Command(0x00C0FFEE, ksp.CommandCode.CLOSE_VALVE)
        rig.peer.send(0x30, ksp.CmdAck(seq, 0x00C0FFEE, ksp.CmdResult.OK))
        ack_topic = contract.cmd_ack_topic(VALVE)
        await watcher.wait_for(lambda: bool(watcher.on(ack_topic)))
        assert json.loads(watcher.on(ack_topic)[0]) == {"id": "c-1", "result": "ok"}


async def test_command_without_cmd_ack_is_resent_once_then_unreachable(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with (
        watching(mosquitto.url) as watcher,
        bridged(tmp_path, mosquitto.url, cmd_timeout_s=0.5) as rig,
    ):
        await rig.connected()
        await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
        await rig.command(watcher, VALVE, b'{"id": "c-2", "cmd": "self_test"}')
        first, _ = await rig.peer.next_message()
        second, message = await rig.peer.next_message()
        assert message == ksp.Command(0x00C0FFEE, ksp.CommandCode.SELF_TEST)
        assert first != second
        ack_topic = contract.cmd_ack_topic(VALVE)
        await watcher.wait_for(lambda: bool(watcher.on(ack_topic)))
        assert json.loads(watcher.on(ack_topic)[0]) == {"id": "c-2", "result": "unreachable"}
        await rig.peer.expect_quiet(0.3)


@pytest.mark.parametrize(
    ("payload", "answer", "reason"),
    [
        (b'{"id": "c-3", "cmd": "open"}', "c-3", "unknown_cmd"),
        (b'{"id": "c-4", "cmd": "open_valve"}', "c-4", "unknown_cmd"),
        (b'{"id": "c-5", "cmd": "close_valve", "force": true}', "c-5", "invalid"),
        (b'{"cmd": "close_valve"}', None, "invalid"),
        (b"not json", None, "bad_json"),
    ],
)
async def test_bad_commands_are_rejected_and_never_reach_the_wire(
    tmp_path: Path, mosquitto: Mosquitto, payload: bytes, answer: str | None, reason: str
) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        await rig.connected()
        await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
        await rig.command(watcher, VALVE, payload)
        await rig.command(watcher, "native-valve-7", b'{"id": "n-1", "cmd": "close_valve"}')
        ack_topic = contract.cmd_ack_topic(VALVE)
        if answer is not None:
            await watcher.wait_for(lambda: bool(watcher.on(ack_topic)))
            assert json.loads(watcher.on(ack_topic)[0]) == {"id": answer, "result": "rejected"}
        else:
            await eventually(lambda: rig.bridge.counters.rejected[reason] == 1)
        await rig.peer.expect_quiet(0.5)  # nothing was written to the serial line
        assert rig.bridge.counters.rejected == {reason: 1}
        assert watcher.on(contract.cmd_ack_topic("native-valve-7")) == []  # not ours


async def test_bridge_recovers_when_the_port_is_replugged(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        await rig.connected()
        rig.peer.write(vector("valve closed"))
        assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
        await watcher.wait_for(lambda: len(watcher.reports()) == 1)
        rig.peer.unplug()
        await asyncio.sleep(1.0)
        rig.peer.plug()  # a new pty behind the same path
        await rig.connected()
        rig.peer.write(vector("regulator trip"))
        await watcher.wait_for(lambda: len(watcher.reports()) == 2)
        assert [device for device, _ in watcher.reports()] == [VALVE, "0badf00d"]


async def test_reports_acked_while_the_broker_is_down_are_delivered_in_order(
    tmp_path: Path,
) -> None:
    # A persistent broker and watcher session, so the watcher misses nothing across the restart
    # whichever of it and the bridge reconnects first. "user root" keeps a root-run broker root
    # so it can write its database in the test's private directory.
    config = f"persistence true\npersistence_location {tmp_path}/\nuser root\n"
    broker = Mosquitto(tmp_path, extra_config=config)
    with broker.running():
        async with bridged(tmp_path, broker.url) as rig:
            async with watching(broker.url, identifier="watcher-restart"):
                await rig.connected()
                await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
            broker.stop()
            for _ in range(200):  # let the bridge notice the broker is gone
                if not rig.bridge.mqtt_connected.is_set():
                    break
                await asyncio.sleep(0.05)
            valve = ksp.parse(ksp.Decoder().feed(vector("valve closed"))[0])
            assert isinstance(valve, ksp.Report)
            for seq in range(20):
                rig.peer.send(seq, valve)
                assert (await rig.peer.next_message())[1] == ksp.Ack(seq)  # accepted
            assert rig.bridge.queued == 20
            broker.start()
            async with watching(broker.url, identifier="watcher-restart") as watcher:
                await watcher.wait_for(lambda: len(watcher.reports()) == 20)
                assert [r["seq"] for _, r in watcher.reports()] == list(range(20))
            assert rig.bridge.queued == 0


async def test_full_outbox_refuses_reports_unacknowledged(tmp_path: Path) -> None:
    # Nothing listens on this port: the broker stays unreachable for the whole test.
    url = f"mqtt://127.0.0.1:{free_port()}"
    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    config = BridgeConfig("full", parse_mqtt_url(url), queue_limit=3, drain_on_stop_s=0.2)
    bridge = Bridge(config, LinkConfig(str(peer.path)))
    await bridge.start()
    try:
        assert (await peer.next_message())[1] == ksp.Ping()
        valve = ksp.parse(ksp.Decoder().feed(vector("valve closed"))[0])
        for seq in range(3):
            peer.send(seq, valve)
            assert (await peer.next_message())[1] == ksp.Ack(seq)
        peer.send(3, valve)
        await peer.expect_quiet(0.5)  # refused: not ACKed, so the receiver will retransmit
        assert bridge.counters.outbox_overflow == 1
        assert bridge.link.counters.refused == 1
        assert bridge.queued == 3
    finally:
        await bridge.stop()
        peer.close()
    assert bridge.counters.lost_on_stop == 3


def test_kit_report_of_a_mains_powered_regulator() -> None:
    report = ksp.Report(
        0x0BADF00D,
        ksp.Event.ALARM,
        0,  # mains powered: KSP/1 sends 0
        -80,
        ksp.RegulatorBody(0, frozenset({ksp.RegulatorFlag.SELF_CLOSED})),
    )
    received = datetime(2026, 11, 28, 10, 0, 0, 123000, tzinfo=UTC)
    payload = json.loads(kit_report(ReportReceived(report, received), 65535).to_json())
    assert payload == {
        "kind": "regulator",
        "seq": 65535,
        "event": "alarm",
        "ts": "2026-11-28T10:00:00.123000Z",
        "rssi_dbm": -80,
        "regulator": {"pressure_pa": 0, "flags": ["self_closed"]},
    }
