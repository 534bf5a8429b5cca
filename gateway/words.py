"""Every code a person may see, in plain Simplified Chinese and English, from one catalogue.

The gateway's console, the monitoring center's control room, the alert page and the audit
report all name alarm types, components, kits, states, transitions and causes through
:func:`word`, so a code never reaches a page raw and one word means one thing everywhere. Alarm
titles are the SMS titles (:mod:`gateway.alarm_types`): an officer reads what the household read.
"""

from __future__ import annotations

from typing import Final, Literal

from gateway.alarm_types import AlarmType, info
from gateway.model import AlarmState, Transition
from gateway.registry.model import ComponentType, SiteType

__all__ = ["KINDS", "Kind", "catalogue", "word"]

Kind = Literal[
    "alarm_type",
    "component",
    "kit",
    "site_type",
    "severity",
    "alarm_state",
    "transition",
    "incident_state",
    "incident_transition",
    "category",
    "cause",
    "valve_state",
    "site_answer",
    "refusal",
]

_Pairs = dict[str, tuple[str, str]]

_COMPONENTS: Final[_Pairs] = {
    ComponentType.LEAK_DETECTOR: ("燃气泄漏探测器", "gas leak detector"),
    ComponentType.SHUTOFF_VALVE: ("紧急切断阀", "shut-off valve"),
    ComponentType.SMART_REGULATOR: ("智能调压器", "smart regulator"),
    ComponentType.OVERFLOW_REGULATOR: ("过流保护调压器", "over-flow protection regulator"),
    ComponentType.SELF_CLOSING_REGULATOR: ("自闭阀调压器", "self-closing regulator"),
    ComponentType.METAL_HOSE: ("金属包覆软管", "metal-clad hose"),
    ComponentType.FLAME_FAILURE_COOKER: ("熄火保护灶具", "flame-failure cooker"),
}
_KITS: Final[_Pairs] = {
    "four_piece": ("餐饮“四件套”", "restaurant four-piece kit"),
    "two_piece": ("居民“两件套”", "household two-piece kit"),
}
_SITE_TYPES: Final[_Pairs] = {
    SiteType.RESTAURANT: ("餐饮场所", "restaurant"),
    SiteType.HOUSEHOLD: ("居民用户", "household"),
    SiteType.OTHER: ("其他", "other"),
}
_SEVERITIES: Final[_Pairs] = {
    "critical": ("紧急", "critical"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "info": ("提示", "info"),
}
_ALARM_STATES: Final[_Pairs] = {
    AlarmState.UNACK_ACTIVE: ("报警中，未确认", "active, not acknowledged"),  # noqa: RUF001
    AlarmState.ACK_ACTIVE: ("报警中，已确认", "active, acknowledged"),  # noqa: RUF001
    AlarmState.UNACK_CLEARED: ("已恢复，未确认", "cleared, not acknowledged"),  # noqa: RUF001
    AlarmState.NORMAL: ("已关闭", "closed"),
}
_TRANSITIONS: Final[_Pairs] = {
    Transition.RAISED: ("报警", "raised"),
    Transition.REACTIVATED: ("再次报警", "active again"),
    Transition.UPDATED: ("更新", "updated"),
    Transition.CLEARED: ("已恢复", "cleared"),
    Transition.ACKNOWLEDGED: ("已确认", "acknowledged"),
    Transition.RESOLVED: ("已解除", "resolved"),
    Transition.SHELVED: ("已搁置", "shelved"),
    Transition.UNSHELVED: ("取消搁置", "unshelved"),
    Transition.OUT_OF_SERVICE: ("停用", "taken out of service"),
    Transition.IN_SERVICE: ("恢复使用", "back in service"),
    Transition.CHATTERING: ("频繁报警，已抑制", "chattering, held"),  # noqa: RUF001
    Transition.RESTORED: ("网关重启后重报", "re-announced after a gateway restart"),
    "escalated": ("已升级通知", "escalated"),
    "valve_changed": ("阀门状态变化", "valve state changed"),
}
_INCIDENT_STATES: Final[_Pairs] = {
    "new": ("新事件", "new"),
    "acknowledged": ("已接警", "acknowledged"),
    "dispatched": ("已派人", "dispatched"),
    "on_site": ("已到场", "on site"),
    "resolved": ("已处置", "resolved"),
    "closed": ("已结案", "closed"),
}
_INCIDENT_TRANSITIONS: Final[_Pairs] = {
    "acknowledge": ("接警", "Acknowledge"),
    "dispatch": ("派人", "Dispatch"),
    "on_site": ("到场", "On site"),
    "resolve": ("处置完毕", "Resolve"),
}
_CATEGORIES: Final[_Pairs] = {
    "emergency": ("紧急事件", "Emergencies"),
    "maintenance": ("维护事项", "Maintenance"),
}
_CAUSES: Final[_Pairs] = {
    "aged_or_damaged_hose": ("软管老化或破损", "aged or damaged hose"),
    "loose_connection": ("接口松动", "loose connection"),
    "valve_fault": ("阀门故障", "valve fault"),
    "detector_fault": ("探测器故障", "detector fault"),
    "cooking_or_false_alarm": ("烹饪或误报", "cooking or false alarm"),
    "user_error": ("用户操作不当", "user error"),
    "other": ("其他", "other"),
}
_VALVE_STATES: Final[_Pairs] = {
    "closed": ("已关闭", "closed"),
    "open": ("开启", "OPEN"),
    "moving": ("动作中", "moving"),
    "fault": ("故障", "fault"),
    "mixed": ("部分关闭", "partly closed"),
    "unknown": ("未知", "unknown"),
}
_SITE_ANSWERS: Final[_Pairs] = {
    "left": ("所有人已撤离", "Everyone has left"),
    "false_alarm": ("是烹饪或误报", "It was cooking / a false alarm"),
    "call_me": ("请给我回电话", "Call me"),
    "need_help": ("我们需要紧急帮助", "We need help now"),
}

# Why a gateway refused a gas company command (docs/gas-company-contract.md, "reason").
_REFUSALS: Final[_Pairs] = {
    "unknown_alarm": ("网关上没有这条报警", "no such alarm at the gateway"),
    "wrong_state": (
        "报警状态不允许：已确认、仍在报警或已关闭",  # noqa: RUF001
        "not in that state: already acknowledged, still active, or closed",
    ),
    "bad_request": ("网关不接受此请求", "not accepted by the gateway"),
    "not_allowed": ("网关不允许此操作", "not allowed by the gateway"),
    "bad_json": ("指令格式错误", "malformed command"),
    "bad_command": ("指令格式错误", "malformed command"),
    "bad_payload": ("指令格式错误", "malformed command"),
    "unauthorised_topic": ("值班员与指令通道不符", "officer does not match the command topic"),
    "unknown_officer": ("网关未授权该值班员", "officer not authorised at the gateway"),
    "retained_command": ("过时的保留指令，未执行", "stale retained command, not applied"),  # noqa: RUF001
    "unavailable": ("网关报警模块不可用", "the gateway's alarms are unavailable"),
}


def _alarm_types() -> _Pairs:
    return {t.value: (info(t).title_zh, info(t).title_en) for t in AlarmType} | {
        "gateway_offline": ("网关离线", "Gateway offline"),
    }


_CATALOGUE: Final[dict[Kind, _Pairs]] = {
    "alarm_type": _alarm_types(),
    "component": {str(k): v for k, v in _COMPONENTS.items()},
    "kit": _KITS,
    "site_type": {str(k): v for k, v in _SITE_TYPES.items()},
    "severity": _SEVERITIES,
    "alarm_state": {str(k): v for k, v in _ALARM_STATES.items()},
    "transition": {str(k): v for k, v in _TRANSITIONS.items()},
    "incident_state": _INCIDENT_STATES,
    "incident_transition": _INCIDENT_TRANSITIONS,
    "category": _CATEGORIES,
    "cause": _CAUSES,
    "valve_state": _VALVE_STATES,
    "site_answer": _SITE_ANSWERS,
    "refusal": _REFUSALS,
}
KINDS: Final[tuple[Kind, ...]] = tuple(_CATALOGUE)


def word(kind: Kind, code: str | None, lang: str) -> str:
    """The word for ``code`` in ``lang`` (``zh``/``zh-CN`` or ``en``). A code the catalogue
    does not know (a rule file's own alarm type, a custom kit) is shown as given: a page must
    never fail on it, and the words test lists every code that reaches a page raw."""
    if code is None:
        return ""
    pair = _CATALOGUE[kind].get(code)
    if pair is None:
        return code
    return pair[1] if lang == "en" else pair[0]


def catalogue(kind: Kind) -> dict[str, tuple[str, str]]:
    """Every code of a kind with its (zh, en) words: for pages' select lists and the tests."""
    return dict(_CATALOGUE[kind])
