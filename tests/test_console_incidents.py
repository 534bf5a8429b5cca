"""The console's queue as incidents (issue 14), in pure functions: one row per site episode,
emergencies apart from maintenance by the monitoring center's own rule, most severe first then
the oldest, filters and search; times local with their zone's label, ages relative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.alarm_types import SEVERITIES, AlarmType
from gateway.api.i18n import Speaker, zone_label
from gateway.api.incidents import EMERGENCY_TYPES, Filters, category, group, select
from gateway.api.views import AlarmView, ContactView, ValveLine

T0 = datetime(2026, 12, 4, 4, 3, 5, tzinfo=UTC)  # 12:03:05 in Shanghai


def _alarm(alarm_id: str, alarm_type: str, severity: str, minutes: int, **more: Any) -> AlarmView:
    site = more.pop("site", "rest-1")
    values: dict[str, Any] = {
        "alarm_id": alarm_id, "revision": 1, "alarm_type": alarm_type, "severity": severity,
        "state": "unack_active", "active": True, "latched": True, "message": "",
        "source": more.pop("source", "det-1"), "site_id": site, "device_id": "det-1",
        "site_name": f"Golden Wok {site}", "address": "12 Shennan Rd", "district": "Futian",
        "contacts": [ContactView(name="Li Wei", role="owner", lang="zh", phone="13800138000")],
        "raised_at": T0 + timedelta(minutes=minutes), "updated_at": T0, "age_s": 0.0,
        "acked_at": None, "acked_by": None, "closed_at": None, "closed_by": None,
        "shelved_until": None, "out_of_service": False, "chattering": False, "readings": {},
        "valves": {}, "gateway_did": [], "valve_lines": [], "commands": [], "notices": [],
        "escalation_step": None, "escalation_stopped": False, "lel_trend": [],
    }  # fmt: skip
    return AlarmView(**(values | more))


def test_call_outs_are_emergencies_and_a_rule_files_own_type_goes_by_severity() -> None:
    assert category("leak_low", "low") == category("gateway_offline", "info") == "emergency"
    assert category("low_battery", "critical") == category("device_offline", "high")
    assert category("device_offline", "high") == "maintenance"
    assert [category("rule_file_own", s) for s in SEVERITIES] == [
        "emergency", "emergency", "maintenance", "maintenance", "maintenance",
    ]  # fmt: skip
    assert {t for t in AlarmType if category(t, "info") == "emergency"} < EMERGENCY_TYPES


def test_a_sites_leak_is_one_row_and_maintenance_apart() -> None:
    stuck = ValveLine(valve_id="valve-1", state="open", since=None, unanswered=3)
    alarms = [
        _alarm("a1", "leak_low", "high", 0),
        _alarm("a2", "leak_high", "critical", 1),
        _alarm(
            "a3",
            "valve_failed_to_close",
            "critical",
            2,
            device_id="valve-1",
            source="valve-1",
            valve_lines=[stuck],
        ),
        _alarm("a4", "leak_not_isolated", "critical", 3),
        _alarm("a5", "sensor_fault", "low", -5, latched=False),
        _alarm("a6", "tamper", "low", -4, latched=False),
        _alarm("b1", "low_battery", "low", -60, site="house-2", latched=False),
        _alarm("c1", "leak_low", "high", -30, site="rest-3"),
    ]
    incidents = group(alarms)
    assert [(i.key, [a.alarm_id for a in i.alarms]) for i in incidents] == [
        ("rest-1/emergency", ["a2", "a3", "a4", "a1"]),  # critical first, then the oldest
        ("rest-3/emergency", ["c1"]),
        ("house-2/maintenance", ["b1"]),
        ("rest-1/maintenance", ["a5", "a6"]),
    ]
    leak = incidents[0]
    assert (leak.severity, leak.opened_at, leak.state) == ("critical", T0, "unack_active")
    assert [v.valve_id for v in leak.valves] == ["valve-1"]  # the failed valve's state, first
    emergencies = select(incidents, Filters())
    assert [i.key for i in emergencies] == ["rest-1/emergency", "rest-3/emergency"]
    maintenance = select(incidents, Filters(tab="maintenance"))
    assert [i.key for i in maintenance] == ["house-2/maintenance", "rest-1/maintenance"]


def test_filters_and_search() -> None:
    incidents = group(
        [
            _alarm("a1", "leak_high", "critical", 0),
            _alarm(
                "b1",
                "overflow",
                "high",
                1,
                site="rest-2",
                district="Nanshan",
                device_id="reg-9",
                source="reg-9",
            ),
        ]
    )

    def keys(**asked: str) -> list[str]:
        return [i.key for i in select(incidents, Filters(**asked))]  # type: ignore[arg-type]

    assert keys(district="Nanshan") == ["rest-2/emergency"]
    assert keys(severity="critical") == ["rest-1/emergency"]
    assert keys(alarm_type="overflow") == ["rest-2/emergency"]
    assert keys(state="ack_active") == []
    assert keys(search="reg-9") == ["rest-2/emergency"]  # a device id
    assert keys(search="13800138000") == ["rest-1/emergency", "rest-2/emergency"]  # a phone
    assert keys(search="golden wok rest-1") == ["rest-1/emergency"]  # a name, any case
    assert keys(search="shennan") == ["rest-1/emergency", "rest-2/emergency"]  # an address


def test_times_are_local_with_their_label_and_ages_relative() -> None:
    zh = Speaker.of("zh-CN", "Asia/Shanghai")
    en = Speaker.of("en", "Asia/Shanghai")
    assert zh.clock(T0) == "12:03:05 北京时间"  # one label per language, the center's too
    assert en.stamp(T0) == "2026-12-04 12:03:05 Beijing time"
    assert en.ago(T0, T0 + timedelta(minutes=3, seconds=20)) == "3 min ago"
    assert zh.ago(T0, T0 + timedelta(minutes=3)) == "3分钟前"
    assert zh.ago(T0, T0 + timedelta(hours=2, minutes=5)) == "2小时5分钟前"
    assert en.ago(T0, T0 + timedelta(seconds=2)) == "just now"
    kolkata = Speaker.of("en", "Asia/Kolkata")
    assert kolkata.clock(T0) == "09:33:05 IST"
    assert zone_label(T0.astimezone(Speaker.of("en", "Asia/Dubai").zone), "zh-CN") == "UTC+4"
