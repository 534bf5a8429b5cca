"""Alert texts in plain words, Simplified Chinese by default, English per contact.

Every alert says which site and where, what happened, what the gateway already did, and what to
do now. The valve sentence only claims what is known: a leak's linked valves were *commanded*
closed; "closed" only once every linked valve has reported closed; a site without a linked
valve is told so.

An SMS text is split into the parts a phone network sends (:func:`sms_parts`), counted the way
SMS counts: 160 GSM-7 characters in a single message and 153 in each part of a long one when
every character is in the GSM 03.38 alphabet, else 70 UCS-2 code units and 67 a part. A part
ends on a character boundary: a Chinese character or an emoji is never split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.alarm_types import AlarmType, info
from gateway.model import Alarm
from gateway.registry.model import Site

__all__ = [
    "Message",
    "check_zone",
    "known_type",
    "local_zone",
    "render",
    "render_digest",
    "sms_parts",
    "with_alert_link",
]

_LEAK_LIKE = {
    AlarmType.LEAK_LOW,
    AlarmType.LEAK_HIGH,
    AlarmType.OVERFLOW,
    AlarmType.VALVE_FAILED_TO_CLOSE,
    AlarmType.LEAK_NOT_ISOLATED,
}


# GSM 03.38: the default alphabet (one septet each) and its extension table (escape + one).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
# (single message, each part of a long message): a long message's part gives 7 septets or
# 3 UCS-2 code units to the concatenation header.
_GSM7_LIMITS = (160, 153)
_UCS2_LIMITS = (70, 67)


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


def local_zone(name: str) -> tzinfo:
    """The zone alerts give times in (validated with the settings: see ``check_zone``)."""
    return ZoneInfo(name)


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name: Asia/Shanghai)") from None
    return name


def render(
    alarm: Alarm,
    site: Site | None,
    lang: str,
    *,
    hotline: str,
    zone: tzinfo,
    valve_state: str | None = None,
    unanswered_s: float = 0.0,
) -> Message:
    zh = lang != "en"
    kind = known_type(alarm.alarm_type)
    title_what = _title(kind, alarm, zh=zh)
    site_name = site.name if site else (alarm.site_id or alarm.source)
    lines = [
        _where(site, alarm, zh=zh),
        _what(title_what, alarm, zone, zh=zh),
        _valve(kind, valve_state, zh=zh),
        _todo(kind, hotline, zh=zh),
    ]
    if unanswered_s >= 60:
        minutes = int(unanswered_s // 60)
        lines.insert(
            0,
            f"已报警{minutes}分钟，仍无人确认。"
            if zh
            else f"Not acknowledged after {minutes} min.",
        )
    lines.append(f"报警编号：{alarm.alarm_id}" if zh else f"Alarm id: {alarm.alarm_id}")
    title = f"【{title_what}】{site_name}" if zh else f"[{title_what}] {site_name}"
    return Message(title, "\n".join(line for line in lines if line))


def with_alert_link(message: Message, url: str, lang: str) -> Message:
    """The alert page's link as the alert's last line: what happened, live, and one-tap answers
    ("everyone has left") for the people at the site."""
    line = f"查看详情并回复：{url}" if lang != "en" else f"Details, and tell us you are safe: {url}"
    return Message(message.title, f"{message.body}\n{line}")


def known_type(name: str) -> AlarmType | None:
    """The catalogue's type; None for a type only a rule file knows."""
    return AlarmType(name) if name in AlarmType.__members__.values() else None


def _title(kind: AlarmType | None, alarm: Alarm, *, zh: bool) -> str:
    if kind is None:
        return alarm.message or alarm.alarm_type
    return info(kind).title_zh if zh else info(kind).title_en


def _where(site: Site | None, alarm: Alarm, *, zh: bool) -> str:
    if site is None:
        return (
            f"地点：{alarm.site_id or alarm.source}"
            if zh
            else f"Site: {alarm.site_id or alarm.source}"
        )
    if zh:
        return f"地点：{site.name}，{site.address}（{site.district}）"
    return f"Site: {site.name}, {site.address} ({site.district})"


