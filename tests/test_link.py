"""SerialLink over a real pty, against a raw peer that writes and reads exact KSP/1 bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware_bridge import ksp
from firmware_bridge.link import (
    LinkConfig,
    LinkEvent,
    PairingReceived,
    ReceiverState,
    ReportReceived,
    SerialLink,
)
from gateway.clock import Clock, ManualClock
from tests.support.ksp_peer import RawPeer
from tests.test_ksp import VECTORS

VALVE = 0x00C0FFEE
DETECTOR = 0x1A2B3C4D


def vector(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


@dataclass
class Sink:
    """The link's consumer: keeps every event; ``accept`` False refuses reports."""

    events: list[LinkEvent] = field(default_factory=list)
    accept: bool = True
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: LinkEvent) -> bool:
        self.events.append(event)
        self.arrived.set()
        return self.accept

    def reports(self) -> list[ksp.Report]:
        return [e.report for e in self.events if isinstance(e, ReportReceived)]

    def receiver(self) -> list[ReceiverState]:
        return [e for e in self.events if isinstance(e, ReceiverState)]

    def online(self) -> list[bool]:
        return [e.online for e in self.receiver()]

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Rig:
    peer: RawPeer
    sink: Sink
    link: SerialLink

    async def connected(self) -> None:
        """The link opened the port: its first frame is a PING."""
        _, message = await self.peer.next_message()
        assert message == ksp.Ping()

    def online(self) -> bool | None:
        """The receiver as the link knows it; None: not known yet."""
        return None if self.link.receiver is None else self.link.receiver.online


@contextlib.asynccontextmanager
async def make_rig(
    tmp_path: Path, clock: Clock | None = None, **config: float
) -> AsyncIterator[Rig]:
    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    sink = Sink()
    link = SerialLink(LinkConfig(str(peer.path), **config), sink, clock)  # type: ignore[arg-type]
    await link.start()
    try:
        yield Rig(peer, sink, link)
    finally:
        await link.stop()
        peer.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path, cmd_timeout_s=0.5) as r:
        yield r


async def test_spec_vectors_through_the_link_exact_bytes(rig: Rig) -> None:
    await rig.connected()  # PING took gateway seq 0
    rig.peer.write(vector("detector alarm"))  # receiver seq 0x11
    frame = await rig.peer.next_frame()
    # The spec's own vector: ACK of receiver seq 0x11 with gateway seq 0x01.
    assert ksp.encode(frame.seq, ksp.parse(frame)) == vector("gateway ack")
    for name in ("detector periodic", "valve closed", "regulator trip"):
        rig.peer.write(vector(name))
        _, ack = await rig.peer.next_message()
        assert ack == ksp.Ack(ksp.Decoder().feed(vector(name))[0].seq)
    rig.peer.write(vector("heartbeat"))
    await rig.sink.wait_for(lambda: rig.online() is True)

    assert [(r.device_id, r.kind, r.event) for r in rig.sink.reports()] == [
        (DETECTOR, ksp.DeviceKind.DETECTOR, ksp.Event.ALARM),
        (DETECTOR, ksp.DeviceKind.DETECTOR, ksp.Event.PERIODIC),
        (VALVE, ksp.DeviceKind.VALVE, ksp.Event.STATE_CHANGE),
        (0x0BADF00D, ksp.DeviceKind.REGULATOR, ksp.Event.ALARM),
    ]
    alarm = rig.sink.reports()[0]
    assert alarm.body == ksp.DetectorBody(
        315, frozenset({ksp.DetectorFlag.ALARM_LOW, ksp.DetectorFlag.ALARM_HIGH}), 25
    )
    status = rig.link.receiver
    assert status is not None
    assert (status.online, status.uptime_s, status.paired_count, status.fw_version) == (
        True,
        86400,
        12,
        "1.2",
    )
    assert rig.sink.online() == [True]  # nothing before the receiver was heard
    # Two more ACKs (seq 5, 6) bring the gateway seq to 7: the spec's COMMAND vector.
    rig.peer.send(0x20, ksp.Pairing(VALVE, ksp.DeviceKind.VALVE, paired=True))
    rig.peer.send(0x21, ksp.Pairing(DETECTOR, ksp.DeviceKind.DETECTOR, paired=True))
    assert [(await rig.peer.next_message())[1] for _ in range(2)] == [ksp.Ack(0x20), ksp.Ack(0x21)]
    command = asyncio.create_task(rig.link.send_command(VALVE, ksp.CommandCode.CLOSE_VALVE))
    frame = await rig.peer.next_frame()
    assert ksp.encode(frame.seq, ksp.parse(frame)) == vector("close valve")
    rig.peer.write(vector("cmd ack"))
    assert await command == ksp.CmdResult.OK
    assert rig.link.counters.frames == {"REPORT": 4, "HEARTBEAT": 1, "PAIRING": 2, "CMD_ACK": 1}
    assert rig.link.counters.acks_sent == 6


