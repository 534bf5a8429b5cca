"""The events rooms exchange on the bus, in data-flow order: link → ingest → rules → alarms → sinks.

Times: ``at`` / ``received_at`` are the gateway's own wall clock (UTC) when it saw the thing;
a device's clock is carried as data (``KitReport.ts``), never used as the event time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from gateway.contract import KitReport, ReceiverStatus

if TYPE_CHECKING:  # gateway.model imports Severity from here
    from gateway.model import Alarm, Transition

__all__ = [
    "AlarmChanged",
    "ConditionChanged",
    "DeviceAvailabilityChanged",
    "InputRejected",
    "ReadingValue",
    "ReceiverStatusChanged",
    "ReportReceived",
    "Severity",
    "ValveStateChanged",
]

ReadingValue = float | int | str | bool | None | tuple[str, ...]


class Severity(StrEnum):
    """Alarm severities, most urgent first (ISA-18.2 priorities)."""

    CRITICAL = "critical"  # a leak, or a leak the gateway could not isolate
    HIGH = "high"  # over-flow trip, detector offline: a site without protection
    MEDIUM = "medium"  # early warning (gas rising below the alarm level)
    LOW = "low"  # maintenance: faults, low battery, end of life, past service life

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {s: i for i, s in enumerate(Severity)}


# --- ingest → everyone ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportReceived:
    """A valid report from a registered device, after de-duplication."""

    device_id: str
    report: KitReport
    received_at: datetime
    received_mono: float
    # The broker's stored copy, sent on subscribing: old news. It may seed a display, never
    # confirm that a valve closed.
    retained: bool = False

    @property
    def key(self) -> str:
        return self.device_id


@dataclass(frozen=True, slots=True)
class DeviceAvailabilityChanged:
    """A device went online or offline: from its availability topic, from missed reports, or
    because its receiver stopped answering."""

    device_id: str
    online: bool
    reason: Literal["availability_topic", "missed_reports", "receiver_offline", "report"]
    at: datetime

    @property
    def key(self) -> str:
        return self.device_id


@dataclass(frozen=True, slots=True)
class ReceiverStatusChanged:
    bridge_id: str
    status: ReceiverStatus
    at: datetime

    @property
    def key(self) -> str:
        return f"_bridge/{self.bridge_id}"


@dataclass(frozen=True, slots=True)
class InputRejected:
    """Something refused at the edge, for metrics and the log (never silently)."""

    reason: str
    where: str
    detail: str
    at: datetime
    device_id: str | None = None  # set when the input named a device (unregistered ones too)

    @property
    def key(self) -> str:
        return f"_rejected/{self.reason}"


@dataclass(frozen=True, slots=True)
class ValveStateChanged:
    """The state the linkage knows for a valve changed (its ``valve_state``: a live report
    saying something new, or the first state heard, retained or not). Published after the
    linkage took it in, so whoever reads ``Linkage.valve_state`` in a handler sees the new one."""

    valve_id: str
    state: str  # firmware_bridge.ksp.ValveState value
    previous: str | None  # None: never heard from before
    at: datetime

    @property
    def key(self) -> str:
        return self.valve_id


# --- rules → alarms -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionChanged:
    """A rule's verdict on one (source, alarm type): the condition became active or inactive.

    ``source`` is a device id, or ``site:<site_id>`` for site-level conditions. The alarms room
    turns these into ISA-18.2 alarms (one open alarm per source and type).
    """

    alarm_type: str
    source: str
    site_id: str | None
    device_id: str | None
    active: bool
    severity: Severity
    rule_id: str
    message: str
    at: datetime
    readings: Mapping[str, ReadingValue] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def key(self) -> str:
        # One lane per source: a device's conditions reach the alarms room in order.
        return self.source


# --- alarms → linkage, escalation, telemetry, api ------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmChanged:
    """An alarm's new snapshot, published only after it is committed to the store.

    ``notify`` says whether people should be told (False while shelved, out of service or
    chattering, for repeats, and for RESTORED re-announcements after a restart); it never
    stops the linkage closing valves. ``by``/``note``: the person behind a manual transition.
    """

    alarm: Alarm
    transition: Transition
    notify: bool
    by: str | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        return self.alarm.alarm_id
