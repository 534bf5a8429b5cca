"""KSP/1, the kit receiver's serial protocol: a pure codec (bytes in, values out, no I/O).

Frame: ``A5 5A | VER | TYPE | SEQ | LEN | PAYLOAD[LEN] | CRC16/MODBUS (low byte first)``,
the CRC covering VER..PAYLOAD. The protocol, with test vectors: ``docs/ksp.md``.

Two layers:

* :class:`Decoder` turns an arbitrary byte stream into :class:`Frame` objects (type, seq,
  raw payload), resynchronising after noise and dropping bad frames with a counted reason.
* :func:`parse` turns a frame into a typed message (:class:`Report`, :class:`Heartbeat`, ...),
  and :func:`encode` turns a typed message back into frame bytes.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TypeAlias, TypeVar

__all__ = [
    "MAX_PAYLOAD",
    "SOF",
    "VERSION",
    "Ack",
    "CmdAck",
    "CmdResult",
    "Command",
    "CommandCode",
    "Decoder",
    "DetectorBody",
    "DetectorFlag",
    "DeviceKind",
    "Drop",
    "DropReason",
    "Event",
    "Frame",
    "FrameType",
    "Heartbeat",
    "KspError",
    "Message",
    "Pairing",
    "Ping",
    "RegulatorBody",
    "RegulatorFlag",
    "Report",
    "ValveBody",
    "ValveCause",
    "ValveFlag",
    "ValveState",
    "crc16_modbus",
    "encode",
    "encode_frame",
    "format_device_id",
    "parse",
]

SOF = b"\xa5\x5a"
VERSION = 0x01
MAX_PAYLOAD = 240
_HEAD = 6  # SOF(2) VER TYPE SEQ LEN
_OVERHEAD = _HEAD + 2  # + CRC


class KspError(ValueError):
    """A frame that is intact on the wire but whose payload does not parse.

    ``reason`` is a short machine-readable code (counted by the link); the message says why.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- CRC ------------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS: reflected poly 0xA001, init 0xFFFF, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


# --- enums ----------------------------------------------------------------------------------


class FrameType(IntEnum):
    REPORT = 0x01
    HEARTBEAT = 0x02
    CMD_ACK = 0x03
    PAIRING = 0x04
    ACK = 0x81
    COMMAND = 0x82
    PING = 0x83


class DeviceKind(StrEnum):
    """Electronic kit devices; the wire code is :attr:`code`."""

    DETECTOR = "detector"
    VALVE = "valve"
    REGULATOR = "regulator"

    @property
    def code(self) -> int:
        return _KIND_CODES[self]


class Event(StrEnum):
    PERIODIC = "periodic"
    STATE_CHANGE = "state_change"
    ALARM = "alarm"
    SELF_TEST = "self_test"
    POWER_ON = "power_on"


class DetectorFlag(StrEnum):
    ALARM_LOW = "alarm_low"
    ALARM_HIGH = "alarm_high"
    SENSOR_FAULT = "sensor_fault"
    LOW_BATTERY = "low_battery"
    TAMPER = "tamper"
    END_OF_LIFE = "end_of_life"
    SELF_TEST_OK = "self_test_ok"
    MUTED = "muted"


class ValveState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    MOVING = "moving"
    FAULT = "fault"


class ValveCause(StrEnum):
    NONE = "none"
    MANUAL = "manual"
    LINKED_ALARM = "linked_alarm"
    REMOTE_COMMAND = "remote_command"
    POWER_LOSS = "power_loss"


class ValveFlag(StrEnum):
    LOW_BATTERY = "low_battery"
    MOTOR_FAULT = "motor_fault"
    POSITION_FAULT = "position_fault"


class RegulatorFlag(StrEnum):
    OVERFLOW_TRIPPED = "overflow_tripped"
    SELF_CLOSED = "self_closed"
    LOW_BATTERY = "low_battery"
    OVER_PRESSURE = "over_pressure"


class CommandCode(StrEnum):
    """The only commands KSP/1 has. There is no "open": a closed valve is reopened by hand."""

    CLOSE_VALVE = "close_valve"
    SELF_TEST = "self_test"
    SILENCE = "silence"
    QUERY = "query"


class CmdResult(StrEnum):
    OK = "ok"
    UNKNOWN_DEVICE = "unknown_device"
    UNREACHABLE = "unreachable"
    REJECTED = "rejected"
    BUSY = "busy"


# Wire codes are the position in these tuples (flags: bit number).
_E = TypeVar("_E", bound=StrEnum)

