"""The kit simulator against the spec: real ptys (the test plays the gateway on the slave end,
decoding with ksp.Decoder), a real Mosquitto for the MQTT-native device."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path

import aiomqtt
import pytest
from click.testing import CliRunner

from firmware_bridge import ksp
from firmware_bridge.simulator import (
    SCENARIOS,
    District,
    MqttDevice,
    PtyPort,
    SerialPort,
    SimDetector,
    SimDevice,
    SimReceiver,
    SimRegulator,
    Simulation,
    SimValve,
    Step,
    Story,
    leak,
    scenario_story,
)
from firmware_bridge.simulator.cli import simulate
from firmware_bridge.simulator.district import COMPONENTS_HEADER, CYLINDERS_HEADER, SITES_HEADER
from gateway.contract import (
    CmdAckMessage,
    KitReport,
    cmd_ack_topic,
    cmd_topic,
    decode,
    device_availability_topic,
    report_topic,
)
from gateway.registry.cli import registry
from tests.support.services import Mosquitto

WAIT = 10.0  # generous: a loaded 2-core box must not flake
DETECTOR_ID, VALVE_ID = 0x1A2B3C4D, 0x00C0FFEE


class GatewayEnd:
    """The test's side of the line: opens the pty by its link, decodes every frame."""

    def __init__(self, path: Path, *, auto_ack: bool) -> None:
        self.path = path
        self.auto_ack = auto_ack
        self.decoder = ksp.Decoder()
        self.frames: asyncio.Queue[tuple[ksp.Frame, ksp.Message]] = asyncio.Queue()
        self.seen: list[tuple[ksp.Frame, ksp.Message]] = []
        self.read_error: OSError | None = None
        self.eof = False
        self._seq = 0
        self.fd = -1

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # the adapter was pulled
            self.read_error = exc
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        if not data:
            self.eof = True
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        for frame in self.decoder.feed(data):
            message = ksp.parse(frame)
            self.seen.append((frame, message))
            self.frames.put_nowait((frame, message))
            if self.auto_ack and frame.type in (ksp.FrameType.REPORT, ksp.FrameType.PAIRING):
                self.send(ksp.Ack(frame.seq))

    def send(self, message: ksp.Message) -> int:
        seq, self._seq = self._seq, (self._seq + 1) & 0xFF
        os.write(self.fd, ksp.encode(seq, message))
        return seq

    async def expect(self, match: Callable[[ksp.Message], bool]) -> tuple[ksp.Frame, ksp.Message]:
        async with asyncio.timeout(WAIT):
            while True:
                frame, message = await self.frames.get()
                if match(message):
                    return frame, message

    async def drain(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds; fail after WAIT seconds."""
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def is_report(device_id: int, **body: object) -> Callable[[ksp.Message], bool]:
    def match(m: ksp.Message) -> bool:
        return (
            isinstance(m, ksp.Report)
            and m.device_id == device_id
            and all(getattr(m.body, k) == v for k, v in body.items())
        )

    return match


@contextlib.asynccontextmanager
async def kit(
    tmp_path: Path, *devices: SimDevice, auto_ack: bool = True, **options: float
) -> AsyncIterator[tuple[PtyPort, SimReceiver, GatewayEnd]]:
    port = PtyPort(tmp_path / "ttyKIT0")
    receiver = SimReceiver(port, retransmit_s=options.pop("retransmit_s", 0.1), **options)  # type: ignore[arg-type]
    for device in devices:
        receiver.add(device)
    await port.start()
    end = GatewayEnd(port.link_path, auto_ack=auto_ack)
    end.open()  # before the receiver powers on, so the test sees its first frames
    await receiver.start()
    try:
        yield port, receiver, end
    finally:
        await receiver.stop()
        end.close()
        await port.stop()


# --- the receiver on a real pty ---------------------------------------------------------------


async def test_frames_decode_on_the_other_end_heartbeat_first(tmp_path: Path) -> None:
    async with kit(tmp_path, SimDetector(DETECTOR_ID), SimValve(VALVE_ID)) as (_, receiver, end):
        _, first = await end.expect(lambda m: True)
        assert first == ksp.Heartbeat(0, 2, 0x0102)
        _, report = await end.expect(is_report(VALVE_ID))
        assert isinstance(report, ksp.Report)
        assert report.event is ksp.Event.POWER_ON
        assert report.body == ksp.ValveBody(ksp.ValveState.OPEN, ksp.ValveCause.NONE, frozenset())
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
    assert not end.decoder.counts  # not one byte of noise or bad frame on a clean line
    assert receiver.stats.reports_sent == 2
    assert receiver.stats.acks_received == 2
    assert receiver.stats.retransmits == 0


async def test_unacked_report_is_retransmitted_with_the_same_seq_at_most_3_times(
    tmp_path: Path,
) -> None:
    detector = SimDetector(DETECTOR_ID)
    async with kit(tmp_path, detector, auto_ack=False) as (_, receiver, end):
        detector.set_lel(12.5)
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()  # ends when the receiver gives up
        await end.drain(0.3)
    sent = [
        (f, m)
        for f, m in end.seen
        if isinstance(m, ksp.Report) and m.event is ksp.Event.STATE_CHANGE
    ]
    assert len(sent) == 4  # the first transmission and 3 retransmissions
    assert len({f.seq for f, _ in sent}) == 1
    assert len({m for _, m in sent}) == 1
    assert sent[0][1].body == ksp.DetectorBody(125, frozenset(), 24)
    assert receiver.stats.retransmits == 2 * 3  # power_on and state_change, both unacked
    assert receiver.stats.gave_up == 2


async def test_lost_ack_causes_one_retransmission_then_the_ack_stops_it(tmp_path: Path) -> None:
    detector = SimDetector(DETECTOR_ID)
    async with kit(tmp_path, detector) as (_, receiver, end):
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
        receiver.drop_next_acks(1)
        detector.set_lel(30.0)
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
        await end.drain(0.3)
    alarms = [f for f, m in end.seen if isinstance(m, ksp.Report) and m.event is ksp.Event.ALARM]
    assert len(alarms) == 2
    assert alarms[0] == alarms[1]  # a retransmission is the same frame, same SEQ
    assert receiver.stats.acks_ignored == 1
    assert receiver.stats.retransmits == 1
    assert receiver.stats.gave_up == 0


async def test_corrupted_frame_is_dropped_by_the_decoder_and_the_retransmission_arrives(
    tmp_path: Path,
) -> None:
    detector = SimDetector(DETECTOR_ID)
    async with kit(tmp_path, detector) as (_, receiver, end):
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
        receiver.inject_noise(b"\x00\xa5\xff\x5a")
        receiver.corrupt_next_frames(1)
        detector.set_lel(22.0)
        _, message = await end.expect(is_report(DETECTOR_ID, lel_x10=220))
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
    assert end.decoder.counts[ksp.DropReason.BAD_CRC] == 1
    assert end.decoder.counts[ksp.DropReason.NOISE] >= 3
    assert receiver.stats.retransmits == 1
    assert ksp.DetectorFlag.ALARM_LOW in message.body.flags  # type: ignore[union-attr]


async def test_ping_is_answered_with_a_heartbeat(tmp_path: Path) -> None:
    async with kit(tmp_path, SimDetector(DETECTOR_ID)) as (_, receiver, end):
        await end.expect(lambda m: isinstance(m, ksp.Heartbeat))
        end.send(ksp.Ping())
        _, heartbeat = await end.expect(lambda m: isinstance(m, ksp.Heartbeat))
    assert heartbeat == ksp.Heartbeat(heartbeat.uptime_s, 1, 0x0102)  # type: ignore[union-attr]
    assert receiver.stats.pings == 1


async def test_receiver_seq_wraps_after_255(tmp_path: Path) -> None:
    async with kit(tmp_path) as (_, receiver, end):
        for _ in range(300):
            end.send(ksp.Ping())
            await asyncio.sleep(0)
        await eventually(lambda: receiver.stats.pings == 300 and len(end.seen) == 301)
    seqs = [f.seq for f, _ in end.seen]
    assert seqs == [n & 0xFF for n in range(301)]


async def test_close_valve_command_acks_ok_then_the_valve_reports_closed(tmp_path: Path) -> None:
    valve = SimValve(VALVE_ID, close_time_s=0.2)
    async with kit(tmp_path, valve) as (_, receiver, end):
        seq = end.send(ksp.Command(VALVE_ID, ksp.CommandCode.CLOSE_VALVE))
        _, ack = await end.expect(lambda m: isinstance(m, ksp.CmdAck))
        assert ack == ksp.CmdAck(seq, VALVE_ID, ksp.CmdResult.OK)
        _, moving = await end.expect(is_report(VALVE_ID))
        assert moving.body.state is ksp.ValveState.MOVING  # type: ignore[union-attr]
        _, closed = await end.expect(is_report(VALVE_ID, state=ksp.ValveState.CLOSED))
    assert closed.body.cause is ksp.ValveCause.REMOTE_COMMAND  # type: ignore[union-attr]
    assert [(c.seq, c.command) for c in receiver.stats.commands] == [
        (seq, ksp.Command(VALVE_ID, ksp.CommandCode.CLOSE_VALVE))
    ]


async def test_command_outside_ksp1_is_rejected_and_never_moves_the_valve(tmp_path: Path) -> None:
    valve = SimValve(VALVE_ID, close_time_s=0.05)
    valve.state = ksp.ValveState.CLOSED
    async with kit(tmp_path, valve) as (_, receiver, end):
        for code in (0x00, 0x05, 0x80, 0xFF):  # none exists; an "open" would be one of these
            os.write(
                end.fd,
                ksp.encode_frame(
                    ksp.FrameType.COMMAND, 0x40 + code % 64, struct.pack(">IB", VALVE_ID, code)
                ),
            )
            _, ack = await end.expect(lambda m: isinstance(m, ksp.CmdAck))
            assert ack == ksp.CmdAck(0x40 + code % 64, VALVE_ID, ksp.CmdResult.REJECTED)
        end.send(ksp.Command(0xDEADBEEF, ksp.CommandCode.CLOSE_VALVE))
        _, unknown = await end.expect(lambda m: isinstance(m, ksp.CmdAck))
        await end.drain(0.2)
    assert unknown.result is ksp.CmdResult.UNKNOWN_DEVICE  # type: ignore[union-attr]
    assert receiver.stats.commands_rejected == 4
    assert valve.state is ksp.ValveState.CLOSED
    states = {m.body.state for _, m in end.seen if isinstance(m, ksp.Report)}  # type: ignore[union-attr]
    assert states == {ksp.ValveState.CLOSED}


@pytest.mark.parametrize(
    ("failure", "final"), [("stuck", ksp.ValveState.OPEN), ("fault", ksp.ValveState.FAULT)]
)
async def test_valve_that_fails_to_close_never_reports_closed(
    tmp_path: Path, failure: str, final: ksp.ValveState
) -> None:
    valve = SimValve(VALVE_ID, fail_to_close=True, failure=failure, close_time_s=0.1)  # type: ignore[arg-type]
    async with kit(tmp_path, valve) as (_, _receiver, end):
        end.send(ksp.Command(VALVE_ID, ksp.CommandCode.CLOSE_VALVE))
        _, ack = await end.expect(lambda m: isinstance(m, ksp.CmdAck))
        await end.expect(is_report(VALVE_ID, state=ksp.ValveState.MOVING))
        _, report = await end.expect(is_report(VALVE_ID, state=final))
        await end.drain(0.3)
    assert ack.result is ksp.CmdResult.OK  # type: ignore[union-attr]
    states = [m.body.state for _, m in end.seen if isinstance(m, ksp.Report)]  # type: ignore[union-attr]
    assert ksp.ValveState.CLOSED not in states
    if failure == "fault":
        assert ksp.ValveFlag.MOTOR_FAULT in report.body.flags  # type: ignore[union-attr]


async def test_unplug_fails_the_open_port_and_replug_repoints_the_link(tmp_path: Path) -> None:
    async with kit(tmp_path, SimDetector(DETECTOR_ID)) as (port, receiver, end):
        await end.expect(lambda m: isinstance(m, ksp.Heartbeat))
        before = os.readlink(port.link_path)
        port.unplug()
        assert not port.link_path.exists()
        await eventually(lambda: end.read_error is not None or end.eof)
        end.close()
        port.replug()
        assert os.readlink(port.link_path) != before
        again = GatewayEnd(port.link_path, auto_ack=True)
        again.open()
        try:
            again.send(ksp.Ping())
            await again.expect(lambda m: isinstance(m, ksp.Heartbeat))
        finally:
            again.close()
    assert receiver.stats.pings == 1


async def test_pairing_silenced_device_and_muted_heartbeat(tmp_path: Path) -> None:
    detector = SimDetector(DETECTOR_ID, time_scale=0.001)  # periodic every 0.6 s
    async with kit(tmp_path, detector) as (_, receiver, end):
        valve = SimValve(VALVE_ID)
        receiver.pair(valve)
        _, paired = await end.expect(lambda m: isinstance(m, ksp.Pairing))
        assert paired == ksp.Pairing(VALVE_ID, ksp.DeviceKind.VALVE, paired=True)
        await end.expect(is_report(VALVE_ID))  # the new device powers on

        receiver.silence(DETECTOR_ID)
        silenced_at = len(end.seen)
        end.send(ksp.Command(DETECTOR_ID, ksp.CommandCode.QUERY))
        _, ack = await end.expect(lambda m: isinstance(m, ksp.CmdAck))
        assert ack.result is ksp.CmdResult.UNREACHABLE  # type: ignore[union-attr]
        await end.drain(1.5)  # two periodic intervals
        assert not any(is_report(DETECTOR_ID)(m) for _, m in end.seen[silenced_at:])
        receiver.resume(DETECTOR_ID)
        await end.expect(is_report(DETECTOR_ID))

        receiver.mute_heartbeat(True)
        muted_at = len(end.seen)
        end.send(ksp.Ping())
        await end.drain(0.3)
        assert not any(isinstance(m, ksp.Heartbeat) for _, m in end.seen[muted_at:])
        receiver.mute_heartbeat(False)
        end.send(ksp.Ping())
        await end.expect(lambda m: isinstance(m, ksp.Heartbeat))

        await receiver.unpair(VALVE_ID)
        _, removed = await end.expect(lambda m: isinstance(m, ksp.Pairing))
        assert removed == ksp.Pairing(VALVE_ID, ksp.DeviceKind.VALVE, paired=False)
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
    assert receiver.stats.pairings_sent == 2
    assert receiver.unacked == 0
    assert [d.device_id for d in receiver.devices] == [DETECTOR_ID]


async def test_detector_silence_and_self_test_commands() -> None:
    detector = SimDetector(DETECTOR_ID)
    bodies: list[ksp.DetectorBody] = []
    detector.connect(lambda d, _e: bodies.append(d.body()))  # type: ignore[arg-type]
    assert detector.accepts(ksp.CommandCode.SILENCE)
    assert not detector.accepts(ksp.CommandCode.CLOSE_VALVE)
    assert not SimValve(VALVE_ID).accepts(ksp.CommandCode.SILENCE)
    detector.execute(ksp.CommandCode.SELF_TEST)
    detector.execute(ksp.CommandCode.SILENCE)
    assert ksp.DetectorFlag.SELF_TEST_OK in bodies[0].flags
    assert ksp.DetectorFlag.MUTED in bodies[1].flags
    assert ksp.DetectorFlag.SELF_TEST_OK not in bodies[1].flags


# --- device models ----------------------------------------------------------------------------


async def test_detector_alarms_at_its_thresholds_and_its_linked_valve_closes() -> None:
    detector = SimDetector(DETECTOR_ID, time_scale=0.01)
    valve = SimValve(VALVE_ID, close_time_s=1.0, time_scale=0.01)
    valve.link_to(detector)
    events: list[tuple[int, ksp.Event, object]] = []
    for device in (detector, valve):
        device.connect(lambda d, e: events.append((d.device_id, e, d.body())))
    detector.set_lel(19.9)
    assert detector.flags == frozenset()
    await leak(detector, peak_pct=55.0, step_pct=10.0, step_s=1.0)
    assert detector.flags >= {ksp.DetectorFlag.ALARM_LOW, ksp.DetectorFlag.ALARM_HIGH}
    alarm_levels = [b.lel_x10 for i, e, b in events if i == DETECTOR_ID and e is ksp.Event.ALARM]  # type: ignore[attr-defined]
    assert alarm_levels == [299, 550]  # crossing 20 then 50 %LEL, each once
    await eventually(lambda: valve.state is ksp.ValveState.CLOSED)
    assert valve.cause is ksp.ValveCause.LINKED_ALARM
    detector.set_lel(17.0)  # inside the hysteresis band: still alarming low
    assert ksp.DetectorFlag.ALARM_LOW in detector.flags
    detector.set_lel(5.0)
    assert detector.flags == frozenset()
    valve.manual_open()
    assert (valve.state, valve.cause) == (ksp.ValveState.OPEN, ksp.ValveCause.MANUAL)


async def test_regulator_trip_closes_its_valve_and_periodic_reports_follow_the_scale() -> None:
    regulator = SimRegulator(0x0BADF00D, time_scale=0.001)
    valve = SimValve(VALVE_ID, close_time_s=1.0, time_scale=0.001)
    valve.link_to(regulator)
    events: list[ksp.Event] = []
    regulator.connect(lambda _d, e: events.append(e))
    await regulator.start()
    try:
        await asyncio.sleep(0.2)  # 60 s mains interval x 0.001 = 60 ms: a few periodic reports
        regulator.trip_overflow()
        assert regulator.body() == ksp.RegulatorBody(
            0, frozenset({ksp.RegulatorFlag.OVERFLOW_TRIPPED, ksp.RegulatorFlag.SELF_CLOSED})
        )
        await eventually(lambda: valve.state is ksp.ValveState.CLOSED)
    finally:
        await regulator.stop()
        await valve.stop()
    assert events[0] is ksp.Event.POWER_ON
    assert 1 <= events.count(ksp.Event.PERIODIC) <= 6
    assert events[-1] is ksp.Event.ALARM


async def test_story_runs_steps_in_order_at_scaled_times() -> None:
    log: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def later() -> None:
        log.append(("async", loop.time() - start))

    story = Story(
        [Step(20.0, "second", later), Step(0.0, "first", lambda: log.append(("sync", 0.0)))],
        time_scale=0.01,
    )
    async with asyncio.timeout(WAIT):
        await story.run()
    assert story.done == ["first", "second"]
    assert log[1][1] >= 0.19


# --- district and registry --------------------------------------------------------------------


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_district_registry_has_the_exact_layout_and_valid_links(tmp_path: Path) -> None:
    district = District.generate(restaurants=20, households=50, seed=1)
    district.write_registry(tmp_path)
    sites_header, sites = read_csv(tmp_path / "sites.csv")
    comp_header, components = read_csv(tmp_path / "components.csv")
    cyl_header, cylinders = read_csv(tmp_path / "cylinders.csv")
    assert tuple(sites_header) == SITES_HEADER == (
        "site_id", "name", "site_type", "kit", "district", "address",
        "contact_name", "contact_phone", "contact_lang",
    )  # fmt: skip
    assert tuple(comp_header) == COMPONENTS_HEADER == (
        "site_id", "component", "device_id", "model", "installed_on", "links", "report_interval_s",
    )  # fmt: skip
    assert tuple(cyl_header) == CYLINDERS_HEADER == (
        "site_id", "cylinder_id", "capacity_kg", "next_inspection_due",
    )  # fmt: skip

    assert len(sites) == 70
    site_ids = {s["site_id"] for s in sites}
    assert len(site_ids) == 70
    for site in sites:
        assert (site["site_type"], site["kit"]) in {
            ("restaurant", "four_piece"),
            ("household", "two_piece"),
        }
        assert re.fullmatch(r"13[789]\d{8}", site["contact_phone"])
        assert site["contact_lang"] in {"zh", "en"}
        assert re.search(r"[\u4e00-\u9fff]", site["name"] + site["address"])

    devices = {c["device_id"]: c for c in components if c["device_id"]}
    assert len(devices) == sum(1 for c in components if c["device_id"])  # ids are unique
    for c in components:
        assert c["site_id"] in site_ids
        date.fromisoformat(c["installed_on"])
        if c["device_id"]:
            assert re.fullmatch(r"[0-9a-f]{8}|mq-[a-z]+-\d+-[a-z]+", c["device_id"])
            assert c["report_interval_s"] in {"60", "600"}
        else:
            assert c["component"] in {
                "metal_hose", "overflow_regulator", "self_closing_regulator",
                "flame_failure_cooker",
            }  # fmt: skip
            assert c["links"] == ""
            assert c["report_interval_s"] == ""
        for target in c["links"].split():
            linked = devices[target]
            assert linked["site_id"] == c["site_id"]
            expected = {"shutoff_valve": "leak_detector", "smart_regulator": "shutoff_valve"}
            assert linked["component"] == expected[c["component"]]
    for site in sites:
        parts = [c["component"] for c in components if c["site_id"] == site["site_id"]]
        assert "leak_detector" in parts
        if site["kit"] == "four_piece":
            assert "shutoff_valve" in parts
            valve = next(
                c
                for c in components
                if c["site_id"] == site["site_id"] and c["component"] == "shutoff_valve"
            )
            assert valve["links"]  # a restaurant valve always closes for its detector
        else:
            assert "self_closing_regulator" in parts
    assert any(d.startswith("mq-rest-") for d in devices)
    assert all(c["site_id"] in site_ids for c in cylinders)
    for c in cylinders:
        date.fromisoformat(c["next_inspection_due"])
        assert int(c["capacity_kg"]) > 0

    again = tmp_path / "again"
    District.generate(restaurants=20, households=50, seed=1).write_registry(again)
    for name in ("sites.csv", "components.csv", "cylinders.csv"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()
    other = tmp_path / "other"
    District.generate(restaurants=20, households=50, seed=2).write_registry(other)
    assert (other / "sites.csv").read_bytes() != (tmp_path / "sites.csv").read_bytes()


async def test_district_attach_fills_receivers_site_by_site(tmp_path: Path) -> None:
    district = District.generate(restaurants=20, households=50, seed=1)
    needed = district.receivers_needed()
    assert needed >= 2  # more radio devices than one receiver's 64
    receivers = [SimReceiver(PtyPort(tmp_path / f"tty{n}")) for n in range(needed)]
    with pytest.raises(ValueError, match="receivers"):
        district.attach(*receivers[:-1])
    receivers = [SimReceiver(PtyPort(tmp_path / f"tty{n}")) for n in range(needed)]
    district.attach(*receivers)
    attached = [d.device_id for r in receivers for d in r.devices]
    assert sorted(attached) == sorted(d.device_id for d in district.radio_devices)
    assert all(len(r.devices) <= 64 for r in receivers)


# --- MQTT-native device -----------------------------------------------------------------------


async def test_mqtt_device_reports_and_answers_commands(mosquitto: Mosquitto) -> None:
    ident = "mq-test-01-valve"
    valve = SimValve(0, close_time_s=0.05, interval_s=3600)  # no periodic report in the test
    device = MqttDevice(mosquitto.url, ident, ksp.DeviceKind.VALVE, model=valve)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-gateway") as gw:
        await gw.subscribe(f"kit/v1/{ident}/#", qos=1)
        await device.start()
        try:
            got: dict[str, list[bytes]] = {}

            async def wait_for(topic: str, count: int = 1) -> list[bytes]:
                async with asyncio.timeout(WAIT):
                    async for message in gw.messages:
                        got.setdefault(message.topic.value, []).append(bytes(message.payload))
                        if len(got.get(topic, [])) >= count:
                            return got[topic]
                raise AssertionError("unreachable")

            await wait_for(device_availability_topic(ident))
            assert got[device_availability_topic(ident)] == [b"online"]
            first = decode(KitReport, (await wait_for(report_topic(ident)))[0], "report")
            assert (first.kind, first.event, first.seq) == ("valve", "power_on", 0)

            await gw.publish(
                cmd_topic(ident), json.dumps({"id": "c-1", "cmd": "close_valve"}), qos=1
            )
            ack = decode(CmdAckMessage, (await wait_for(cmd_ack_topic(ident)))[0], "ack")
            assert ack == CmdAckMessage(id="c-1", result=ksp.CmdResult.OK)
            for payload in await wait_for(report_topic(ident), 3):
                report = decode(KitReport, payload, "report")
            assert report.valve is not None
            assert (report.valve.state, report.valve.cause) == ("closed", "remote_command")
            assert [decode(KitReport, p, "r").seq for p in got[report_topic(ident)]] == [0, 1, 2]

            await gw.publish(cmd_topic(ident), json.dumps({"id": "c-2", "cmd": "open"}), qos=1)
            await gw.publish(cmd_topic(ident), json.dumps({"id": "c-3", "cmd": "silence"}), qos=1)
            acks = await wait_for(cmd_ack_topic(ident), 3)
            assert [decode(CmdAckMessage, a, "ack") for a in acks[1:]] == [
                CmdAckMessage(id="c-2", result=ksp.CmdResult.REJECTED),
                CmdAckMessage(id="c-3", result=ksp.CmdResult.REJECTED),  # a valve has no buzzer
            ]
            assert valve.state is ksp.ValveState.CLOSED
        finally:
            await device.stop()
        await wait_for(device_availability_topic(ident), 2)
        assert got[device_availability_topic(ident)][-1] == b"offline"
    assert device.stats.bad_commands == {"invalid": 1}


# --- CLI --------------------------------------------------------------------------------------


def test_cli_runs_until_ctrl_c_and_exits_cleanly(tmp_path: Path) -> None:
    link = tmp_path / "ttyKIT0"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gasgate")), "simulate", "--pty-link", str(link),
         "--restaurants", "2", "--households", "3", "--time-scale", "0.01",
         "--registry-out", str(tmp_path / "reg"), "--scenario", "leak"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("running"):
                break
        assert link.is_symlink()
        assert any(str(link) in line and "/dev/pts/" in line for line in lines)
        assert (tmp_path / "reg" / "components.csv").exists()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not link.exists()


def test_district_registry_passes_the_registry_check(tmp_path: Path) -> None:
    District.generate(restaurants=20, households=50, seed=3).write_registry(tmp_path)
    result = CliRunner().invoke(registry, ["check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 warnings" in result.output
    assert "70 sites" in result.output


async def test_pty_port_never_replaces_a_real_file(tmp_path: Path) -> None:
    target = tmp_path / "ttyUSB0"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        await PtyPort(target).start()
    assert target.read_bytes() == b"keep"


async def test_mqtt_device_keeps_reports_while_the_broker_is_away(own_mosquitto: Mosquitto) -> None:
    ident = "mq-test-02-det"
    device = MqttDevice(own_mosquitto.url, ident, ksp.DeviceKind.DETECTOR, reconnect_s=0.2)
    detector = device.model
    assert isinstance(detector, SimDetector)
    await device.start()
    try:
        async with asyncio.timeout(WAIT):
            await device.online.wait()
        await eventually(lambda: device.stats.reports_published == 1)  # power_on
        own_mosquitto.stop()
        await eventually(lambda: not device.online.is_set())
        detector.set_lel(40.0)  # the alarm happens while the broker is down
        own_mosquitto.start()
        await eventually(lambda: device.stats.reports_published == 2)
        assert device.stats.connections == 2
        assert device.stats.reports_lost == 0
        async with aiomqtt.Client("127.0.0.1", own_mosquitto.port, identifier="t") as gw:
            await gw.subscribe(device_availability_topic(ident), qos=1)
            async with asyncio.timeout(WAIT):
                message = await anext(aiter(gw.messages))
            assert message.payload == b"online"  # retained, re-published on reconnect
    finally:
        await device.stop()


async def test_receiver_runs_on_a_serial_device(tmp_path: Path) -> None:
    # A pty slave stands in for /dev/ttyUSB0: pyserial opens it like any serial device.
    master, slave = os.openpty()
    port = SerialPort(os.ttyname(slave), 9600)
    receiver = SimReceiver(port)
    receiver.add(SimValve(VALVE_ID))
    end = GatewayEnd(tmp_path, auto_ack=True)
    end.fd = master
    os.set_blocking(master, False)
    asyncio.get_running_loop().add_reader(master, end._on_readable)
    await port.start()
    await receiver.start()
    try:
        _, heartbeat = await end.expect(lambda m: isinstance(m, ksp.Heartbeat))
        end.send(ksp.Command(VALVE_ID, ksp.CommandCode.QUERY))
        await end.expect(lambda m: isinstance(m, ksp.CmdAck))
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
    finally:
        await receiver.stop()
        await port.stop()
        end.close()
        os.close(slave)
    assert heartbeat == ksp.Heartbeat(0, 1, 0x0102)
    assert receiver.stats.acks_received == 2  # power_on and the query's report


async def test_paced_pty_sends_at_the_line_rate_and_drops_beyond_its_buffer(
    tmp_path: Path,
) -> None:
    port = PtyPort(tmp_path / "ttyKIT0", baud=9600)  # 960 bytes a second
    await port.start()
    end = GatewayEnd(port.link_path, auto_ack=False)
    end.open()
    loop = asyncio.get_running_loop()
    try:
        frame = ksp.encode(1, ksp.Ping())  # 8 bytes
        started = loop.time()
        for _ in range(60):  # 480 bytes: half a second at 9600 baud
            port.write(frame)
        await eventually(lambda: len(end.seen) == 60)
        elapsed = loop.time() - started
        port.write(bytes(5000))  # more than the transmit buffer holds
    finally:
        end.close()
        await port.stop()
    assert elapsed >= 0.45
    assert port.bytes_dropped == 5000


def test_cli_runs_one_receiver_per_64_devices_unless_told_otherwise(tmp_path: Path) -> None:
    link = tmp_path / "ttyKIT0"
    base = ["--pty-link", str(link), "--duration", "0.2"]
    result = CliRunner().invoke(simulate, base)
    assert result.exit_code == 0, result.output
    receivers = [line for line in result.output.splitlines() if line.startswith("receiver:")]
    assert len(receivers) == 2
    assert f"{link}.2 -> /dev/pts/" in receivers[1]

    result = CliRunner().invoke(simulate, [*base, "--capacity", "255"])
    assert result.exit_code == 0, result.output
    assert "receiver: 102 radio devices" in result.output

    result = CliRunner().invoke(simulate, ["--serial", str(tmp_path / "ttyUSB9")])
    assert result.exit_code == 2
    assert "need 2 receivers" in result.output


async def test_serial_device_that_goes_away_stops_being_read(tmp_path: Path) -> None:
    master, slave = os.openpty()
    port = SerialPort(os.ttyname(slave))
    await port.start()
    try:
        os.close(slave)
        os.close(master)  # the adapter is gone: reads fail with EIO for ever
        loop = asyncio.get_running_loop()
        fd = port._fd
        assert fd is not None
        await asyncio.sleep(0.2)
        assert not loop.remove_reader(fd)  # no longer watched, so the loop cannot spin on it
        port.write(b"\xa5\x5a")
        assert port.bytes_dropped == 2
    finally:
        await port.stop()


async def test_no_command_ever_opens_a_closed_valve() -> None:
    valve = SimValve(VALVE_ID, close_time_s=0.01)
    states: list[ksp.ValveState] = []
    valve.connect(lambda d, _e: states.append(d.body().state))  # type: ignore[union-attr]
    valve.close(ksp.ValveCause.LINKED_ALARM)
    await eventually(lambda: valve.state is ksp.ValveState.CLOSED)
    for _ in range(3):
        for code in ksp.CommandCode:
            if valve.accepts(code):
                valve.execute(code)
            await asyncio.sleep(0.02)
    assert states[-1] is ksp.ValveState.CLOSED
    assert ksp.ValveState.OPEN not in states
    assert valve.cause is ksp.ValveCause.LINKED_ALARM


async def test_named_scenarios_play_on_a_running_district(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    district = District.generate(restaurants=6, households=6, seed=4, time_scale=0.001)
    port = PtyPort(tmp_path / "ttyKIT0")
    sim = Simulation(district, [port], mqtt_url=mosquitto.url, capacity=255)
    names = ["leak", "stuck-valve", "overflow", "low-battery", "silent", "noise", "lost-acks"]
    await sim.start()
    end = GatewayEnd(port.link_path, auto_ack=True)
    end.open()
    try:
        story = scenario_story(sim, names, start_s=0.0, gap_s=100.0)  # 0.1 s apart
        async with asyncio.timeout(WAIT):
            await story.run()
        receiver = sim.first_receiver()
        leak_site, stuck_site = sim.restaurant(0), sim.restaurant(1)
        assert leak_site is not stuck_site
        await eventually(lambda: leak_site.valve is not None and leak_site.valve.state == "closed")
        assert ksp.DetectorFlag.ALARM_LOW in leak_site.detector.flags
        assert ksp.DetectorFlag.ALARM_HIGH in stuck_site.detector.flags
        assert stuck_site.valve is not None
        await eventually(lambda: stuck_site.valve is not None and stuck_site.valve.state == "open")
        tripped = sim.restaurant(-1, with_regulator=True).regulator
        assert tripped is not None
        assert ksp.RegulatorFlag.OVERFLOW_TRIPPED in tripped.flags
        assert ksp.DetectorFlag.LOW_BATTERY in sim.household().detector.flags
        assert sim.household(radio=True).detector.silent
        assert receiver.stats.noise_bytes == 64
        await eventually(lambda: receiver.stats.acks_ignored == 3)
        assert story.done == [f"{n}: {SCENARIOS[n][0]}" for n in names]
        assert any(d.stats.reports_published for d in sim.mqtt_devices)
    finally:
        end.close()
        await sim.stop()


def test_registry_intervals_follow_the_district_time_scale(tmp_path: Path) -> None:
    # The gateway detects "offline" from the registry's intervals: they must be the ones the
    # simulated devices keep, or a scaled demo would wait 3 real minutes for a silent detector.
    district = District.generate(2, 2, seed=3, time_scale=0.1)
    district.write_registry(tmp_path)
    with (tmp_path / "components.csv").open(encoding="utf-8") as f:
        rows = {row["device_id"]: row["report_interval_s"] for row in csv.DictReader(f)}
    for site in district.sites:
        for ident, device in site.devices.items():
            assert rows[ident] == str(round(device.interval_s * 0.1)), ident
    assert {rows[""]} == {""}  # passive parts never report
