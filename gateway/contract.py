"""The device-side MQTT contract, ``kit/v1/...`` (docs/kit-v1.md), in one place.

Topics are built and parsed here, payloads are pydantic models. The enums are KSP/1's
(:mod:`firmware_bridge.ksp`): the contract says one decoded radio frame maps one-to-one onto one
report, so both sides share one set of names.

Choices the contract makes explicit (docs/kit-v1.md; JSON Schemas in docs/schemas/kit-*):

* Unknown top-level keys in a report are ignored (a vendor adding ``"fw"`` must not get a leak
  report rejected); a body object of another kind is an error ("exactly the matching body").
* ``flags`` are normalised to the protocol's bit order, duplicates removed.
* ``ts`` (the device's clock) can never make a report invalid: any JSON value is accepted and kept
  as a :class:`DeviceTime`, parsed when it is a usable RFC 3339 time and flagged with the reason
  when it is not (year 0, a leap second, ``"yesterday"``, a number...). A leak must be acted on
  whatever a device's clock says.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from firmware_bridge.ksp import (
    CmdResult,
    CommandCode,
    DetectorFlag,
    DeviceKind,
    Event,
    RegulatorFlag,
    ValveCause,
    ValveFlag,
    ValveState,
)
from gateway.errors import RejectedInput

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PREFIX",
    "Availability",
    "CmdAckMessage",
    "CmdMessage",
    "DetectorReading",
    "DeviceTime",
    "KitReport",
    "ReceiverStatus",
    "RegulatorReading",
    "TopicKind",
    "ValveReading",
    "bridge_availability_topic",
    "cmd_ack_topic",
    "cmd_topic",
    "decode",
    "device_availability_topic",
    "parse_topic",
    "receiver_topic",
    "report_topic",
]

PREFIX: Final = "kit/v1"
MAX_PAYLOAD_BYTES: Final = 8 * 1024
TS_TEXT_MAX: Final = 64  # an RFC 3339 time is at most ~35 characters; more is kept cut
DEVICE_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
BRIDGE = "_bridge"

TopicKind = Literal["report", "cmd", "cmd/ack", "availability", "bridge/availability", "receiver"]
Availability = Literal["online", "offline"]

_F = TypeVar("_F", DetectorFlag, ValveFlag, RegulatorFlag)


def _in_bit_order(flags: list[_F], order: type[_F]) -> tuple[_F, ...]:
    if not flags:
        return ()  # the everyday report: no flags, nothing to order
    present = set(flags)
    return tuple(f for f in order if f in present)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorReading(_Strict):
    lel_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    flags: tuple[DetectorFlag, ...] = ()
    temp_c: int | None = None

    @field_validator("flags", mode="after")
    @classmethod
    def _order(cls, v: tuple[DetectorFlag, ...]) -> tuple[DetectorFlag, ...]:
        return _in_bit_order(list(v), DetectorFlag)


class ValveReading(_Strict):
    state: ValveState
    cause: ValveCause = ValveCause.NONE
    flags: tuple[ValveFlag, ...] = ()

    @field_validator("flags", mode="after")
    @classmethod
    def _order(cls, v: tuple[ValveFlag, ...]) -> tuple[ValveFlag, ...]:
        return _in_bit_order(list(v), ValveFlag)


class RegulatorReading(_Strict):
    pressure_pa: Annotated[int, Field(ge=0, le=1_000_000)]
    flags: tuple[RegulatorFlag, ...] = ()

    @field_validator("flags", mode="after")
    @classmethod
    def _order(cls, v: tuple[RegulatorFlag, ...]) -> tuple[RegulatorFlag, ...]:
        return _in_bit_order(list(v), RegulatorFlag)


_BODIES: Final = tuple(kind.value for kind in DeviceKind)  # a report's body field names

# RFC 3339 §5.6 date-time ("T"/"Z" in either case; a space for "T" as its note allows).
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


class DeviceTime(NamedTuple):
    """A device's own clock reading (a report's ``ts``): data, never the event time.

    ``text`` is what the device sent (a JSON string as is, any other value as its JSON text; cut
    to :data:`TS_TEXT_MAX` characters). ``at`` is that time in UTC when it is a usable RFC 3339
    date-time; otherwise ``at`` is None and ``problem`` says why. A device time is never a
    reason to refuse a report: the gateway's receive time is what counts. (A named tuple, not a
    dataclass: it is built for every report, and a frozen dataclass costs three times as much.)
    """

    text: str
    at: datetime | None = None
    problem: str | None = None

    @classmethod
    def read(cls, value: object) -> DeviceTime | None:
        """Any value a report's ``ts`` may hold; None for none. Never raises."""
        if value is None or isinstance(value, DeviceTime):
            return value
        if isinstance(value, datetime):  # a bridge's or simulator's own clock
            return cls._of_datetime(value)
        if not isinstance(value, str):
            kind = type(value).__name__
            return cls(_json_text(value), None, f"a JSON {kind}, not an RFC 3339 date-time string")
        if len(value) > TS_TEXT_MAX:
            return cls(value[:TS_TEXT_MAX], None, f"{len(value)} characters, not a date-time")
        if not _RFC3339.fullmatch(value):
            return cls(value, None, "not an RFC 3339 date-time")
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:  # year 0, month 13, a leap second (:60)...
            return cls(value, None, f"not a usable time: {exc}")
        return cls._of_datetime(parsed, value)

    @classmethod
    def _of_datetime(cls, value: datetime, text: str | None = None) -> DeviceTime:
        if text is None:  # the form pydantic wrote a datetime in: 2026-11-28T10:00:00.123000Z
            text = value.isoformat().replace("+00:00", "Z")
        if value.tzinfo is UTC:  # "Z", the everyday case: nothing to convert
            return cls(text, value)
        if value.tzinfo is None:
            return cls(text, None, "no UTC offset: a local time of unknown zone")
        try:
            return cls(text, value.astimezone(UTC))
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            return cls(text, None, "outside the years 1-9999 in UTC")