_KIND_CODES = {DeviceKind.DETECTOR: 1, DeviceKind.VALVE: 2, DeviceKind.REGULATOR: 3}
_KINDS_BY_CODE = {code: kind for kind, code in _KIND_CODES.items()}
_EVENTS = tuple(Event)
_VALVE_STATES = tuple(ValveState)
_VALVE_CAUSES = tuple(ValveCause)
_CMD_RESULTS = tuple(CmdResult)
_COMMAND_CODES = {code: number for number, code in enumerate(CommandCode, start=1)}
_COMMANDS_BY_CODE = {number: code for code, number in _COMMAND_CODES.items()}


def _enum_at(values: tuple[_E, ...], index: int, what: str) -> _E:
    if index >= len(values):
        raise KspError(f"bad_{what}", f"{what} code {index} is not defined by KSP/1")
    return values[index]


def _flags_from_bits(values: tuple[_E, ...], bits: int, what: str) -> frozenset[_E]:
    if bits >> len(values):
        raise KspError(f"bad_{what}", f"{what} bits 0x{bits:02x} set an undefined bit")
    return frozenset(v for i, v in enumerate(values) if bits >> i & 1)


def _bits_from_flags(values: tuple[_E, ...], flags: frozenset[_E]) -> int:
    return sum(1 << i for i, v in enumerate(values) if v in flags)


def format_device_id(device_id: int) -> str:
    """Device ids are written as 8 lowercase hex digits outside the wire."""
    return f"{device_id:08x}"


# --- frames and the streaming decoder -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One intact frame: CRC and version checked, payload not yet interpreted."""

    type: int
    seq: int
    payload: bytes


class DropReason(StrEnum):
    NOISE = "noise"  # bytes outside any frame, counted per byte
    BAD_VERSION = "bad_version"
    BAD_LENGTH = "bad_length"
    BAD_CRC = "bad_crc"
    TRUNCATED = "truncated"  # a partial frame abandoned when the line went idle


@dataclass(frozen=True, slots=True)
class Drop:
    """Why bytes were discarded, and where: ``offset`` counts bytes since the decoder began."""

    reason: DropReason
    offset: int
    length: int


@dataclass(slots=True)
class Decoder:
    """Streaming KSP/1 frame decoder.

    Feed it chunks of any size. A bad candidate frame (bad VER, LEN > 240, bad CRC) is dropped and
    the search for the next SOF restarts one byte after the candidate's SOF, not after its claimed
    end: the LEN byte of a corrupted frame cannot be trusted, and a good frame may begin inside it.

    A candidate whose LEN is corrupted upwards holds back the frames behind it until enough bytes
    arrive; call :meth:`line_idle` when the line has been quiet for longer than a frame's gap
    (the link does this) to abandon it and recover those frames at once.
    """

    counts: Counter[str] = field(default_factory=Counter)
    drops: list[Drop] = field(default_factory=list)
    max_drops_kept: int = 64
    _buf: bytearray = field(default_factory=bytearray)
    _consumed: int = 0  # stream offset of _buf[0]

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buf += chunk
        return self._scan(abandon_partial=False)

    def line_idle(self) -> list[Frame]:
        """The line went quiet: a partial frame will not complete; rescan past it."""
        return self._scan(abandon_partial=True)

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet resolved into a frame or a drop."""
        return len(self._buf)

    def _scan(self, *, abandon_partial: bool) -> list[Frame]:
        frames: list[Frame] = []
        pos = 0
        buf = self._buf
        while True:
            start = buf.find(SOF, pos)
            if start < 0:
                # Keep a trailing A5: it may be the first half of the next SOF.
                # Only an A5 not yet consumed: the last CRC byte of a frame just taken is not.
                keep_from = len(buf) - 1 if buf.endswith(SOF[:1]) and len(buf) > pos else len(buf)
                self._drop(DropReason.NOISE, pos, keep_from - pos)
                pos = keep_from
                break
            self._drop(DropReason.NOISE, pos, start - pos)
            status, frame = self._candidate(start)
            if status == "need_more":
                if not abandon_partial:
                    pos = start
                    break
                self._drop(DropReason.TRUNCATED, start, 1)
                pos = start + 1
            elif frame is None:
                self._drop(DropReason(status), start, 1)
                pos = start + 1
            else:
                frames.append(frame)
                pos = start + _OVERHEAD + len(frame.payload)
        del buf[:pos]
        self._consumed += pos
        return frames

    def _candidate(self, start: int) -> tuple[str, Frame | None]:
        buf = self._buf
        if len(buf) - start < _HEAD:
            return "need_more", None
        if buf[start + 2] != VERSION:
            return DropReason.BAD_VERSION, None
        length = buf[start + 5]
        if length > MAX_PAYLOAD:
            return DropReason.BAD_LENGTH, None
        end = start + _HEAD + length
        if len(buf) < end + 2:
            return "need_more", None
        crc = buf[end] | buf[end + 1] << 8
        if crc16_modbus(memoryview(buf)[start + 2 : end]) != crc:
            return DropReason.BAD_CRC, None
        return "ok", Frame(buf[start + 3], buf[start + 4], bytes(buf[start + _HEAD : end]))

    def _drop(self, reason: DropReason, index: int, length: int) -> None:
        if length <= 0:
            return
        # Noise is counted per byte; a bad frame once (its SOF byte is what is skipped).
        self.counts[reason] += length if reason is DropReason.NOISE else 1
        if len(self.drops) >= self.max_drops_kept:
            del self.drops[0]
        self.drops.append(Drop(reason, self._consumed + index, length))


def encode_frame(frame_type: int, seq: int, payload: bytes = b"") -> bytes:
    """Frame bytes for a raw (type, seq, payload)."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq {seq} is outside 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes((VERSION, frame_type, seq, len(payload))) + payload
    crc = crc16_modbus(body)
    return SOF + body + bytes((crc & 0xFF, crc >> 8))


