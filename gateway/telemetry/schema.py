"""The telemetry schema (docs/telemetry.md): what each gateway event becomes as a point.

Measurements: ``kit_report`` (one point per device report), ``alarm_transition`` (one per alarm
state change), ``site_summary`` (the periodic per-site coverage summary), ``gateway`` (the
gateway's own metrics). Tags are the bounded-cardinality dimensions dashboards group by; the
time is always the gateway's receive time, the device's own clock is a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from firmware_bridge.ksp import DetectorFlag, RegulatorFlag, ValveCause, ValveFlag, ValveState
from gateway.contract import KitReport
from gateway.model import AlarmState
from gateway.telemetry.lineproto import FieldValue, Point, Priority, time_ns

__all__ = [
    "ALARM_TRANSITION",
    "GATEWAY",
    "KIT_REPORT",
    "SITE_SUMMARY",
    "AlarmTransitionPoint",
    "DeviceTags",
    "SiteTags",
    "alarm_point",
    "gateway_point",
    "report_point",
    "site_summary_point",
]

KIT_REPORT: Final = "kit_report"
ALARM_TRANSITION: Final = "alarm_transition"
SITE_SUMMARY: Final = "site_summary"
GATEWAY: Final = "gateway"
NORMAL: Final = AlarmState.NORMAL.value

# Numeric codes (KSP/1's own) beside the names: InfluxQL aggregates and Grafana value mappings
# need numbers, and VictoriaMetrics keeps numeric fields only.
_VALVE_STATE_CODE: Final = {s: i for i, s in enumerate(ValveState)}
_VALVE_CAUSE_CODE: Final = {c: i for i, c in enumerate(ValveCause)}
_FLAGS: Final[dict[str, tuple[str, ...]]] = {
    "detector": tuple(DetectorFlag),
    "valve": tuple(ValveFlag),
    "regulator": tuple(RegulatorFlag),
}


@dataclass(frozen=True, slots=True)
class SiteTags:
    """Where a point belongs; every value comes from the registry (bounded sets)."""

    site_id: str
    district: str = ""
    site_type: str = ""

    def as_tags(self) -> dict[str, str]:
        return {"site_id": self.site_id, "district": self.district, "site_type": self.site_type}


@dataclass(frozen=True, slots=True)
class DeviceTags:
    """A device's tags: its site's, plus its kind and id."""

    site: SiteTags
    kind: str
    device_id: str

    @classmethod
    def of(cls, device_id: str, tags: Mapping[str, str]) -> DeviceTags:
        """From the registry's ``tags(device_id)`` mapping (site_id, district, site_type, kind)."""
        site = SiteTags(tags["site_id"], tags.get("district", ""), tags.get("site_type", ""))
        return cls(site, tags["kind"], device_id)

    def as_tags(self) -> dict[str, str]:
        return {**self.site.as_tags(), "kind": self.kind, "device_id": self.device_id}


@dataclass(frozen=True, slots=True)
class AlarmTransitionPoint:
    """One alarm state change as the alarms room records it (``at``: the gateway's time).

    ``device_id`` is ``""`` for a site-level alarm; ``from_state``/``to_state`` are
    :class:`gateway.model.AlarmState` values (a new alarm comes from ``normal``);
    ``transition`` the :class:`gateway.model.Transition` that made the change, when known.
    """

    alarm_id: str
    site: SiteTags
    device_id: str
    alarm_type: str
    severity: str
    from_state: str
    to_state: str
    at: datetime
    transition: str = ""


# Each kind's flags and their field names, made once: a report's flags are a dict copy and a
# lookup per flag raised, not a dozen names formatted.
_FLAG_FIELDS: Final = {
    kind: dict.fromkeys((f"flag_{f}" for f in flags), 0) for kind, flags in _FLAGS.items()
}
_FLAG_KEY: Final = {kind: {f: f"flag_{f}" for f in flags} for kind, flags in _FLAGS.items()}


