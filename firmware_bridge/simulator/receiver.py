"""A simulated KSP/1 receiver: the radio concentrator the serial bridge talks to.

It behaves as KSP/1 says (docs/ksp.md): HEARTBEAT every
``heartbeat_s`` and on PING; each REPORT / PAIRING retransmitted with the same SEQ every
``retransmit_s`` until ACKed, at most ``max_retransmits`` times; COMMANDs answered with CMD_ACK
and carried out on the device. Fault knobs make it misbehave the way a real line does.

Every byte goes through :mod:`firmware_bridge.ksp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter
from dataclasses import dataclass, field

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDevice
from firmware_bridge.simulator.port import SimPort

__all__ = ["CAPACITY", "ReceivedCommand", "ReceiverStats", "SimReceiver"]

log = logging.getLogger(__name__)

CAPACITY = 64  # KSP/1: a receiver holds up to 64 paired devices
_IDLE_S = 0.05  # a quiet line for this long abandons a partial frame (ksp.Decoder.line_idle)
_COMMAND = struct.Struct(">IB")


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A COMMAND the gateway sent, with the SEQ of its frame."""

    seq: int
    command: ksp.Command


@dataclass(slots=True)
class ReceiverStats:
    reports_sent: int = 0  # first transmissions of REPORT frames
    pairings_sent: int = 0
    retransmits: int = 0
    gave_up: int = 0  # REPORT / PAIRING frames never ACKed, even after every retransmission
    acks_received: int = 0
    acks_ignored: int = 0  # dropped on purpose by drop_next_acks()
    acks_unmatched: int = 0  # ACK for a SEQ that is not outstanding (late or duplicate)
    heartbeats: int = 0
    pings: int = 0
    cmd_acks: int = 0
    commands: list[ReceivedCommand] = field(default_factory=list)
    commands_rejected: int = 0  # COMMAND frames with a command code KSP/1 does not have
    frames_corrupted: int = 0
    noise_bytes: int = 0
    bad_frames: Counter[str] = field(default_factory=Counter)  # gateway frames that did not parse


@dataclass(slots=True)
class _Pending:
    frame: bytes
    task: asyncio.Task[None] | None = None


