"""Line protocol encoding: every name survives, nothing is injected, bad values are refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.telemetry import Point, encode
from gateway.telemetry.lineproto import time_ns

# --- a reference reader, written from the line protocol spec, independent of the encoder ------


def _split(text: str, seps: str, quotes: bool = False) -> tuple[list[str], str]:
    """Split ``text`` at unescaped ``seps`` up to the first unescaped space; (parts, rest)."""
    parts, current, i, quoted = [], "", 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            i += 2
            continue
        if quotes and ch == '"':
            quoted = not quoted
        elif not quoted and ch == " ":
            parts.append(current)
            return parts, text[i + 1 :]
        elif not quoted and ch in seps:
            parts.append(current)
            current = ""
            i += 1
            continue
        current += ch
        i += 1
    parts.append(current)
    return parts, ""


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def _key_value(pair: str) -> tuple[str, str]:
    i = 0
    while pair[i] != "=":
        i += 2 if pair[i] == "\\" else 1
    return pair[:i], pair[i + 1 :]


def read_line(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    assert "\n" not in line
    assert "\r" not in line
    head, rest = _split(line, ",")
    fields_part, stamp = _split(rest, ",", quotes=True)
    measurement, *tag_pairs = head
    tags = {_unescape(k): _unescape(v) for k, v in map(_key_value, tag_pairs)}
    fields = {_unescape(k): v for k, v in map(_key_value, fields_part)}
    return _unescape(measurement), tags, fields, int(stamp)


def _string_field(raw: str) -> str:
    assert raw.startswith('"')
    assert raw.endswith('"')
    return _unescape(raw[1:-1])


def _cleaned(text: str) -> str:
    return "".join("\ufffd" if ord(c) < 32 or ord(c) == 127 else c for c in text)


def _cleaned_name(text: str) -> str:
    return _cleaned(text).replace("\\", "\uff3c")


names = st.text(min_size=1, max_size=30)
values = st.text(min_size=1, max_size=30)


@given(
    tags=st.dictionaries(names, values, max_size=5),
    text=st.text(max_size=40),
    number=st.floats(allow_nan=False, allow_infinity=False),
    integer=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    stamp=st.integers(min_value=0, max_value=2**62),
)
def test_any_names_round_trip_as_one_line(tags, text, number, integer, stamp):
    point = Point("kit_report", tags, {"note": text, "x": number, "n": integer}, stamp)
    measurement, got_tags, fields, got_stamp = read_line(encode(point))
    assert measurement == "kit_report"
    assert got_tags == {_cleaned_name(k): _cleaned_name(v) for k, v in tags.items()}
    assert set(fields) == {"note", "x", "n"}
    assert _string_field(fields["note"]) == _cleaned(text)
    assert float(fields["x"]) == number
    assert fields["n"] == f"{integer}i"
    assert got_stamp == stamp


def test_a_site_name_cannot_forge_a_second_point():
    forged = 'x\nkit_report,site_id=other lel_pct=99 1"'
    line = encode(Point("kit_report", {"site_id": forged}, {"lel_pct": 1.0}, 5))
    assert line.count("\n") == 0
    _, tags, fields, _ = read_line(line)
    assert tags == {"site_id": _cleaned_name(forged)}
    assert fields == {"lel_pct": "1.0"}


def test_a_trailing_backslash_cannot_swallow_the_separator():
    line = encode(Point("m", {"a": "ends\\", "b": "2"}, {"f": 'q"\\'}, 1))
    _, tags, fields, _ = read_line(line)
    assert tags == {"a": "ends\uff3c", "b": "2"}  # a tag's backslash is stored as U+FF3C
    assert _string_field(fields["f"]) == 'q"\\'


def test_field_types_are_distinct_and_empty_tags_are_left_out():
    line = encode(Point("m", {"site_id": "s", "district": ""}, {"b": True, "i": 1, "f": 1.0}, 7))
    assert line == "m,site_id=s b=true,f=1.0,i=1i 7"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"x": math.nan}, "not a finite number"),
        ({"x": math.inf}, "not a finite number"),
        ({"x": 2**63}, "64 bits"),
        ({}, "at least one field"),
        ({"": 1}, "must not be empty"),
    ],
)
def test_points_influx_would_refuse_are_refused_here(fields, message):
    with pytest.raises(ValueError, match=message):
        encode(Point("m", {}, fields, 1))


def test_time_is_exact_to_the_microsecond_and_must_be_aware():
    at = datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=UTC)
    assert time_ns(at) == 1_795_860_000_123_456_000
    assert time_ns(at.astimezone(timezone(timedelta(hours=8)))) == time_ns(at)
    with pytest.raises(ValueError, match="no time zone"):
        time_ns(datetime(2026, 11, 28))