def _flag_fields(kind: str, flags: tuple[str, ...]) -> dict[str, FieldValue]:
    """Every flag of the kind as a 0/1 field, so a cleared flag is a 0, not a gap."""
    fields: dict[str, FieldValue] = dict(_FLAG_FIELDS[kind])
    keys = _FLAG_KEY[kind]
    for flag in flags:
        key = keys.get(flag)
        if key is not None:
            fields[key] = 1
    fields["flags"] = ",".join(flags)
    return fields


def _body_fields(report: KitReport) -> dict[str, FieldValue]:
    if report.detector is not None:
        body = report.detector
        fields: dict[str, FieldValue] = {"lel_pct": float(body.lel_pct)}
        if body.temp_c is not None:
            fields["temp_c"] = body.temp_c
        return fields | _flag_fields("detector", body.flags)
    if report.valve is not None:
        valve = report.valve
        return {
            "valve_state": valve.state.value,
            "valve_state_code": _VALVE_STATE_CODE[valve.state],
            "valve_cause": valve.cause.value,
            "valve_cause_code": _VALVE_CAUSE_CODE[valve.cause],
        } | _flag_fields("valve", valve.flags)
    if report.regulator is not None:
        reg = report.regulator
        return {"pressure_pa": reg.pressure_pa} | _flag_fields("regulator", reg.flags)
    raise ValueError("a report without a body")  # KitReport's validator makes this unreachable


def report_point(report: KitReport, received_at: datetime, tags: DeviceTags) -> Point:
    """``kit_report``: the receive time is the point's time, the device's clock a field."""
    fields: dict[str, FieldValue] = {"seq": report.seq, "event": report.event.value}
    if report.battery_mv is not None:
        fields["battery_mv"] = report.battery_mv
    if report.rssi_dbm is not None:
        fields["rssi_dbm"] = report.rssi_dbm
    if report.ts is not None and report.ts.at is not None:
        # ms, not ns: exact in a float64 (VictoriaMetrics) and the precision devices send. A
        # device time that is not a usable time is left out (ingest counts and logs it).
        fields["device_time_ms"] = time_ns(report.ts.at) // 1_000_000
    fields |= _body_fields(report)
    return Point(KIT_REPORT, tags.as_tags(), fields, time_ns(received_at))


def alarm_point(transition: AlarmTransitionPoint) -> Point:
    """``alarm_transition``: never dropped from the spool (Priority.ALARM)."""
    tags = transition.site.as_tags() | {
        "device_id": transition.device_id,
        "alarm_type": transition.alarm_type,
        "severity": transition.severity,
    }
    fields: dict[str, FieldValue] = {
        "alarm_id": transition.alarm_id,
        "from_state": transition.from_state,
        "to_state": transition.to_state,
        # Numbers to count and sum by: string fields cannot be summed (nor kept by VictoriaMetrics).
        "transitions": 1,
        "raised": int(transition.from_state == NORMAL and transition.to_state != NORMAL),
    }
    if transition.transition:
        fields["transition"] = transition.transition
    return Point(ALARM_TRANSITION, tags, fields, time_ns(transition.at), Priority.ALARM)


def site_summary_point(
    site: SiteTags,
    at: datetime,
    *,
    kit_complete: bool,
    devices_online: int,
    devices_offline: int,
    open_alarms: int,
) -> Point:
    """``site_summary``: the coverage view's input, the same summary the gas company gets."""
    fields: dict[str, FieldValue] = {
        "kit_complete": int(kit_complete),
        "devices_online": devices_online,
        "devices_offline": devices_offline,
        "open_alarms": open_alarms,
    }
    return Point(SITE_SUMMARY, site.as_tags(), fields, time_ns(at))


def gateway_point(gateway_id: str, at: datetime, metrics: Mapping[str, FieldValue]) -> Point:
    """``gateway``: the gateway's own metrics (counters, gauges), one point per sample."""
    return Point(GATEWAY, {"gateway_id": gateway_id}, dict(metrics), time_ns(at))
