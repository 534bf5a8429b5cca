"""The console's words in Simplified Chinese (the default) and English. Plain words: the
people reading them are on duty, often on a phone."""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["LANGS", "Lang", "text"]

Lang = Literal["zh-CN", "en"]
LANGS: Final[tuple[Lang, ...]] = ("zh-CN", "en")

_WORDS: Final[dict[str, tuple[str, str]]] = {
    "title": ("燃气安全网关", "Gas safety gateway"),
    "alarms": ("报警", "Alarms"),
    "fleet": ("设备", "Devices"),
    "logout": ("退出", "Log out"),
    "login": ("登录", "Log in"),
    "name": ("用户名", "Name"),
    "password": ("密码", "Password"),
    "login_failed": ("用户名或密码不对", "Wrong name or password"),
    "login_limited": (
        "登录失败次数太多，请几分钟后再试",  # noqa: RUF001 - Chinese punctuation on purpose
        "Too many failed logins; wait a few minutes",
    ),
    "no_alarms": ("没有未处理的报警", "No open alarms"),
    "severity": ("级别", "Severity"),
    "age": ("已过", "Age"),
    "site": ("地点", "Site"),
    "contact": ("联系人", "Contact"),
    "did": ("网关已做", "Gateway did"),
    "valves": ("阀门", "Valves"),
    "gas": ("燃气浓度", "Gas level"),
    "step": ("通知层级", "Escalation"),
    "state": ("状态", "State"),
    "actions": ("处理", "Actions"),
    "note": ("备注", "Note"),
    "acknowledge": ("确认", "Acknowledge"),
    "resolve": ("解除", "Resolve"),
    "shelve": ("搁置", "Shelve"),
    "minutes": ("分钟", "minutes"),
    "stopped": ("已停止", "stopped"),
    "critical": ("紧急", "critical"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "unack_active": ("未确认", "not acknowledged"),
    "ack_active": ("已确认", "acknowledged"),
    "unack_cleared": ("已恢复，未确认", "cleared, not acknowledged"),  # noqa: RUF001 - Chinese punctuation on purpose
    "normal": ("已关闭", "closed"),
    "open": ("开", "open"),
    "closed": ("关", "closed"),
    "moving": ("动作中", "moving"),
    "fault": ("故障", "fault"),
    "not_heard": ("未收到", "not heard"),
    "kit": ("套件", "Kit"),
    "complete": ("齐全", "complete"),
    "missing": ("缺少", "missing"),
    "components": ("部件", "Components"),
    "service_life": ("使用年限", "Service life"),
    "past_service_life": ("已超期", "past service life"),
    "cylinders": ("钢瓶", "Cylinders"),
    "inspection_due": ("下次检验", "Next inspection"),
    "overdue": ("已逾期", "overdue"),
    "devices": ("设备", "Devices"),
    "online": ("在线", "online"),
    "offline": ("离线", "offline"),
    # Registered, but no report since the gateway started (its start grace still runs).
    "not_heard_yet": ("启动后尚未收到上报", "not heard yet"),
    "unknown": ("未知", "unknown"),
    "passive": ("无源部件", "passive"),
    "last_report": ("最近上报", "Last report"),
    "battery": ("电池", "Battery"),
    "signal": ("信号", "Signal"),
    "low_battery": ("电量低", "low battery"),
    "recent_alarms": ("近 7 天的报警", "Alarms in the last 7 days"),
    "no_recent": ("近 7 天没有报警", "No alarms in the last 7 days"),
    "summary": (
        "在线 {online} · 离线 {offline} · 尚未收到上报 {waiting} · 电量低 {low}",
        "{online} online · {offline} offline · {waiting} not heard yet · {low} low battery",
    ),
    "read_only": ("只读", "read-only"),
    "live": ("实时更新", "live"),
}


def text(key: str, lang: Lang) -> str:
    """The word for ``key`` in ``lang``; an unknown key shows as itself (never an error)."""
    pair = _WORDS.get(key)
    if pair is None:
        return key
    return pair[0] if lang == "zh-CN" else pair[1]
