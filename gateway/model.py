"""The alarm record every room shares: its ISA-18.2 state, suppression, and the transitions.

An :class:`Alarm` is an immutable snapshot; every change makes a new one with ``revision + 1``.
The alarms room (:mod:`gateway.alarms`) is the only writer; escalation, the API and telemetry
read snapshots from ``AlarmChanged`` events.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from gateway.events import ReadingValue, Severity

__all__ = ["Alarm", "AlarmState", "Transition"]


class AlarmState(StrEnum):
    """ISA-18.2 / IEC 62682 alarm states (NORMAL: the alarm is closed)."""

    UNACK_ACTIVE = "unack_active"  # condition active, nobody has acknowledged it yet
    ACK_ACTIVE = "ack_active"  # acknowledged; for a latched alarm also after it cleared
    UNACK_CLEARED = "unack_cleared"  # returned to normal before anyone acknowledged it
    NORMAL = "normal"  # closed: acknowledged and cleared, or resolved by a person

    @property
    def is_open(self) -> bool:
        return self is not AlarmState.NORMAL

    @property
    def unacknowledged(self) -> bool:
        return self in (AlarmState.UNACK_ACTIVE, AlarmState.UNACK_CLEARED)


class Transition(StrEnum):
    """Why an alarm snapshot changed: one row of the alarm history."""

    RAISED = "raised"  # a new alarm
    REACTIVATED = "reactivated"  # an open alarm's condition became active again
    UPDATED = "updated"  # a repeat of an active condition (new readings or severity)
    CLEARED = "cleared"  # the condition went inactive
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"  # closed by a person
    SHELVED = "shelved"
    UNSHELVED = "unshelved"  # by a person, or because the shelving expired
    OUT_OF_SERVICE = "out_of_service"
    IN_SERVICE = "in_service"
    CHATTERING = "chattering"  # more than 3 raise/clear cycles in 60 s: held, not re-notified
    RESTORED = "restored"  # announced again after a gateway restart (not a new revision)


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm (one open alarm per ``(source, alarm_type)`` at a time)."""

    alarm_id: str  # "{gateway_id}-{ULID}": unique across gateways, sortable by raise time
    revision: int  # +1 on every transition, starting at 1
    source: str  # a device id, or "site:<site_id>"
    alarm_type: str
    site_id: str | None
    device_id: str | None
    rule_id: str
    severity: Severity
    state: AlarmState
    active: bool  # the condition itself (a latched ACK_ACTIVE alarm may be inactive)
    latched: bool
    message: str
    readings: Mapping[str, ReadingValue]
    raised_at: datetime
    updated_at: datetime  # the last transition
    cleared_at: datetime | None = None
    acked_at: datetime | None = None
    acked_by: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None  # the person who resolved it; None if it closed by clearing
    shelved_until: datetime | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    out_of_service_by: str | None = None  # set while out of service
    out_of_service_reason: str | None = None
    chattering: bool = False
    raise_count: int = 1  # raises and reactivations over the alarm's life

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    @property
    def suppressed(self) -> bool:
        """Shelved, out of service or chattering: recorded and shown, nobody is called."""
        return self.shelved_until is not None or self.out_of_service_by is not None

    def evolve(self, **changes: Any) -> Alarm:
        return dataclasses.replace(self, revision=self.revision + 1, **changes)

    def to_json(self) -> str:
        """The snapshot as JSON (times RFC 3339, UTC): stored in history and sent upstream."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Mapping):
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            data[f.name] = value
        # default=str: a reading of an unexpected type must not cost the alarm its record.
        return json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Alarm:
        data: dict[str, Any] = json.loads(text)
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if f.name.endswith(("_at", "_until")) and isinstance(value, str):
                data[f.name] = datetime.fromisoformat(value)
        data["severity"] = Severity(data["severity"])
        data["state"] = AlarmState(data["state"])
        data["readings"] = MappingProxyType(
            {k: tuple(v) if isinstance(v, list) else v for k, v in data["readings"].items()}
        )
        return cls(**data)