class SimReceiver:
    """A KSP/1 receiver with paired devices on ``port`` (a :class:`PtyPort` or serial device)."""

    def __init__(
        self,
        port: SimPort,
        *,
        heartbeat_s: float = 30.0,
        retransmit_s: float = 0.5,
        max_retransmits: int = 3,
        fw_version: int = 0x0102,
        capacity: int = CAPACITY,
    ) -> None:
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.retransmit_s = retransmit_s
        self.max_retransmits = max_retransmits
        self.fw_version = fw_version
        self.capacity = capacity
        self.stats = ReceiverStats()
        self.decoder = ksp.Decoder()
        self._devices: dict[int, SimDevice] = {}
        self._pending: dict[int, _Pending] = {}
        self._settled = asyncio.Event()
        self._settled.set()
        self._seq = 0
        self._drop_acks = 0
        self._corrupt = 0
        self._heartbeat_muted = False
        self._gateway_silent = False  # frames are being given up; warned once
        self._started_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="receiver-read"),
            asyncio.create_task(self._heartbeat_loop(), name="receiver-heartbeat"),
        ]
        self._heartbeat()  # first on the line after power-on, before any device reports
        for device in self._devices.values():
            await device.start()

    async def stop(self) -> None:
        for device in self._devices.values():
            await device.stop()
        tasks = [*self._tasks, *self._starting, *(p.task for p in self._pending.values() if p.task)]
        self._tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()
        self._settled.set()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    # --- devices --------------------------------------------------------------------------

    @property
    def devices(self) -> list[SimDevice]:
        return list(self._devices.values())

    def device(self, device_id: int) -> SimDevice:
        return self._devices[device_id]

    def add(self, device: SimDevice) -> None:
        """A device already paired (before the bridge connected): no PAIRING frame."""
        if device.device_id in self._devices:
            raise ValueError(f"device {device.id_hex} is already paired")
        if len(self._devices) >= self.capacity:
            raise ValueError(f"receiver is full: {self.capacity} devices paired")
        self._devices[device.device_id] = device
        device.connect(self.send_report)
        if self.running:
            task = asyncio.get_running_loop().create_task(device.start())
            self._starting.add(task)  # keep a reference until it has run
            task.add_done_callback(self._starting.discard)

    def pair(self, device: SimDevice) -> None:
        """Pair a device now: a PAIRING frame (acknowledged like a report)."""
        self.add(device)
        if self._send_acknowledged(ksp.Pairing(device.device_id, device.kind, paired=True)):
            self.stats.pairings_sent += 1

    async def unpair(self, device_id: int) -> None:
        """Remove a device: it stops reporting; a PAIRING frame with paired=0."""
        device = self._devices.pop(device_id)
        device.disconnect(self.send_report)
        await device.stop()
        if self._send_acknowledged(ksp.Pairing(device_id, device.kind, paired=False)):
            self.stats.pairings_sent += 1

    def send_report(self, device: SimDevice, event: ksp.Event) -> None:
        """A REPORT for ``device`` from its current state, retransmitted until ACKed."""
        if not device.silent and self._send_acknowledged(device.report(event)):
            self.stats.reports_sent += 1

    # --- fault knobs ----------------------------------------------------------------------

    def inject_noise(self, data: bytes) -> None:
        """Raw bytes on the line, outside any frame (radio wake-ups, RS-485 turn-around)."""
        self.stats.noise_bytes += len(data)
        self.port.write(data)

    def drop_next_acks(self, n: int) -> None:
        """Ignore the next ``n`` ACKs: the frames they acknowledge are retransmitted."""
        self._drop_acks += n

    def corrupt_next_frames(self, n: int) -> None:
        """Send the next ``n`` frames (any type, retransmissions included) with a bad CRC."""
        self._corrupt += n

    def silence(self, device_id: int) -> None:
        """The device stops reporting (battery dead, out of radio range)."""
        self._devices[device_id].silent = True

    def resume(self, device_id: int) -> None:
        self._devices[device_id].silent = False

    def mute_heartbeat(self, on: bool) -> None:
        self._heartbeat_muted = on

    async def all_acked(self) -> None:
        """Until no sent REPORT / PAIRING awaits its ACK; bound it with ``asyncio.timeout``.

        A frame given up after its retransmissions also ends the wait: see ``stats.gave_up``.
        """
        await self._settled.wait()

    @property
    def unacked(self) -> int:
        return len(self._pending)

    # --- sending --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        return seq

    def _write(self, frame: bytes) -> None:
        if self._corrupt > 0:
            self._corrupt -= 1
            self.stats.frames_corrupted += 1
            frame = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
        self.port.write(frame)

    def _send(self, message: ksp.Message) -> None:
        """A frame that is not acknowledged (HEARTBEAT, CMD_ACK): sent once."""
        self._write(ksp.encode(self._next_seq(), message))

    def _send_acknowledged(self, message: ksp.Report | ksp.Pairing) -> bool:
        """Send and keep retransmitting until ACKed; False if the receiver is off."""
        if not self.running:
            log.debug("receiver is off: %s not sent", message)
            return False
        seq = self._next_seq()
        old = self._pending.pop(seq, None)
        if old is not None and old.task is not None:  # 256 frames in flight: the oldest is lost
            old.task.cancel()
            self.stats.gave_up += 1
        frame = ksp.encode(seq, message)
        pending = _Pending(frame)
        self._pending[seq] = pending
        self._settled.clear()
        self._write(frame)
        pending.task = asyncio.get_running_loop().create_task(self._retransmit(seq, pending))
        return True

    async def _retransmit(self, seq: int, pending: _Pending) -> None:
        for _ in range(self.max_retransmits):
            await asyncio.sleep(self.retransmit_s)
            self._write(pending.frame)
            self.stats.retransmits += 1
        await asyncio.sleep(self.retransmit_s)
        # Warn once per silence of the gateway, not once per frame (no bridge: every frame).
        level = logging.DEBUG if self._gateway_silent else logging.WARNING
        log.log(
            level, "frame seq %d never acknowledged after %d retries", seq, self.max_retransmits
        )
        self._gateway_silent = True
        self.stats.gave_up += 1
        self._forget(seq, pending)

    def _forget(self, seq: int, pending: _Pending) -> None:
        if self._pending.get(seq) is pending:
            del self._pending[seq]
        if not self._pending:
            self._settled.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._heartbeat()

    def _heartbeat(self) -> None:
        if self._heartbeat_muted:
            return
        uptime = int(asyncio.get_running_loop().time() - self._started_at)
        self._send(ksp.Heartbeat(uptime, len(self._devices), self.fw_version))
        self.stats.heartbeats += 1

    # --- receiving ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_IDLE_S if self.decoder.pending else None):
                    chunk = await self.port.read()
            except TimeoutError:
                frames = self.decoder.line_idle()
            else:
                frames = self.decoder.feed(chunk)
            for frame in frames:
                self._on_frame(frame)

    def _on_frame(self, frame: ksp.Frame) -> None:
        try:
            message = ksp.parse(frame)
        except ksp.KspError as exc:
            if frame.type == ksp.FrameType.COMMAND and exc.reason == "bad_command":
                self._reject_command(frame)
                return
            self.stats.bad_frames[exc.reason] += 1
            log.warning("gateway frame seq %d dropped: %s (%s)", frame.seq, exc, exc.reason)
            return
        match message:
            case ksp.Ack():
                self._on_ack(message.acked_seq)
            case ksp.Command():
                self._on_command(frame.seq, message)
            case ksp.Ping():
                self.stats.pings += 1
                self._heartbeat()
            case _:
                self.stats.bad_frames["not_for_receiver"] += 1
                log.warning("frame type 0x%02x is not one a gateway sends", frame.type)

    def _on_ack(self, acked_seq: int) -> None:
        if self._drop_acks > 0:
            self._drop_acks -= 1
            self.stats.acks_ignored += 1
            return
        pending = self._pending.get(acked_seq)
        if pending is None:
            self.stats.acks_unmatched += 1
            return
        self.stats.acks_received += 1
        self._gateway_silent = False
        if pending.task is not None:
            pending.task.cancel()
        self._forget(acked_seq, pending)

    def _on_command(self, seq: int, command: ksp.Command) -> None:
        self.stats.commands.append(ReceivedCommand(seq, command))
        device = self._devices.get(command.device_id)
        if device is None:
            result = ksp.CmdResult.UNKNOWN_DEVICE
        elif device.silent:
            result = ksp.CmdResult.UNREACHABLE
        elif not device.accepts(command.command):
            result = ksp.CmdResult.REJECTED
        else:
            result = ksp.CmdResult.OK
        self._send(ksp.CmdAck(seq, command.device_id, result))
        self.stats.cmd_acks += 1
        # The device acts after the CMD_ACK, so its own REPORT follows it on the wire.
        if device is not None and result is ksp.CmdResult.OK:
            device.execute(command.command)

    def _reject_command(self, frame: ksp.Frame) -> None:
        self.stats.commands_rejected += 1
        device_id, _ = _COMMAND.unpack(frame.payload)  # it parsed up to the command code
        log.warning("command frame seq %d has a code KSP/1 does not define: rejected", frame.seq)
        self._send(ksp.CmdAck(frame.seq, device_id, ksp.CmdResult.REJECTED))
        self.stats.cmd_acks += 1
