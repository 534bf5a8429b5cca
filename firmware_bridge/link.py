"""The serial side of the firmware bridge: one KSP/1 receiver on one serial port.

:class:`SerialLink` opens the port (reopening it with backoff whenever it goes away), decodes
frames with :class:`firmware_bridge.ksp.Decoder`, acknowledges reports and pairings, drops
retransmitted duplicates, supervises the receiver's heartbeat and runs commands with CMD_ACK
matching. It knows nothing of MQTT.

Delivery: the link calls ``consumer(event)`` synchronously, in wire order, with a
:class:`ReportReceived`, :class:`PairingReceived` or :class:`ReceiverState`. For reports and
pairings the consumer returns whether it *accepted* the event (took ownership of it, e.g. queued
it); the link acknowledges the frame only after that, so an ACKed report is always in the
consumer's hands. A refused frame is not acknowledged: the receiver retransmits it. The return
value is ignored for :class:`ReceiverState`.

Choices (see docs/bridge.md):

* A REPORT/PAIRING whose (type, SEQ, payload) was delivered less than ``dedupe_window_s`` (3 s)
  ago is a retransmission: acknowledged again, delivered once. The receiver retransmits every
  500 ms at most 3 times, so 3 s covers them with margin while a seq wrap (256 frames) does not
  fit inside it.
* An intact REPORT/PAIRING whose payload does not parse is acknowledged (a retransmission
  carries the same bytes and cannot fix it), counted by reason and logged with its byte offset.
* The receiver's state starts *unknown* (``receiver`` is None, nothing delivered): the link
  cannot tell a receiver that is fine from one that is dead until it has listened. It becomes
  online on the first HEARTBEAT (the PING sent on every open asks for one) and offline only when
  it was online and heartbeats stop for ``heartbeat_timeout_s`` or the port is lost, when it has
  never answered within ``heartbeat_timeout_s`` of ``start()``, or when the link stops. A state
  invented at start-up would be a false alarm at every bridge restart.
* Timers that carry meaning (heartbeat supervision, command timeouts, the dedupe window) use the
  gateway :class:`~gateway.clock.Clock`; the line-idle gap and reopen backoff pace I/O and use the
  event loop directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import serial
import serial_asyncio_fast

from firmware_bridge import ksp
from gateway.clock import Clock, SystemClock, Timer

__all__ = [
    "Consumer",
    "LinkConfig",
    "LinkCounters",
    "LinkEvent",
    "PairingReceived",
    "ReceiverState",
    "ReportReceived",
    "SerialLink",
    "format_fw_version",
]

_log = logging.getLogger(__name__)

BAUD_RATES = (9600, 19200, 38400, 57600, 115200)
_LOG_EVERY_S = 10.0  # rate limit for drop and parse-error warnings, per reason


@dataclass(frozen=True, slots=True)
class LinkConfig:
    port: str
    baudrate: int = 115200
    heartbeat_timeout_s: float = 90.0  # 3 receiver heartbeat intervals (30 s)
    idle_gap_s: float = 0.05  # quiet line with bytes pending: abandon a partial frame
    dedupe_window_s: float = 3.0
    cmd_timeout_s: float = 2.0  # per attempt; one resend, so 2 x this before "unreachable"
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    max_waiting_commands: int = 8  # per device; more are answered "busy"


@dataclass(frozen=True, slots=True)
class ReportReceived:
    report: ksp.Report
    received_at: datetime  # gateway receive time: device clocks are not trusted


@dataclass(frozen=True, slots=True)
class PairingReceived:
    pairing: ksp.Pairing
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ReceiverState:
    """The receiver as the link sees it, once known; ``online`` False when heartbeats stop, the
    port is lost or it never answered. The other fields are the last heartbeat's (``uptime_s``
    only while online)."""

    online: bool
    changed_at: datetime
    uptime_s: int | None = None
    paired_count: int | None = None
    fw_version: str | None = None


LinkEvent = ReportReceived | PairingReceived | ReceiverState
Consumer = Callable[[LinkEvent], bool]


@dataclass
class LinkCounters:
    frames: Counter[str] = field(default_factory=Counter)  # intact frames by type name
    drops: Counter[str] = field(default_factory=Counter)  # decoder drops by reason (noise: bytes)
    parse_errors: Counter[str] = field(default_factory=Counter)  # intact, unparsable, by reason
    commands: Counter[str] = field(default_factory=Counter)  # send_command results
    duplicates: int = 0
    acks_sent: int = 0
    refused: int = 0  # reports/pairings the consumer could not take (left unacknowledged)
    reconnects: int = 0
    unmatched_cmd_acks: int = 0


def format_fw_version(raw: int) -> str:
    """KSP/1 firmware 0x0102 is "1.2"."""
    return f"{raw >> 8}.{raw & 0xFF}"


class _RateLimitedLog:
    """At most one warning per reason per interval; the suppressed count rides on the next."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, now: float, reason: str, message: str, *args: object) -> None:
        if now < self._next.get(reason, float("-inf")):
            self._suppressed[reason] += 1
            return
        self._next[reason] = now + self._interval
        suppressed = self._suppressed.pop(reason, 0)
        if suppressed:
            message, args = message + " (and %d more since the last report)", (*args, suppressed)
        _log.warning(message, *args)