def _json_text(value: object) -> str:
    """The JSON text of a decoded value, cut to :data:`TS_TEXT_MAX` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, TypeError, RecursionError):  # too deep or big to print: its kind will do
        text = f"<{type(value).__name__}>"
    return text[:TS_TEXT_MAX]


def _device_time_json(value: DeviceTime | None) -> str | None:
    return None if value is None else value.text


# Any JSON value is accepted: a device clock can never veto a report (no "type" in the schema).
_DeviceTimeField = Annotated[
    DeviceTime | None,
    PlainValidator(DeviceTime.read),
    PlainSerializer(_device_time_json, return_type=str | None),
    WithJsonSchema(
        {
            "description": "the device's clock, RFC 3339 date-time; any other value is kept "
            "as text and flagged, never a reason to refuse the report"
        }
    ),
]


class KitReport(BaseModel):
    """One device report on ``kit/v1/{device_id}/report``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: DeviceKind
    seq: Annotated[int, Field(ge=0, le=0xFFFF)]
    event: Event
    ts: _DeviceTimeField = None  # the device's clock: stored, flagged if unusable, never trusted
    battery_mv: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    rssi_dbm: Annotated[int, Field(ge=-128, le=127)] | None = None
    detector: DetectorReading | None = None
    valve: ValveReading | None = None
    regulator: RegulatorReading | None = None

    @model_validator(mode="after")
    def _one_body(self) -> KitReport:
        present = [name for name in _BODIES if getattr(self, name) is not None]
        if present != [self.kind.value]:
            raise ValueError(
                f"a {self.kind.value} report needs exactly its '{self.kind.value}' object, "
                f"got {sorted(present) or 'none'}"
            )
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class CmdMessage(_Strict):
    """``kit/v1/{device_id}/cmd``: the command set has no "open" (gas codes: reopened by hand)."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    cmd: CommandCode


class CmdAckMessage(_Strict):
    id: str
    result: CmdResult


class ReceiverStatus(_Strict):
    online: bool
    uptime_s: int | None = None
    paired_count: int | None = None
    fw_version: str | None = None
    ts: datetime
    # Only on the offline status a bridge publishes when stopped on purpose (SIGTERM): the
    # gateway waits a grace for it to come back instead of paging (docs/bridge.md).
    stopping: Literal[True] | None = None


# --- topics ---------------------------------------------------------------------------------


def report_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/report"


def cmd_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/cmd"


def cmd_ack_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/cmd/ack"


def device_availability_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/availability"


def bridge_availability_topic(bridge_id: str) -> str:
    return f"{PREFIX}/{BRIDGE}/{bridge_id}/availability"


def receiver_topic(bridge_id: str) -> str:
    return f"{PREFIX}/{BRIDGE}/{bridge_id}/receiver"


_DEVICE_TOPICS: dict[str, TopicKind] = {
    "report": "report",
    "cmd": "cmd",
    "cmd/ack": "cmd/ack",
    "availability": "availability",
}
_BRIDGE_TOPICS: dict[str, TopicKind] = {
    "availability": "bridge/availability",
    "receiver": "receiver",
}


def parse_topic(topic: str) -> tuple[TopicKind, str]:
    """(kind, device or bridge id) of a ``kit/v1`` topic; :class:`RejectedInput` otherwise."""
    head, _, rest = topic.partition(f"{PREFIX}/")
    ident, _, tail = rest.partition("/")
    table = _DEVICE_TOPICS
    if ident == BRIDGE:
        ident, _, tail = tail.partition("/")
        table = _BRIDGE_TOPICS
    if head or tail not in table:
        raise RejectedInput("bad_topic", f"not a {PREFIX} topic this gateway knows", where=topic)
    if not DEVICE_ID_RE.fullmatch(ident):
        raise RejectedInput("bad_device_id", f"id {ident!r} is not [A-Za-z0-9_-]{{1,64}}", topic)
    return table[tail], ident


_M = TypeVar("_M", bound=BaseModel)


def decode(model: type[_M], payload: bytes, topic: str) -> _M:
    """Validate a JSON payload; every failure is a :class:`RejectedInput` with a reason code."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedInput(
            "oversized", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", topic
        )
    try:
        # Parsed and validated in one pass by pydantic-core: the hot path of every report.
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            detail = f"payload is not UTF-8 JSON: {first['msg']}"
            raise RejectedInput("bad_json", detail, topic) from None
        field = ".".join(str(p) for p in first["loc"]) or "payload"
        reason = "unknown_kind" if first["loc"][:1] == ("kind",) else "invalid"
        raise RejectedInput(
            reason, f"{field}: {first['msg']} ({exc.error_count()} error(s))", topic
        ) from None