async def test_retransmits_are_acked_every_time_and_delivered_once(rig: Rig) -> None:
    await rig.connected()
    for _ in range(4):  # the first send and its 3 retransmissions, same SEQ
        rig.peer.write(vector("valve closed"))
        assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
    assert len(rig.sink.reports()) == 1
    assert rig.link.counters.duplicates == 3
    # Same payload, new SEQ: a new report, not a duplicate.
    rig.peer.send(0x13, ksp.parse(ksp.Decoder().feed(vector("valve closed"))[0]))
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x13)
    assert len(rig.sink.reports()) == 2


async def test_dedupe_window_expires(tmp_path: Path) -> None:
    clock = ManualClock()
    async with make_rig(tmp_path, clock) as rig:
        await rig.connected()
        rig.peer.write(vector("valve closed"))
        await rig.peer.next_message()
        clock.advance(2.9)
        rig.peer.write(vector("valve closed"))
        await rig.peer.next_message()
        assert len(rig.sink.reports()) == 1
        clock.advance(0.2)  # 3.1 s after the first: a (SEQ, payload) seen again is new
        rig.peer.write(vector("valve closed"))
        await rig.peer.next_message()
        assert len(rig.sink.reports()) == 2


async def test_noise_and_bad_crc_between_frames(rig: Rig) -> None:
    await rig.connected()
    bad_crc = bytearray(vector("detector periodic"))
    bad_crc[-1] ^= 0xFF
    rig.peer.write(b"\x00\xff\x13" + bytes(bad_crc) + b"\xa5\x00" + vector("valve closed") + b"zz")
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)  # the bad-CRC frame is not ACKed
    await rig.peer.expect_quiet(0.3)
    assert [r.device_id for r in rig.sink.reports()] == [VALVE]
    drops = rig.link.counters.drops
    assert drops["bad_crc"] == 1
    assert drops["noise"] >= 5


async def test_a_partial_frame_is_abandoned_when_the_line_goes_idle(rig: Rig) -> None:
    await rig.connected()
    cut = vector("detector alarm")[:12]  # the rest never comes
    rig.peer.write(cut)
    await asyncio.sleep(0.2)  # > the 50 ms idle gap
    rig.peer.write(vector("valve closed"))
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
    assert [r.device_id for r in rig.sink.reports()] == [VALVE]
    assert rig.link.counters.drops["truncated"] == 1


async def test_unparsable_report_is_acked_counted_and_not_delivered(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.connected()
    payload = bytearray(ksp.Decoder().feed(vector("detector periodic"))[0].payload)
    payload[4] = 9  # device kind 9 does not exist
    rig.peer.write(b"\x00\x01\x02" + ksp.encode_frame(ksp.FrameType.REPORT, 0x40, bytes(payload)))
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x40)
    assert rig.sink.reports() == []
    assert rig.link.counters.parse_errors == {"bad_kind": 1}
    [logged] = [r.getMessage() for r in caplog.records if "does not parse" in r.getMessage()]
    assert "seq 64 at offset 3" in logged  # after the 3 noise bytes


