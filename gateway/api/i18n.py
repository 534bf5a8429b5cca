# ruff: noqa: RUF001 - Chinese punctuation and the times sign on purpose
"""The console's words in Simplified Chinese (the default) and English, and the way it says
times: local (the configured zone, labelled), ages relative with the absolute time on hover.
Plain words: the people reading them are on duty, often on a phone. Codes (alarm types,
components, kits, states, transitions) are named by :mod:`gateway.words`, never here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo

from gateway.words import Kind, word

__all__ = ["LANGS", "Lang", "Speaker", "text", "zone_label"]

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
        "登录失败次数太多，请几分钟后再试",
        "Too many failed logins; wait a few minutes",
    ),
    "no_alarms": ("没有未处理的报警", "No open alarms"),
    "no_match": ("没有符合筛选条件的事件", "Nothing matches the filters"),
    "severity": ("级别", "Severity"),
    "age": ("已过", "Age"),
    "site": ("地点", "Site"),
    "incident": ("事件", "Incident"),
    "contact": ("联系人", "Contact"),
    "did": ("网关已做", "Gateway did"),
    "valves": ("阀门", "Valve"),
    "gas": ("燃气浓度", "Gas level"),
    "step": ("通知层级", "Escalation"),
    "state": ("状态", "State"),
    "actions": ("处理", "Actions"),
    "note": ("备注", "Note"),
    "acknowledge": ("确认", "Acknowledge"),
    "acknowledge_all": ("全部确认", "Acknowledge all"),
    "resolve": ("解除", "Resolve"),
    "shelve": ("搁置", "Shelve"),
    "minutes": ("分钟", "minutes"),
    "stopped": ("通知已停止", "notifying stopped"),
    "step_n": ("已通知到第 {n} 级", "notified up to step {n}"),
    "unknown": ("未知", "unknown"),
    "kit": ("套件", "Kit"),
    "complete": ("齐全", "complete"),
    "missing": ("缺少", "missing"),
    "or": ("或", "or"),
    "components": ("部件", "Components"),
    "service_life": ("使用年限", "Service life"),
    "installed": ("安装于 {day}", "installed {day}"),
    "months": ("{n} 个月", "{n} months"),
    "past_service_life": ("已超期", "past service life"),
    "cylinders": ("钢瓶", "Cylinders"),
    "capacity": ("容量", "Capacity"),
    "inspection_due": ("下次检验", "Next inspection"),
    "overdue": ("已逾期", "overdue"),
    "devices": ("设备", "Devices"),
    "device_id": ("编号", "ID"),
    "online": ("在线", "online"),
    "offline": ("离线", "offline"),
    # Registered, but no report since the gateway started (its start grace still runs).
    "not_heard_yet": ("启动后尚未收到上报", "not heard yet"),
    "passive": ("无源部件", "passive"),
    "last_report": ("最近上报", "Last report"),
    "battery": ("电池", "Battery"),
    "signal": ("信号", "Signal"),
    "mains": ("市电", "mains"),
    "low_battery": ("电量低", "low battery"),
    "recent_alarms": ("近 7 天的报警", "Alarms in the last 7 days"),
    "no_recent": ("近 7 天没有报警", "No alarms in the last 7 days"),
    "summary": (
        "在线 {online} · 离线 {offline} · 尚未收到上报 {waiting} · 电量低 {low}",
        "{online} online · {offline} offline · {waiting} not heard yet · {low} low battery",
    ),
    "read_only": ("只读", "read-only"),
    "live": ("实时更新", "live"),
    "live_down": ("连接中断，正在重连", "connection lost, reconnecting"),
    # The queue: incidents, tabs, filters
    "all": ("全部", "all"),
    "district": ("区域", "District"),
    "type": ("类型", "Type"),
    "search": ("搜索", "Search"),
    "search_hint": ("地点、地址、电话或设备编号", "site, address, phone or device ID"),
    "filter": ("筛选", "Filter"),
    "clear_filters": ("清除筛选", "Clear"),
    "alarms_inside": ("{n} 条报警", "{n} alarms"),
    "opened": ("开始于", "Started"),
    "location": ("位置", "Location"),
    "map": ("在地图中打开", "open in a map"),
    "no_location": ("登记信息中没有坐标", "no coordinates in the registry"),
    # The valve, first and in words
    "valve_closed_at": ("已关闭，{at} 确认", "closed, confirmed {at}"),
    "valve_closed": ("已关闭", "closed"),
    "valve_open_unanswered": (
        "仍开启：{n} 次关阀指令未换来“已关闭”",
        "OPEN — {n} close commands not answered with closed",
    ),
    "valve_open": ("仍开启", "OPEN"),
    "valve_not_heard": ("阀门未上报状态", "valve not heard from"),
    "valve_not_heard_cmds": (
        "阀门未上报状态，{n} 次关阀指令未确认",
        "valve not heard from — {n} close commands unconfirmed",
    ),
    "valve_other": ("{state}（{at}）", "{state} ({at})"),
    "no_valve": ("无联动阀门", "no linked valve"),
    # What the gateway did, short and honest: a command's "ok" is "received", never "closed".
    "cmd_line": ("发出关阀指令 {n} 次 → {valve}", "close command sent {n}× → {valve}"),
    "cmd_received": ("设备已收到 {n} 次", "received {n}×"),
    "cmd_refused": ("被拒 {n} 次", "refused {n}×"),
    "cmd_no_answer": ("无应答 {n} 次", "no answer {n}×"),
    "notify_line": ("{channel} → {recipient}：{result}", "{channel} → {recipient}: {result}"),
    "gasco_line": ("已报告燃气公司：{result}", "reported to the gas company: {result}"),
    "nothing_done": ("尚无动作", "nothing yet"),
    "nobody_line": (
        "通知已跳过：未配置接收人",
        "notification skipped: nobody configured to receive it",
    ),
    "why_no_channel": ("（该通道未配置）", "(channel not configured)"),
    "why_no_address": ("（没有该通道的地址）", "(no address for this channel)"),
    # Alerting
    "sound_banner": (
        "点击此处开启报警声音和桌面通知",
        "Click here to turn on the alarm sound and desktop notifications",
    ),
    "sound_on": ("报警声音已开启", "alarm sound on"),
    "new_emergency": ("新的紧急报警", "New emergency"),
    # Errors
    "error_title": ("操作未完成", "Not done"),
    "back": ("返回报警列表", "Back to the alarms"),
    "try_again": ("再试一次", "Try again"),
    "your_note": ("你填写的备注（已保留）", "Your note (kept)"),
    "err_already_acked": ("已由 {by} 于 {at} 确认", "already acknowledged by {by} at {at}"),
    "err_closed": ("该报警已由 {by} 于 {at} 关闭", "already closed by {by} at {at}"),
    "err_still_active": (
        "报警条件仍然存在，恢复后才能解除",
        "the condition is still present: it can be resolved once it clears",
    ),
    "err_latched": (
        "安全类报警不能搁置，请确认",
        "a safety alarm cannot be shelved: acknowledge it instead",
    ),
    "err_need_reason": ("搁置需要填写原因（备注）", "shelving needs a reason in the note"),
    "err_unknown_alarm": ("没有这条报警", "no such alarm"),
    "err_not_shelved": ("该报警没有被搁置", "the alarm is not shelved"),
    "err_store": ("未能记录，请重试", "could not be recorded: try again"),
    "err_forbidden": ("你的角色不能执行此操作", "your role may not do this"),
    "err_csrf": (
        "页面已过期（安全令牌不符），请返回后重试",
        "the page was out of date (security token): go back and try again",
    ),
    "err_no_action": ("没有这个操作", "no such action"),
    "err_other": ("操作被拒绝", "the operation was refused"),
    "not_found": ("没有这个地点", "no such site"),
    # Roles and channels
    "duty_officer": ("值班员", "duty officer"),
    "supervisor": ("主管", "supervisor"),
    "regulator": ("监管人员", "regulator"),
    "installer": ("安装人员", "installer"),
    "site_user": ("用户", "site user"),
    "ch_sms": ("短信", "SMS"),
    "ch_voice": ("语音电话", "voice call"),
    "ch_email": ("邮件", "email"),
    "ch_wecom": ("企业微信", "WeCom"),
    "ch_dingtalk": ("钉钉", "DingTalk"),
    "ch_webhook": ("推送", "webhook"),
    "res_queued": ("排队中", "queued"),
    "res_sent": ("已发送", "sent"),
    "res_failed": ("发送失败", "failed"),
    "res_error": ("发送出错，重试中", "error, retrying"),
    "res_cancelled": ("已取消（已确认）", "cancelled (acknowledged)"),
    "res_skipped": ("已跳过", "skipped"),
    "res_accepted": ("已接受", "accepted"),
    "res_refused": ("被拒绝", "refused"),
    "rel_now": ("刚刚", "just now"),
    "rel_s": ("{n}秒前", "{n} s ago"),
    "rel_m": ("{n}分钟前", "{n} min ago"),
    "rel_h": ("{n}小时{m}分钟前", "{n} h {m} min ago"),
    "rel_d": ("{n}天前", "{n} days ago"),
}


def text(key: str, lang: Lang) -> str:
    """The word for ``key`` in ``lang``; an unknown key shows as itself (never an error)."""
    pair = _WORDS.get(key)
    if pair is None:
        return key
    return pair[0] if lang == "zh-CN" else pair[1]


# The zone's name as people say it (the SMS's local time, the center's pages, this console).
_ZONE_NAMES: Final[dict[str, tuple[str, str]]] = {
    "Asia/Shanghai": ("北京时间", "Beijing time"),
    "Asia/Hong_Kong": ("香港时间", "Hong Kong time"),
    "Asia/Taipei": ("台北时间", "Taipei time"),
}


def zone_label(at: datetime, lang: Lang) -> str:
    """The label of the zone ``at`` is in, one per language wherever a time is shown: its name
    as people say it ("北京时间", "Beijing time"), else its abbreviation ("IST"), else "UTC+4"
    where the zone has only a number."""
    named = _ZONE_NAMES.get(getattr(at.tzinfo, "key", ""))
    if named is not None:
        return named[0] if lang == "zh-CN" else named[1]
    name = at.strftime("%Z")
    if name and name[0] not in "+-":
        return name
    offset = at.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    hours, rest = divmod(abs(minutes), 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


@dataclass(frozen=True, slots=True)
class Speaker:
    """How one page speaks: its language and the local zone its times are given in."""

    lang: Lang
    zone: tzinfo

    @classmethod
    def of(cls, lang: Lang, zone_name: str) -> Speaker:
        return cls(lang, ZoneInfo(zone_name))

    def t(self, key: str, **values: object) -> str:
        said = text(key, self.lang)
        return said.format(**values) if values else said

    def w(self, kind: Kind, code: str | None) -> str:
        return word(kind, code, self.lang)

    def clock(self, at: datetime | None) -> str:
        """ "12:03:05 北京时间" (today's times: the duty officer knows the day)."""
        if at is None:
            return "-"
        local = at.astimezone(self.zone)
        return f"{local:%H:%M:%S} {zone_label(local, self.lang)}"

    def stamp(self, at: datetime | None) -> str:
        """ "2026-12-04 12:03:05 Beijing time"."""
        if at is None:
            return "-"
        local = at.astimezone(self.zone)
        return f"{local:%Y-%m-%d %H:%M:%S} {zone_label(local, self.lang)}"

    def ago(self, at: datetime, now: datetime) -> str:
        """ "3 min ago" / "3分钟前"."""
        seconds = max(0, int((now - at).total_seconds()))
        if seconds < 10:
            return self.t("rel_now")
        if seconds < 60:
            return self.t("rel_s", n=seconds)
        minutes = seconds // 60
        if minutes < 60:
            return self.t("rel_m", n=minutes)
        if minutes < 24 * 60:
            return self.t("rel_h", n=minutes // 60, m=minutes % 60)
        return self.t("rel_d", n=minutes // (24 * 60))