# --- typed messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectorBody:
    lel_x10: int  # tenths of %LEL, 0..1000
    flags: frozenset[DetectorFlag]
    temp_c: int

    @property
    def lel_pct(self) -> float:
        return self.lel_x10 / 10


@dataclass(frozen=True, slots=True)
class ValveBody:
    state: ValveState
    cause: ValveCause
    flags: frozenset[ValveFlag]


@dataclass(frozen=True, slots=True)
class RegulatorBody:
    pressure_pa: int
    flags: frozenset[RegulatorFlag]


Body: TypeAlias = DetectorBody | ValveBody | RegulatorBody


@dataclass(frozen=True, slots=True)
class Report:
    device_id: int
    event: Event
    battery_mv: int
    rssi_dbm: int
    body: Body

    @property
    def kind(self) -> DeviceKind:
        return _BODY_KINDS[type(self.body)]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    uptime_s: int
    paired_count: int
    fw_version: int  # 0x0102 is firmware "1.2"


@dataclass(frozen=True, slots=True)
class CmdAck:
    cmd_seq: int
    device_id: int
    result: CmdResult


@dataclass(frozen=True, slots=True)
class Pairing:
    device_id: int
    kind: DeviceKind
    paired: bool


@dataclass(frozen=True, slots=True)
class Ack:
    acked_seq: int


@dataclass(frozen=True, slots=True)
class Command:
    device_id: int
    command: CommandCode


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Message: TypeAlias = Report | Heartbeat | CmdAck | Pairing | Ack | Command | Ping

_BODY_KINDS: dict[type, DeviceKind] = {
    DetectorBody: DeviceKind.DETECTOR,
    ValveBody: DeviceKind.VALVE,
    RegulatorBody: DeviceKind.REGULATOR,
}
_REPORT_HEAD = struct.Struct(">IBBHb")
_DETECTOR = struct.Struct(">HBb")
_VALVE = struct.Struct(">BBB")
_REGULATOR = struct.Struct(">HB")
_HEARTBEAT = struct.Struct(">IBH")
_CMD_ACK = struct.Struct(">BIB")
_PAIRING = struct.Struct(">IBB")
_COMMAND = struct.Struct(">IB")


