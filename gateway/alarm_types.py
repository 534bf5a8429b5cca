"""The alarm types the gateway knows, with the facts every room needs about each.

Defaults are documented in docs/alarms.md; rule files may change a type's severity per site,
not whether it latches or closes valves: those are safety properties, fixed here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeAlias

from gateway.events import Severity

__all__ = [
    "EMERGENCY_TYPES",
    "SEVERITIES",
    "AlarmType",
    "AlarmTypeInfo",
    "Category",
    "category",
    "info",
]


class AlarmType(StrEnum):
    LEAK_LOW = "leak_low"  # first level: 20 %LEL or the detector's alarm_low flag
    LEAK_HIGH = "leak_high"  # second level: 50 %LEL or alarm_high
    GAS_RISING = "gas_rising"  # early warning below the alarm level
    OVERFLOW = "overflow"  # regulator over-flow trip or self-closed: possible hose rupture
    OVER_PRESSURE = "over_pressure"
    VALVE_FAILED_TO_CLOSE = "valve_failed_to_close"  # commanded 3 times, not closed
    LEAK_NOT_ISOLATED = "leak_not_isolated"  # a leak and a linked valve still open after T
    VALVE_FAULT = "valve_fault"  # motor_fault, position_fault, state fault
    DEVICE_OFFLINE = "device_offline"
    RECEIVER_OFFLINE = "receiver_offline"
    SENSOR_FAULT = "sensor_fault"
    END_OF_LIFE = "end_of_life"
    TAMPER = "tamper"
    LOW_BATTERY = "low_battery"
    PAST_SERVICE_LIFE = "past_service_life"
    INSPECTION_OVERDUE = "inspection_overdue"
    UNREGISTERED_DEVICE = "unregistered_device"
    # the interlock closed valves on a leak the gateway has no alarm for (it never saw it)
    INTERLOCK_CLOSED_UNRECORDED = "interlock_closed_unrecorded"


@dataclass(frozen=True, slots=True)
class AlarmTypeInfo:
    severity: Severity  # the default; rules may override per site / site type
    latched: bool  # stays until a person acknowledges it, even after the condition clears
    closes_valves: bool  # raising it closes the linked shut-off valves at once
    maintenance: bool  # a coverage gap handled by a work order, not a call-out
    title_zh: str
    title_en: str


_C, _H, _M, _L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
_CATALOGUE: dict[AlarmType, AlarmTypeInfo] = {
    AlarmType.LEAK_LOW: AlarmTypeInfo(
        _H, True, True, False, "燃气泄漏(低报)", "Gas leak (low level)"
    ),
    AlarmType.LEAK_HIGH: AlarmTypeInfo(
        _C, True, True, False, "燃气泄漏(高报)", "Gas leak (high level)"
    ),
    AlarmType.GAS_RISING: AlarmTypeInfo(_M, False, False, False, "燃气浓度上升", "Gas rising"),
    AlarmType.OVERFLOW: AlarmTypeInfo(
        _H, True, True, False, "过流保护动作", "Over-flow protection tripped"
    ),
    AlarmType.OVER_PRESSURE: AlarmTypeInfo(_M, False, False, False, "出口超压", "Over-pressure"),
    AlarmType.VALVE_FAILED_TO_CLOSE: AlarmTypeInfo(
        _C, True, False, False, "切断阀未能关闭", "Shut-off valve failed to close"
    ),
    AlarmType.LEAK_NOT_ISOLATED: AlarmTypeInfo(
        _C, True, False, False, "泄漏未切断", "Leak not isolated"
    ),
    AlarmType.INTERLOCK_CLOSED_UNRECORDED: AlarmTypeInfo(
        _C,
        True,
        False,
        False,
        "联锁已切断阀门,无报警记录",
        "Valve closed by interlock, no alarm recorded",
    ),
    AlarmType.VALVE_FAULT: AlarmTypeInfo(_M, False, False, True, "切断阀故障", "Valve fault"),
    AlarmType.DEVICE_OFFLINE: AlarmTypeInfo(_H, False, False, False, "设备离线", "Device offline"),
    AlarmType.RECEIVER_OFFLINE: AlarmTypeInfo(
        _H, False, False, False, "接收器离线", "Receiver offline"
    ),
    AlarmType.SENSOR_FAULT: AlarmTypeInfo(_L, False, False, True, "传感器故障", "Sensor fault"),
    AlarmType.END_OF_LIFE: AlarmTypeInfo(_L, False, False, True, "探测器寿命到期", "End of life"),
    AlarmType.TAMPER: AlarmTypeInfo(_L, False, False, True, "防拆报警", "Tamper"),
    AlarmType.LOW_BATTERY: AlarmTypeInfo(_L, False, False, True, "电池电量低", "Low battery"),
    AlarmType.PAST_SERVICE_LIFE: AlarmTypeInfo(
        _L, False, False, True, "超过使用年限", "Past service life"
    ),
    AlarmType.INSPECTION_OVERDUE: AlarmTypeInfo(
        _L, False, False, True, "钢瓶检验逾期", "Cylinder inspection overdue"
    ),
    AlarmType.UNREGISTERED_DEVICE: AlarmTypeInfo(
        _L, False, False, True, "未登记设备", "Unregistered device"
    ),
}


def info(alarm_type: AlarmType) -> AlarmTypeInfo:
    return _CATALOGUE[alarm_type]


# How a queue sorts alarms, at the gateway's console and at the center alike (one meaning).
Category: TypeAlias = Literal["emergency", "maintenance"]
SEVERITIES: Final = ("critical", "high", "medium", "low", "info")  # most urgent first
# Call-outs: gas may be escaping, or nobody would know if it were. Every other type (battery,
# service life, inspection, one device offline, sensor fault, tamper, ...) is maintenance: a
# coverage gap handled by a work order. ``gateway_offline`` is the center's own incident.
EMERGENCY_TYPES: Final = frozenset(
    {
        AlarmType.LEAK_LOW,
        AlarmType.LEAK_HIGH,
        AlarmType.GAS_RISING,
        AlarmType.OVERFLOW,
        AlarmType.VALVE_FAILED_TO_CLOSE,
        AlarmType.LEAK_NOT_ISOLATED,
        AlarmType.OVER_PRESSURE,
        AlarmType.RECEIVER_OFFLINE,
        AlarmType.INTERLOCK_CLOSED_UNRECORDED,
        "gateway_offline",
    }
)
_KNOWN: Final = frozenset(AlarmType)


def category(alarm_type: str, severity: str) -> Category:
    """``emergency`` or ``maintenance``; a rule file's own type goes by its severity."""
    if alarm_type in EMERGENCY_TYPES:
        return "emergency"
    if alarm_type in _KNOWN:
        return "maintenance"
    return "emergency" if severity in ("critical", "high") else "maintenance"
