"""The gas company's JSON payloads (docs/schemas/), built from the alarm and the registry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.alarm_types import info
from gateway.audit import SiteCondition
from gateway.escalation.messages import known_type
from gateway.escalation.ports import SiteDirectory
from gateway.model import Alarm
from gateway.registry.model import KitStatus, Site

__all__ = [
    "ALARM_EVENT",
    "SITE_SUMMARY",
    "alarm_event",
    "site_json",
    "site_summary",
    "valve_summary",
]

ALARM_EVENT = "gasgate/gasco/alarm-event/1"
SITE_SUMMARY = "gasgate/gasco/site-summary/1"


def alarm_event(
    alarm: Alarm,
    *,
    gateway_id: str,
    transition: str,
    revision: int,
    site: dict[str, Any] | None,
    valves: Mapping[str, str],
    escalation: Mapping[str, Any] | None,
    by: str | None,
    note: str | None,
    at: datetime,
) -> dict[str, Any]:
    """docs/schemas/gasco-alarm-event.schema.json"""
    kind = known_type(alarm.alarm_type)
    title = (
        {"zh": info(kind).title_zh, "en": info(kind).title_en}
        if kind
        else {"zh": alarm.message, "en": alarm.message}
    )
    return {
        "schema": ALARM_EVENT,
        "gateway_id": gateway_id,
        "alarm_id": alarm.alarm_id,
        "revision": revision,
        "alarm_revision": alarm.revision,
        "transition": transition,
        "state": alarm.state.value,
        "active": alarm.active,
        "latched": alarm.latched,
        "alarm_type": alarm.alarm_type,
        "title": title,
        "severity": alarm.severity.value,
        "message": alarm.message,
        "site": site,
        "source": alarm.source,
        "device_id": alarm.device_id,
        "rule_id": alarm.rule_id,
        "readings": {k: list(v) if isinstance(v, tuple) else v for k, v in alarm.readings.items()},
        "valves": [{"device_id": d, "state": v} for d, v in valves.items()],
        "valve_state": valve_summary(valves),
        "escalation": dict(escalation) if escalation else None,
        "by": by,
        "note": note,
        "suppressed": alarm.suppressed or alarm.chattering,
        "times": {
            "raised_at": alarm.raised_at.isoformat(),
            "updated_at": alarm.updated_at.isoformat(),
            "acked_at": _iso(alarm.acked_at),
            "cleared_at": _iso(alarm.cleared_at),
            "closed_at": _iso(alarm.closed_at),
            "event_at": at.isoformat(),
        },
    }


def site_json(registry: SiteDirectory, site_id: str | None) -> dict[str, Any] | None:
    """The site as the gas company needs it to act: where, and whom to call."""
    site = registry.site(site_id) if site_id else None
    if site is None:
        return None if site_id is None else {"site_id": site_id}
    return {
        "site_id": site.site_id,
        "name": site.name,
        "address": site.address,
        "district": site.district,
        "site_type": site.site_type.value,
        "contacts": [
            {"name": c.name, "phone": c.phone, "lang": c.lang.value, "role": c.role}
            for c in registry.contacts(site.site_id)
        ],
    }


def site_summary(
    site: Site,
    *,
    gateway_id: str,
    kit: KitStatus | None,
    devices: Mapping[str, int],
    open_alarms: list[dict[str, Any]],
    condition: SiteCondition,
    at: datetime,
) -> dict[str, Any]:
    """docs/schemas/gasco-site-summary.schema.json. ``devices``: total, online, offline;
    ``condition``: the edge audit's (:class:`gateway.audit.Findings`), for its verdict."""
    return {
        "schema": SITE_SUMMARY,
        "gateway_id": gateway_id,
        "site_id": site.site_id,
        "name": site.name,
        "address": site.address,
        "district": site.district,
        "site_type": site.site_type.value,
        "lat": site.latitude,
        "lon": site.longitude,
        "protected": condition.protected,
        "service": _service(condition),
        "kit": None
        if kit is None
        else {"complete": kit.complete, "missing": [str(m) for m in kit.missing]},
        "devices": dict(devices),
        "open_alarms": open_alarms,
        "at": at.isoformat(),
    }


def _service(condition: SiteCondition) -> dict[str, Any]:
    """Parts past their service life and cylinders overdue for inspection, as the audit saw
    them (the cylinders do not change the verdict: they are the gas company's)."""
    return {
        "past_service_life": [
            {
                "component": str(f.component),
                "device_id": f.device_id,
                "model": f.model,
                "expired_on": f.expired_on.isoformat(),
            }
            for f in condition.past_service_life
        ],
        "cylinders_overdue": [
            {
                "cylinder_id": c.cylinder_id,
                "next_inspection_due": c.next_inspection_due.isoformat(),
            }
            for c in condition.cylinders_overdue
        ],
    }


def valve_summary(valves: Mapping[str, str]) -> str | None:
    """closed (all closed) · open (any open) · the common state · mixed; None: no valve."""
    states = set(valves.values())
    if not states:
        return None
    if "open" in states:
        return "open"
    return states.pop() if len(states) == 1 else "mixed"


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