async def test_a_refused_report_is_not_acked_and_its_retransmission_is_delivered(
    rig: Rig,
) -> None:
    await rig.connected()
    rig.sink.accept = False
    rig.peer.write(vector("valve closed"))
    await rig.peer.expect_quiet(0.5)
    assert rig.link.counters.refused == 1
    rig.sink.accept = True
    rig.peer.write(vector("valve closed"))  # the retransmission
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
    assert rig.link.counters.duplicates == 0
    assert len(rig.sink.reports()) == 2  # offered twice, accepted once


async def test_command_without_cmd_ack_is_resent_once_then_unreachable(rig: Rig) -> None:
    await rig.connected()
    result = asyncio.create_task(rig.link.send_command(VALVE, ksp.CommandCode.QUERY))
    seqs = []
    for _ in range(2):
        seq, message = await rig.peer.next_message()
        assert message == ksp.Command(VALVE, ksp.CommandCode.QUERY)
        seqs.append(seq)
    assert seqs[0] != seqs[1]  # the resend has a new SEQ
    assert await result == ksp.CmdResult.UNREACHABLE
    await rig.peer.expect_quiet(0.3)  # exactly one resend
    assert rig.link.counters.commands == {"unreachable": 1}


async def test_cmd_ack_must_match_seq_and_device(rig: Rig) -> None:
    await rig.connected()
    result = asyncio.create_task(rig.link.send_command(VALVE, ksp.CommandCode.SILENCE))
    seq, _ = await rig.peer.next_message()
    rig.peer.send(0x50, ksp.CmdAck((seq + 1) & 0xFF, VALVE, ksp.CmdResult.OK))  # wrong seq
    rig.peer.send(0x51, ksp.CmdAck(seq, DETECTOR, ksp.CmdResult.OK))  # wrong device
    resend_seq, _ = await rig.peer.next_message()
    rig.peer.send(0x52, ksp.CmdAck(resend_seq, VALVE, ksp.CmdResult.BUSY))
    assert await result == ksp.CmdResult.BUSY
    assert rig.link.counters.unmatched_cmd_acks == 2


async def test_commands_to_one_device_run_one_at_a_time(rig: Rig) -> None:
    await rig.connected()
    first = asyncio.create_task(rig.link.send_command(VALVE, ksp.CommandCode.CLOSE_VALVE))
    second = asyncio.create_task(rig.link.send_command(VALVE, ksp.CommandCode.QUERY))
    seq, message = await rig.peer.next_message()
    assert message == ksp.Command(VALVE, ksp.CommandCode.CLOSE_VALVE)
    await rig.peer.expect_quiet(0.2)  # the query waits for the close to finish
    rig.peer.send(0x60, ksp.CmdAck(seq, VALVE, ksp.CmdResult.OK))
    seq, message = await rig.peer.next_message()
    assert message == ksp.Command(VALVE, ksp.CommandCode.QUERY)
    rig.peer.send(0x61, ksp.CmdAck(seq, VALVE, ksp.CmdResult.OK))
    assert (await first, await second) == (ksp.CmdResult.OK, ksp.CmdResult.OK)


async def test_open_can_never_reach_the_wire(rig: Rig) -> None:
    await rig.connected()
    with pytest.raises(ValueError, match="open"):
        await rig.link.send_command(VALVE, "open")  # type: ignore[arg-type]
    await rig.peer.expect_quiet(0.3)


