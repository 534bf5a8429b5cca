"""A small world for escalation tests: one restaurant site with contacts and a linked valve, the
real alarms room, a real store, and escalation settings pointing at real local receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from gateway.alarm_types import AlarmType
from gateway.events import ConditionChanged, Severity
from gateway.registry import Registry
from gateway.registry.model import (
    Component,
    ComponentType,
    Contact,
    Lang,
    RegistryData,
    Site,
    SiteType,
)

__all__ = ["SITE_ID", "eventually", "leak", "registry", "settings_for"]

SITE_ID = "r-0001"
DETECTOR, VALVE = "1a2b3c4d", "5e6f7a8b"


def registry() -> Registry:
    site = Site(SITE_ID, "老王饭店", SiteType.RESTAURANT, "four_piece", "Xuhui", "漕溪北路 88 号")
    day = date(2025, 1, 1)
    return Registry(
        RegistryData(
            sites=(site,),
            contacts=(
                Contact(SITE_ID, "王老板", "13800000001", Lang.ZH, "owner"),
                Contact(SITE_ID, "Sam Lee", "13800000002", Lang.EN, "manager"),
            ),
            components=(
                Component(SITE_ID, ComponentType.LEAK_DETECTOR, DETECTOR, "default-detector", day),
                Component(
                    SITE_ID, ComponentType.SHUTOFF_VALVE, VALVE, "default-valve", day, (DETECTOR,)
                ),
            ),
        )
    )


def leak(at: datetime, *, active: bool = True, source: str = DETECTOR) -> ConditionChanged:
    return ConditionChanged(
        alarm_type=AlarmType.LEAK_HIGH.value,
        source=source,
        site_id=SITE_ID,
        device_id=source,
        active=active,
        severity=Severity.CRITICAL,
        rule_id="leak.high",
        message="gas at 55 %LEL",
        at=at,
        readings={"lel_pct": 55.0},
    )


def settings_for(
    http_url: Callable[[str], str], smtp_port: int, gasco_url: str | None = None, **extra: Any
) -> dict[str, Any]:
    """EscalationSettings data: SMS and duty-room robot webhooks, e-mail, the people."""
    return {
        "hotline": "96777",
        "gasco": {"url": gasco_url, "summary_interval_s": 3600},
        "channels": {
            "sms": {
                "kind": "webhook",
                "url": http_url("/sms"),
                "template": "sms",
                "secret": "s3cret",
                "timeout_s": 2,
            },
            "duty_room_im": {
                "kind": "webhook",
                "url": http_url("/wecom"),
                "template": "wecom",
                "timeout_s": 2,
            },
            "email": {"kind": "email", "host": "127.0.0.1", "port": smtp_port, "timeout_s": 5},
        },
        "duty_room": [{"name": "Duty room"}],
        "duty_supervisor": [
            {"name": "Supervisor Zhang", "phone": "13900000001", "email": "zhang@gasco.example"}
        ],
        "emergency_dispatcher": [{"name": "Dispatch", "phone": "13900000002"}],
        "district_regulators": {
            "Xuhui": [{"name": "Xuhui regulator", "lang": "en", "email": "reg@xuhui.example"}]
        },
        "outbox": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 1000},
        **extra,
    }


async def eventually(predicate: Callable[[], bool], within: float = 20.0, what: str = "") -> None:
    """Yield to the loop until ``predicate`` holds (real servers answer from their threads)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within} s waiting for {what or predicate}")
