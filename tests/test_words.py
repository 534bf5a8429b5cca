"""The one catalogue of words: every code of every kind has a Chinese and an English word, the
Chinese word is Chinese, and the alarm titles are the SMS titles."""

from __future__ import annotations

import re

import pytest

from gateway.alarm_types import AlarmType, info
from gateway.model import AlarmState, Transition
from gateway.registry.model import ComponentType, SiteType
from gateway.words import KINDS, Kind, catalogue, word

_HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("kind", KINDS)
def test_every_code_has_both_words_and_the_chinese_one_is_chinese(kind: Kind) -> None:
    for code, (zh, en) in catalogue(kind).items():
        assert en, code
        assert _HAN.search(zh), f"{kind}/{code}: {zh!r} is not Chinese"


@pytest.mark.parametrize(
    ("kind", "codes"),
    [
        ("alarm_type", [t.value for t in AlarmType]),
        ("component", [c.value for c in ComponentType]),
        ("site_type", [s.value for s in SiteType]),
        ("alarm_state", [s.value for s in AlarmState]),
        ("transition", [t.value for t in Transition]),
    ],
)
def test_every_code_the_gateway_has_is_in_the_catalogue(kind: Kind, codes: list[str]) -> None:
    assert set(codes) <= set(catalogue(kind))


def test_alarm_titles_are_the_sms_titles_and_unknown_codes_pass_through() -> None:
    assert word("alarm_type", "leak_high", "zh-CN") == info(AlarmType.LEAK_HIGH).title_zh
    assert word("alarm_type", "leak_high", "en") == info(AlarmType.LEAK_HIGH).title_en
    assert word("alarm_type", "a_rule_files_own_type", "zh") == "a_rule_files_own_type"
    assert word("valve_state", None, "en") == ""
