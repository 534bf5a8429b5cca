"""The alert page link: round trip, any alteration refused, expiry, length fit for an SMS."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.alert_link import AlertGrant, InvalidAlertLink, issue, link, verify

SECRET = b"a shared secret of the gateway and the center"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ULID_ID = "gw-xuhui-01-01M8H09XPA38TN4GSSMJYWZEA8"

alarm_ids = st.one_of(
    st.text(min_size=1, max_size=60),
    st.builds(
        lambda gw, ulid: f"{gw}-{ulid}",
        st.text(min_size=1, max_size=20),
        st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26).filter(
            lambda u: u[0] <= "7"
        ),
    ),
)


def _grant(alarm_id: str = ULID_ID, contact: int = 0, lang: str = "zh") -> AlertGrant:
    return AlertGrant(alarm_id, contact, lang, NOW + timedelta(hours=24))


@given(alarm_ids, st.integers(0, 255), st.sampled_from(["zh", "en"]))
def test_round_trip(alarm_id: str, contact: int, lang: str) -> None:
    grant = _grant(alarm_id, contact, lang)
    assert verify(SECRET, issue(SECRET, grant), NOW) == grant


@given(st.data())
def test_any_altered_byte_is_refused(data: st.DataObject) -> None:
    raw = bytearray(base64.urlsafe_b64decode(issue(SECRET, _grant()) + "=="))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidAlertLink) as refused:
        verify(SECRET, altered, NOW)
    assert refused.value.reason in {"forged", "malformed"}


@given(st.text(max_size=80))
def test_garbage_is_refused_never_crashes(token: str) -> None:
    with pytest.raises(InvalidAlertLink):
        verify(SECRET, token, NOW)


def test_another_secret_is_forged() -> None:
    with pytest.raises(InvalidAlertLink, match="forged"):
        verify(b"someone else's secret", issue(SECRET, _grant()), NOW)


def test_expired_after_its_time_not_before() -> None:
    token = issue(SECRET, _grant())
    assert verify(SECRET, token, NOW + timedelta(hours=23, minutes=59)).alarm_id == ULID_ID
    with pytest.raises(InvalidAlertLink, match="expired"):
        verify(SECRET, token, NOW + timedelta(hours=24))


def test_short_enough_for_an_sms() -> None:
    token = issue(SECRET, _grant())
    assert len(token) <= 64  # 38-character alarm id
    assert link("https://gc.example/", token) == f"https://gc.example/a/{token}"
    assert all(c.isalnum() or c in "-_" for c in token)
