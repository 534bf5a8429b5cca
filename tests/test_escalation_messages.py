"""Alert texts: plain words, the right language, and only what is known about the valve."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from gateway.escalation.messages import local_zone, render, sms_parts
from gateway.events import Severity
from gateway.model import Alarm, AlarmState
from tests.support.escalation_kit import SITE_ID, registry

AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def alarm(alarm_type: str = "leak_high", lel: float | None = 55.0) -> Alarm:
    readings = {"lel_pct": lel} if lel is not None else {}
    return Alarm(
        "gw1-X",
        1,
        "1a2b3c4d",
        alarm_type,
        SITE_ID,
        "1a2b3c4d",
        "r",
        Severity.CRITICAL,
        AlarmState.UNACK_ACTIVE,
        True,
        True,
        "gas",
        MappingProxyType(readings),
        AT,
        AT,
    )


def body(a: Alarm, lang: str = "zh", valve: str | None = "unknown", **kw: float) -> str:
    site = registry().site(SITE_ID)
    message = render(
        a, site, lang, hotline="96777", zone=local_zone("Asia/Shanghai"), valve_state=valve, **kw
    )
    return f"{message.title}\n{message.body}"


@pytest.mark.parametrize(
    ("valve", "zh", "en"),
    [
        ("closed", "燃气切断阀已关闭", "The shut-off valve is closed"),
        ("open", "尚未确认关闭", "not yet confirmed closed"),
        ("unknown", "尚未确认关闭", "not yet confirmed closed"),
        (None, "没有联动的燃气切断阀", "No shut-off valve is linked here"),
    ],
)
def test_the_valve_sentence_claims_only_what_is_known(valve: str | None, zh: str, en: str) -> None:
    assert zh in body(alarm(), "zh", valve)
    assert en in body(alarm(), "en", valve)


def test_a_leak_says_where_what_when_and_what_to_do() -> None:
    text = body(alarm())
    assert text.startswith("【燃气泄漏(高报)】老王饭店\n")
    assert "地点：老王饭店，漕溪北路 88 号（Xuhui）" in text  # noqa: RUF001
    assert "18:00:00 发生燃气泄漏(高报)，浓度 55 %LEL。" in text  # noqa: RUF001 (local time)
    assert "离开现场" in text
    assert "不要点火" in text
    assert "96777" in text
    assert "119" in text
    english = body(alarm(), "en")
    assert english.startswith("[Gas leak (high level)] 老王饭店\n")
    assert "no flames" in english
    assert "call the gas company on 96777, or 119" in english


def test_a_failed_valve_and_an_unanswered_alarm_say_so() -> None:
    text = body(alarm("valve_failed_to_close", lel=None), unanswered_s=620)
    assert "燃气切断阀未能关闭" in text
    assert "已报警10分钟，仍无人确认" in text  # noqa: RUF001
    assert "浓度" not in text


def test_maintenance_asks_for_service_not_evacuation() -> None:
    text = body(alarm("low_battery", lel=None), valve=None)
    assert "电池电量低" in text
    assert "检修" in text
    assert "离开现场" not in text
    assert "切断阀" not in text


# --- SMS parts: counted as SMS counts, cut on character boundaries --------------------------


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_a_chinese_alert_is_split_into_ucs2_parts_of_67() -> None:
    text = body(alarm())
    parts = sms_parts(text)
    assert "".join(parts) == text  # nothing lost, nothing added
    assert len(parts) == -(-_utf16_units(text) // 67)  # as few parts as SMS needs
    assert all(_utf16_units(p) <= 67 for p in parts)


def test_single_message_limits_are_70_ucs2_and_160_gsm7() -> None:
    assert sms_parts("燃" * 70) == ("燃" * 70,)
    assert [len(p) for p in sms_parts("燃" * 71)] == [67, 4]
    assert sms_parts("a" * 160) == ("a" * 160,)
    assert [len(p) for p in sms_parts("a" * 161)] == [153, 8]
    # One character outside GSM 03.38 makes the whole text UCS-2.
    assert [len(p) for p in sms_parts("a" * 100 + "é" + "ç")] == [67, 35]


def test_extension_characters_and_emoji_count_twice_and_stay_whole() -> None:
    assert sms_parts("€" * 80) == ("€" * 80,)  # 160 septets: escape + code each
    assert [len(p) for p in sms_parts("€" * 81)] == [76, 5]  # 152 septets, 153 would split one
    flames = "🔥" * 40  # each a UTF-16 surrogate pair: 80 code units
    parts = sms_parts(flames)
    assert [len(p) for p in parts] == [33, 7]
    assert "".join(parts) == flames