class _PortProtocol(asyncio.Protocol):
    def __init__(self, on_bytes: Callable[[bytes], None]) -> None:
        self._on_bytes = on_bytes
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def _frame_offsets(start: int, frames: list[ksp.Frame], drops: list[ksp.Drop]) -> list[int]:
    """Stream offsets of ``frames``: the decoded span from ``start`` is exactly its drops and
    frames, in order, so each frame begins where the drops before it end."""
    pending = sorted((d for d in drops if d.offset >= start), key=lambda d: d.offset)
    offsets, pos, i = [], start, 0
    for frame in frames:
        while i < len(pending) and pending[i].offset == pos:
            pos += pending[i].length
            i += 1
        offsets.append(pos)
        pos += 8 + len(frame.payload)
    return offsets


class SerialLink:
    """One receiver on one serial port. ``start()`` returns at once; the port is opened (and
    reopened) in the background, never raising out of the link."""

    def __init__(self, config: LinkConfig, consumer: Consumer, clock: Clock | None = None) -> None:
        self.config = config
        self.counters = LinkCounters()
        self._consumer = consumer
        self._clock: Clock = clock or SystemClock()
        # One decoder for the link's life: offsets in logs count bytes since start.
        self._decoder = ksp.Decoder(max_drops_kept=1 << 16)
        self.counters.drops = self._decoder.counts
        self._fed = 0
        self._seq = 0
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._heartbeat_timer: Timer | None = None
        self._seen: dict[tuple[int, int, bytes], float] = {}
        self._pending: dict[tuple[int, int], asyncio.Future[ksp.CmdResult]] = {}
        self._device_locks: dict[int, asyncio.Lock] = {}
        self._waiting: Counter[int] = Counter()
        self._drop_log = _RateLimitedLog(_LOG_EVERY_S)
        self.receiver: ReceiverState | None = None  # unknown until heard or given up on

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # The start-up deadline: a receiver that never answers is offline after the same
        # timeout a silent one gets, so a dead receiver at boot is still reported.
        self._heartbeat_timer = self._clock.call_later(
            self.config.heartbeat_timeout_s, self._on_heartbeat_timeout
        )
        self._task = asyncio.create_task(self._run(), name=f"serial-link {self.config.port}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_transport()
        self._set_offline("bridge stopping")  # nobody supervises the receiver from now on
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(ksp.CmdResult.UNREACHABLE)
        self._pending.clear()

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # --- the port ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.config.backoff_initial_s
        failures = opened = 0
        while True:
            protocol = await self._open(failures)
            if protocol is None:
                failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            self.counters.reconnects += opened
            opened, failures = 1, 0
            loop = asyncio.get_running_loop()
            opened_at = loop.time()
            self._send(ksp.Ping())  # the receiver answers with a heartbeat
            self._on_port_lost(await protocol.lost)
            # A port that dies right after opening keeps backing off instead of spinning.
            if loop.time() - opened_at >= self.config.backoff_max_s:
                delay = self.config.backoff_initial_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.backoff_max_s)

    async def _open(self, failures: int) -> _PortProtocol | None:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _PortProtocol(self._on_bytes),
                self.config.port,
                baudrate=self.config.baudrate,
                exclusive=True,  # a second reader would steal frames (and ACK nothing)
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            # The first failure is worth a warning; the retries every few seconds are not.
            level = logging.DEBUG if failures else logging.WARNING
            _log.log(level, "serial port %s: cannot open: %s", self.config.port, exc)
            return None
        self._transport = transport
        _log.info("serial port %s open at %d baud", self.config.port, self.config.baudrate)
        assert isinstance(protocol, _PortProtocol)
        return protocol

    def _on_port_lost(self, exc: Exception | None) -> None:
        _log.warning("serial port %s lost: %s", self.config.port, exc or "closed")
        self._transport = None
        self._on_idle()  # a partial frame from the old port will never complete
        if self.receiver is not None:  # while unknown the start-up deadline keeps running
            self._set_offline("serial port lost")

    def _close_transport(self) -> None:
        if self._idle_timer:
            self._idle_timer.cancel()
        if self._heartbeat_timer:
            self._heartbeat_timer.cancel()
        if self._transport:
            self._transport.close()
            self._transport = None

    def _send(self, message: ksp.Message) -> int | None:
        """Write one frame with the gateway's next SEQ; None when the port is down."""
        if not self.connected:
            return None
        assert self._transport is not None
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        self._transport.write(ksp.encode(seq, message))
        return seq

    # --- bytes in ----------------------------------------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        start = self._fed - self._decoder.pending
        self._fed += len(data)
        self._handle_frames(start, self._decoder.feed(data))
        if self._idle_timer:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._decoder.pending:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self.config.idle_gap_s, self._on_idle)

    def _on_idle(self) -> None:
        if self._idle_timer:
            self._idle_timer.cancel()
            self._idle_timer = None
        start = self._fed - self._decoder.pending
        self._handle_frames(start, self._decoder.line_idle())

    def _handle_frames(self, start: int, frames: list[ksp.Frame]) -> None:
        drops = list(self._decoder.drops)
        self._decoder.drops.clear()
        now = self._clock.monotonic()
        for drop in drops:
            self._drop_log.warning(
                now,
                drop.reason,
                "serial %s: dropped %d byte(s) at offset %d: %s",
                self.config.port,
                drop.length,
                drop.offset,
                drop.reason,
            )
        for frame, offset in zip(frames, _frame_offsets(start, frames, drops), strict=True):
            self._handle_frame(frame, offset)

    def _handle_frame(self, frame: ksp.Frame, offset: int) -> None:
        reliable = frame.type in (ksp.FrameType.REPORT, ksp.FrameType.PAIRING)
        try:
            message = ksp.parse(frame)
        except ksp.KspError as exc:
            self.counters.parse_errors[exc.reason] += 1
            self._drop_log.warning(
                self._clock.monotonic(),
                f"parse:{exc.reason}",
                "serial %s: frame type 0x%02x seq %d at offset %d does not parse (%s): %s",
                self.config.port,
                frame.type,
                frame.seq,
                offset,
                exc.reason,
                exc,
            )
            if reliable:  # a retransmission carries the same bytes: stop it
                self._ack(frame.seq)
            return
        self.counters.frames[ksp.FrameType(frame.type).name] += 1
        match message:
            case ksp.Report():
                self._on_reliable(frame, ReportReceived(message, self._clock.now()))
            case ksp.Pairing():
                self._on_reliable(frame, PairingReceived(message, self._clock.now()))
            case ksp.Heartbeat():
                self._on_heartbeat(message)
            case ksp.CmdAck():
                self._on_cmd_ack(message)
            case _:  # ACK, COMMAND, PING are ours to send; the receiver never sends them
                self.counters.parse_errors["unexpected_type"] += 1
                _log.warning(
                    "serial %s: unexpected %s frame from the receiver at offset %d",
                    self.config.port,
                    type(message).__name__,
                    offset,
                )

    def _on_reliable(self, frame: ksp.Frame, event: ReportReceived | PairingReceived) -> None:
        now = self._clock.monotonic()
        while self._seen:  # oldest first: every entry has the same lifetime
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]
        key = (frame.type, frame.seq, frame.payload)
        if key in self._seen:
            self.counters.duplicates += 1
            self._ack(frame.seq)
            return
        if not self._deliver(event):
            self.counters.refused += 1
            return
        self._seen[key] = now + self.config.dedupe_window_s
        self._ack(frame.seq)

    def _deliver(self, event: LinkEvent) -> bool:
        try:
            return self._consumer(event)
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the serial reader
            _log.exception("link consumer failed on %r; frame left unacknowledged", event)
            return False

    def _ack(self, seq: int) -> None:
        if self._send(ksp.Ack(seq)) is not None:
            self.counters.acks_sent += 1

    # --- receiver supervision ----------------------------------------------------------------

    def _on_heartbeat(self, heartbeat: ksp.Heartbeat) -> None:
        if self._heartbeat_timer:
            self._heartbeat_timer.cancel()
        self._heartbeat_timer = self._clock.call_later(
            self.config.heartbeat_timeout_s, self._on_heartbeat_timeout
        )
        if self.receiver is None or not self.receiver.online:
            _log.info("receiver on %s online", self.config.port)
        self._set_receiver(
            ReceiverState(
                online=True,
                changed_at=self._clock.now(),
                uptime_s=heartbeat.uptime_s,
                paired_count=heartbeat.paired_count,
                fw_version=format_fw_version(heartbeat.fw_version),
            )
        )

    def _on_heartbeat_timeout(self) -> None:
        self._heartbeat_timer = None
        timeout = self.config.heartbeat_timeout_s
        if self.receiver is None:
            self._set_offline(f"no answer within {timeout:g} s of start")
        else:
            self._set_offline(f"no heartbeat for {timeout:g} s")

    def _set_offline(self, why: str) -> None:
        """Online or unknown -> offline; offline stays as it is."""
        if self._heartbeat_timer:
            self._heartbeat_timer.cancel()
            self._heartbeat_timer = None
        last = self.receiver
        if last is not None and not last.online:
            return
        _log.warning("receiver on %s offline: %s", self.config.port, why)
        offline = ReceiverState(online=False, changed_at=self._clock.now())
        if last is not None:  # what the last heartbeat said, kept for the status
            offline = replace(offline, paired_count=last.paired_count, fw_version=last.fw_version)
        self._set_receiver(offline)

    def _set_receiver(self, state: ReceiverState) -> None:
        self.receiver = state
        self._deliver(state)

    # --- commands ----------------------------------------------------------------------------

    async def send_command(self, device_id: int, command: ksp.CommandCode) -> ksp.CmdResult:
        """Run one command; commands to one device run one at a time, in call order.

        COMMAND, wait ``cmd_timeout_s`` for its CMD_ACK; none: ONE resend with a new SEQ (a late
        CMD_ACK of the first still counts), wait again; none: ``unreachable``.
        """
        command = ksp.CommandCode(command)  # a value outside KSP/1's four can never be encoded
        if self._waiting[device_id] >= self.config.max_waiting_commands:
            self.counters.commands[ksp.CmdResult.BUSY] += 1
            return ksp.CmdResult.BUSY
        self._waiting[device_id] += 1
        lock = self._device_locks.setdefault(device_id, asyncio.Lock())
        try:
            async with lock:
                result = await self._command_attempts(device_id, command)
        finally:
            self._waiting[device_id] -= 1
            if not self._waiting[device_id]:
                del self._waiting[device_id]
                self._device_locks.pop(device_id, None)
        self.counters.commands[result] += 1
        _log.info("command %s to %s: %s", command, ksp.format_device_id(device_id), result.value)
        return result

    async def _command_attempts(self, device_id: int, command: ksp.CommandCode) -> ksp.CmdResult:
        done: asyncio.Future[ksp.CmdResult] = asyncio.get_running_loop().create_future()
        keys: list[tuple[int, int]] = []
        try:
            for _attempt in range(2):
                seq = self._send(ksp.Command(device_id, command))
                if seq is not None:
                    keys.append((seq, device_id))
                    self._pending[keys[-1]] = done
                if await self._wait(done, self.config.cmd_timeout_s):
                    return done.result()
            return ksp.CmdResult.UNREACHABLE
        finally:
            for key in keys:
                if self._pending.get(key) is done:
                    del self._pending[key]

    async def _wait(self, fut: asyncio.Future[ksp.CmdResult], timeout_s: float) -> bool:
        expired = asyncio.get_running_loop().create_future()

        def expire() -> None:
            if not expired.done():
                expired.set_result(None)

        timer = self._clock.call_later(timeout_s, expire)
        try:
            await asyncio.wait((fut, expired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            expired.cancel()
        return fut.done()

    def _on_cmd_ack(self, ack: ksp.CmdAck) -> None:
        fut = self._pending.pop((ack.cmd_seq, ack.device_id), None)
        if fut is None or fut.done():
            self.counters.unmatched_cmd_acks += 1
            _log.info(
                "CMD_ACK seq %d for %s matches no waiting command (late or unknown)",
                ack.cmd_seq,
                ksp.format_device_id(ack.device_id),
            )
            return
        fut.set_result(ack.result)