def _unpack(layout: struct.Struct, payload: bytes, what: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise KspError(
            "bad_payload_length",
            f"{what} payload is {len(payload)} bytes, KSP/1 defines {layout.size}",
        )
    return layout.unpack(payload)


def _parse_body(kind: DeviceKind, data: bytes) -> Body:
    if kind is DeviceKind.DETECTOR:
        lel_x10, bits, temp_c = _unpack(_DETECTOR, data, "detector body")
        if lel_x10 > 1000:
            raise KspError("lel_out_of_range", f"lel_x10 {lel_x10} exceeds 1000 (100 %LEL)")
        return DetectorBody(lel_x10, _flags_from_bits(tuple(DetectorFlag), bits, "flag"), temp_c)
    if kind is DeviceKind.VALVE:
        state, cause, bits = _unpack(_VALVE, data, "valve body")
        return ValveBody(
            _enum_at(_VALVE_STATES, state, "valve_state"),
            _enum_at(_VALVE_CAUSES, cause, "valve_cause"),
            _flags_from_bits(tuple(ValveFlag), bits, "flag"),
        )
    pressure_pa, bits = _unpack(_REGULATOR, data, "regulator body")
    return RegulatorBody(pressure_pa, _flags_from_bits(tuple(RegulatorFlag), bits, "flag"))


def _kind(code: int) -> DeviceKind:
    try:
        return _KINDS_BY_CODE[code]
    except KeyError:
        raise KspError("bad_kind", f"device kind code {code} is not defined by KSP/1") from None


def _parse_report(payload: bytes) -> Report:
    head, body = payload[: _REPORT_HEAD.size], payload[_REPORT_HEAD.size :]
    if len(head) < _REPORT_HEAD.size:
        raise KspError("bad_payload_length", f"REPORT payload is {len(payload)} bytes, under 9")
    device_id, kind_code, event, battery_mv, rssi = _REPORT_HEAD.unpack(head)
    kind = _kind(kind_code)
    return Report(
        device_id, _enum_at(_EVENTS, event, "event"), battery_mv, rssi, _parse_body(kind, body)
    )


def _parse_cmd_ack(payload: bytes) -> CmdAck:
    cmd_seq, device_id, result = _unpack(_CMD_ACK, payload, "CMD_ACK")
    return CmdAck(cmd_seq, device_id, _enum_at(_CMD_RESULTS, result, "cmd_result"))


def _parse_pairing(payload: bytes) -> Pairing:
    device_id, kind, paired = _unpack(_PAIRING, payload, "PAIRING")
    if paired > 1:
        raise KspError("bad_paired", f"paired must be 0 or 1, got {paired}")
    return Pairing(device_id, _kind(kind), bool(paired))


def _parse_command(payload: bytes) -> Command:
    device_id, code = _unpack(_COMMAND, payload, "COMMAND")
    if code not in _COMMANDS_BY_CODE:
        raise KspError("bad_command", f"command code {code} is not defined by KSP/1")
    return Command(device_id, _COMMANDS_BY_CODE[code])


def _parse_ping(payload: bytes) -> Ping:
    if payload:
        raise KspError("bad_payload_length", f"PING payload must be empty, got {len(payload)}")
    return Ping()


def parse(frame: Frame) -> Message:
    """The typed message in an intact frame; :class:`KspError` if its payload does not parse."""
    p = frame.payload
    match frame.type:
        case FrameType.REPORT:
            return _parse_report(p)
        case FrameType.HEARTBEAT:
            return Heartbeat(*_unpack(_HEARTBEAT, p, "HEARTBEAT"))
        case FrameType.CMD_ACK:
            return _parse_cmd_ack(p)
        case FrameType.PAIRING:
            return _parse_pairing(p)
        case FrameType.ACK:
            return Ack(*_unpack(struct.Struct(">B"), p, "ACK"))
        case FrameType.COMMAND:
            return _parse_command(p)
        case FrameType.PING:
            return _parse_ping(p)
    raise KspError("bad_type", f"frame type 0x{frame.type:02x} is not defined by KSP/1")


def _encode_body(body: Body) -> bytes:
    match body:
        case DetectorBody():
            bits = _bits_from_flags(tuple(DetectorFlag), body.flags)
            return _DETECTOR.pack(body.lel_x10, bits, body.temp_c)
        case ValveBody():
            bits = _bits_from_flags(tuple(ValveFlag), body.flags)
            return _VALVE.pack(
                _VALVE_STATES.index(body.state), _VALVE_CAUSES.index(body.cause), bits
            )
        case RegulatorBody():
            bits = _bits_from_flags(tuple(RegulatorFlag), body.flags)
            return _REGULATOR.pack(body.pressure_pa, bits)


def _payload(message: Message) -> tuple[FrameType, bytes]:
    match message:
        case Report():
            head = _REPORT_HEAD.pack(
                message.device_id,
                message.kind.code,
                _EVENTS.index(message.event),
                message.battery_mv,
                message.rssi_dbm,
            )
            return FrameType.REPORT, head + _encode_body(message.body)
        case Heartbeat():
            m = message
            return FrameType.HEARTBEAT, _HEARTBEAT.pack(m.uptime_s, m.paired_count, m.fw_version)
        case CmdAck():
            result = _CMD_RESULTS.index(message.result)
            return FrameType.CMD_ACK, _CMD_ACK.pack(message.cmd_seq, message.device_id, result)
        case Pairing():
            kind, paired = message.kind.code, int(message.paired)
            return FrameType.PAIRING, _PAIRING.pack(message.device_id, kind, paired)
        case Ack():
            return FrameType.ACK, bytes((message.acked_seq,))
        case Command():
            code = _COMMAND_CODES[message.command]
            return FrameType.COMMAND, _COMMAND.pack(message.device_id, code)
        case Ping():
            return FrameType.PING, b""


def encode(seq: int, message: Message) -> bytes:
    """Whole frame bytes for a typed message; struct.error if a field is out of its range."""
    frame_type, payload = _payload(message)
    return encode_frame(frame_type, seq, payload)
