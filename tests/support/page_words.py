"""What a person reads on a page, checked for raw codes and for the other language: shared by the
gateway console's words test and the center's console walk."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["UNITS", "WORD", "chinese_in_english", "english_in_chinese", "raw_codes"]

WORD: Final = r"[A-Za-z][A-Za-z0-9_\-'.]*"
# ASCII a Chinese page may show: units, a zone's offset, the other language's name (a zone
# with a name has it in Chinese: "北京时间", never "CST").
UNITS: Final = frozenset({"LEL", "mV", "dBm", "Pa", "kg", "UTC", "English"})


def raw_codes(text: str, codes: Iterable[str]) -> list[str]:
    """Codes shown as text: snake_case ones anywhere (plain words like "tamper" are English)."""
    known = frozenset(codes)
    return sorted({w for w in re.findall(r"[a-z][a-z0-9_]*", text) if w in known and "_" in w})


def english_in_chinese(text: str, allowed: Iterable[str], min_letters: int = 1) -> list[str]:
    """ASCII words of at least ``min_letters`` letters that are not ``allowed`` names, units or
    ids (an id has a digit)."""
    passing = frozenset(allowed) | UNITS
    return sorted({
        w for w in re.findall(WORD, text)
        if w not in passing and not _is_id(w) and sum(c.isalpha() for c in w) >= min_letters
    })  # fmt: skip


def chinese_in_english(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """Runs of Chinese characters and punctuation (CJK and fullwidth) other than the language
    switch and ``allowed`` names."""
    runs = re.findall(r"[\u4e00-\u9fff\u3000-\u303f\uff01-\uff1f]+", text)
    return sorted(set(runs) - {"中文", *allowed})


def _is_id(word: str) -> bool:
    return any(ch.isdigit() for ch in word)
