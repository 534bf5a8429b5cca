"""The device-side MQTT contract, ``kit/v1/...`` (shared/specs/mqtt-contract.md §1), in one place.

Topics are built and parsed here, payloads are pydantic models. The enums are KSP/1's
(:mod:`firmware_bridge.ksp`): the contract says one decoded radio frame maps one-to-one onto one
report, so both sides share one set of names.

Choices the spec leaves open (documented in docs/mqtt-contract.md):

* Unknown top-level keys in a report are ignored (a vendor adding ``"fw"`` must not get a leak
  report rejected); a body object of another kind is an error ("exactly the matching body").
* ``flags`` are normalised to the protocol's bit order, duplicates removed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class KitReport(BaseModel):
    """One device report on ``kit/v1/{device_id}/report``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: DeviceKind
    seq: Annotated[int, Field(ge=0, le=0xFFFF)]
    event: Event
    ts: datetime | None = None  # the device's clock: stored, never trusted
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