async def test_port_lost_and_replugged_behind_the_same_path(rig: Rig) -> None:
    await rig.connected()
    rig.peer.write(vector("heartbeat"))
    await rig.sink.wait_for(lambda: rig.online() is True)
    rig.peer.unplug()  # the master closes: the slave reads EIO, like a pulled USB cable
    await rig.sink.wait_for(lambda: rig.online() is False)  # at once, not after the timeout
    assert rig.link.receiver is not None
    assert rig.link.receiver.paired_count == 12  # last known, kept for the status
    await asyncio.sleep(0.5)  # a few failed reopen attempts
    rig.peer.plug()
    await rig.connected()  # reopened by itself: a new PING
    rig.peer.write(vector("valve closed"))
    assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
    assert [r.device_id for r in rig.sink.reports()] == [VALVE]
    assert rig.link.counters.reconnects == 1


async def test_heartbeat_supervision(tmp_path: Path) -> None:
    clock = ManualClock()
    async with make_rig(tmp_path, clock, heartbeat_timeout_s=90) as rig:
        await rig.connected()
        rig.peer.write(vector("heartbeat"))
        await rig.sink.wait_for(lambda: rig.online() is True)
        clock.advance(89)
        assert rig.online() is True
        clock.advance(2)
        assert rig.online() is False
        rig.peer.write(vector("heartbeat"))
        await rig.sink.wait_for(lambda: rig.online() is True)
        assert rig.sink.online() == [True, False, True]
        assert all(isinstance(e, ReceiverState | PairingReceived) for e in rig.sink.events)


async def test_the_receiver_is_unknown_until_heard_or_the_start_up_deadline(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with make_rig(tmp_path, clock, heartbeat_timeout_s=90) as rig:
        await rig.connected()
        clock.advance(89)
        rig.peer.unplug()  # lost while unknown: still unknown, the deadline keeps running
        await rig.peer.expect_quiet(0.3)
        assert (rig.online(), rig.sink.events) == (None, [])
        rig.peer.plug()
        await rig.connected()
        clock.advance(2)  # 91 s after start() without a heartbeat: a dead receiver at boot
        assert rig.sink.online() == [False]
        assert rig.sink.receiver()[0].paired_count is None  # never heard: nothing to keep
        rig.peer.write(vector("heartbeat"))
        await rig.sink.wait_for(lambda: rig.online() is True)
        assert rig.sink.online() == [False, True]


async def test_a_heartbeat_before_the_start_up_deadline_is_the_only_state(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with make_rig(tmp_path, clock, heartbeat_timeout_s=90) as rig:
        await rig.connected()
        clock.advance(60)
        rig.peer.write(vector("heartbeat"))  # the answer to the PING
        await rig.sink.wait_for(lambda: rig.online() is True)
        clock.advance(89)  # 149 s after start, 89 s after the heartbeat: the old deadline is gone
        assert rig.sink.online() == [True]
        clock.advance(2)
        assert rig.sink.online() == [True, False]


async def test_a_failing_consumer_leaves_the_frame_unacked_and_the_link_running(
    tmp_path: Path,
) -> None:
    reports: list[LinkEvent] = []

    def broken(event: LinkEvent) -> bool:
        if isinstance(event, ReportReceived):
            reports.append(event)
            if len(reports) == 1:  # only the first offer fails
                raise RuntimeError("consumer bug")
        return True

    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    link = SerialLink(LinkConfig(str(peer.path)), broken)
    await link.start()
    try:
        assert (await peer.next_message())[1] == ksp.Ping()
        peer.write(vector("valve closed"))
        await peer.expect_quiet(0.3)
        peer.write(vector("valve closed"))  # the retransmission: accepted this time
        assert (await peer.next_message())[1] == ksp.Ack(0x12)
        assert link.counters.refused == 1
    finally:
        await link.stop()
        peer.close()


async def test_drop_warnings_are_rate_limited(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.connected()
    for _ in range(20):
        rig.peer.write(b"\x00\x01" + vector("valve closed"))
        assert (await rig.peer.next_message())[1] == ksp.Ack(0x12)
    assert rig.link.counters.drops["noise"] == 40
    noise_warnings = [r for r in caplog.records if "noise" in r.getMessage()]
    assert len(noise_warnings) == 1
    assert "at offset 0" in noise_warnings[0].getMessage()  # bytes the link has read