def _what(title: str, alarm: Alarm, zone: tzinfo, *, zh: bool) -> str:
    at = alarm.raised_at.astimezone(zone).strftime("%H:%M:%S")
    lel = alarm.readings.get("lel_pct")
    level = ""
    if isinstance(lel, int | float) and not isinstance(lel, bool):
        level = f"，浓度 {lel:g} %LEL" if zh else f", {lel:g} %LEL"
    return f"{at} 发生{title}{level}。" if zh else f"{title} at {at}{level}."


def _valve(kind: AlarmType | None, state: str | None, *, zh: bool) -> str:
    """``state``: the linked valves' summary (None: no valve is linked to the alarm)."""
    if kind is AlarmType.VALVE_FAILED_TO_CLOSE:
        return (
            "网关多次发出关阀指令，燃气切断阀未能关闭！"
            if zh
            else "The gateway commanded the shut-off valve closed several times: it did NOT close!"
        )
    if state == "closed":
        return "燃气切断阀已关闭。" if zh else "The shut-off valve is closed."
    if kind is None or not info(kind).closes_valves:
        return ""
    if state is None:
        return (
            "此处没有联动的燃气切断阀：如能确保安全，请关闭气瓶角阀。"
            if zh
            else "No shut-off valve is linked here: if it is safe, close the cylinder by hand."
        )
    return (
        "网关已发出关闭燃气切断阀的指令，尚未确认关闭。"
        if zh
        else "The gateway has commanded the shut-off valve to close; not yet confirmed closed."
    )


def _todo(kind: AlarmType | None, hotline: str, *, zh: bool) -> str:
    call_zh = f"燃气公司 {hotline} 或 119" if hotline else "119"
    call_en = f"the gas company on {hotline}, or 119" if hotline else "119"
    if kind in _LEAK_LIKE:
        return (
            f"请立即：所有人离开现场；不要点火、不要开关任何电器（包括电灯、排风扇）、不要打电话；"
            f"到室外安全处拨打{call_zh}。"
            if zh
            else "Now: everyone leave the premises; no flames, do not switch anything on or off "
            f"(lights, fans), do not phone inside; once outside, call {call_en}."
        )
    if kind is not None and info(kind).maintenance:
        return (
            f"请联系燃气公司安排检修{'：' + hotline if hotline else ''}。"
            if zh
            else f"Please have the kit serviced{': call ' + hotline if hotline else ''}."
        )
    return (
        f"请检查现场设备；如闻到燃气味，立即离开并拨打{call_zh}。"
        if zh
        else f"Please check the kit on site; if you smell gas, leave at once and call {call_en}."
    )


def render_digest(
    alarms: Sequence[Alarm], sites: Mapping[str, Site], lang: str, day: date, zone: tzinfo
) -> Message:
    """The daily list of open maintenance alarms (coverage gaps), one line per alarm."""
    zh = lang != "en"
    lines = []
    for alarm in alarms:
        site = sites.get(alarm.site_id or "")
        where = (
            f"{site.name}（{site.address}）"
            if site and zh
            else (f"{site.name} ({site.address})" if site else (alarm.site_id or alarm.source))
        )
        what = _title(known_type(alarm.alarm_type), alarm, zh=zh)
        since = alarm.raised_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        device = alarm.device_id or "-"
        lines.append(
            f"- {where}：{what}，设备 {device}，自 {since}"
            if zh
            else f"- {where}: {what}, device {device}, since {since}"
        )
    count = len(alarms)
    if zh:
        title = f"【燃气安全日报】{day.isoformat()} 待处理维护告警 {count} 条"
    else:
        title = f"[Daily digest] {day.isoformat()}: {count} open maintenance alarm(s)"
    return Message(title, "\n".join(lines))


def sms_parts(text: str) -> tuple[str, ...]:
    """``text`` as the SMS parts a network sends, each cut on a character boundary."""
    if all(c in _GSM7 or c in _GSM7_EXTENSION for c in text):
        cost, (single, part) = _gsm7_septets, _GSM7_LIMITS
    else:
        cost, (single, part) = _ucs2_units, _UCS2_LIMITS
    if sum(map(cost, text)) <= single:
        return (text,)
    parts: list[str] = []
    start, used = 0, 0
    for i, char in enumerate(text):
        if used + cost(char) > part:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost(char)
    parts.append(text[start:])
    return tuple(parts)


def _gsm7_septets(char: str) -> int:
    return 2 if char in _GSM7_EXTENSION else 1


def _ucs2_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1  # outside the BMP: a UTF-16 surrogate pair
