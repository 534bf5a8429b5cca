"""central/grouping.py: the incident rules as pure functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from central import grouping
from gateway.alarm_types import AlarmType, info
from gateway.words import catalogue

severities = st.sampled_from([*grouping.SEVERITIES, "bogus"])
valves = st.sampled_from([None, "open", "closed", "mixed", "moving", "fault", "unknown", "novel"])


def test_leaks_and_failures_are_emergencies_and_upkeep_is_maintenance() -> None:
    for t in ("leak_low", "leak_high", "valve_failed_to_close", "gas_rising", "gateway_offline"):
        assert grouping.category(t, "low") == "emergency"
    for t in ("low_battery", "past_service_life", "inspection_overdue", "device_offline", "tamper"):
        assert grouping.category(t, "critical") == "maintenance"


def test_every_gateway_alarm_type_has_a_category_agreeing_with_the_gateway() -> None:
    for t in AlarmType:
        kind = grouping.category(t.value, info(t).severity.value)
        # the gateway's own maintenance flag never makes a call-out
        assert not (info(t).maintenance and kind == "emergency"), t


@given(st.text(min_size=1), severities)
def test_an_unknown_type_goes_by_its_severity(alarm_type: str, severity: str) -> None:
    kind = grouping.category(alarm_type, severity)
    if alarm_type in grouping.EMERGENCY_TYPES or alarm_type in {t.value for t in AlarmType}:
        return
    assert kind == ("emergency" if severity in ("critical", "high") else "maintenance")


@given(st.lists(severities))
def test_highest_is_the_most_urgent_whatever_the_order(items: list[str]) -> None:
    top = grouping.highest(items)
    rank = grouping.severity_rank
    assert rank(top) == rank(grouping.highest(list(reversed(items))))
    assert all(rank(s) <= rank(top) for s in items)
    assert top in items or (not items and top == "info")
    if "critical" in items:
        assert top == "critical"


def test_severity_ranks_in_order() -> None:
    ranks = [grouping.severity_rank(s) for s in grouping.SEVERITIES]
    assert ranks == sorted(ranks, reverse=True)
    assert grouping.severity_rank("bogus") < grouping.severity_rank("info")


@given(st.lists(valves))
def test_valve_summary_open_wins_closed_only_when_all_closed(states: list[str | None]) -> None:
    got = grouping.valve_summary(states)
    assert got == grouping.valve_summary(list(reversed(states)))
    said = [s for s in states if s is not None]
    if not said:
        assert got is None
    elif "open" in said:
        assert got == "open"
    elif set(said) == {"closed"}:
        assert got == "closed"
    else:
        assert got != "closed"
        assert got in said


@given(
    st.text(alphabet=st.characters(exclude_characters="/"), min_size=1),
    st.one_of(st.none(), st.text(alphabet=st.characters(exclude_characters="/"))),
)
def test_group_keys_tell_groups_apart(gateway: str, site: str | None) -> None:
    keys = {
        grouping.group_key(gateway, site, "emergency"),
        grouping.group_key(gateway, site, "maintenance"),
    }
    assert len(keys) == 2
    assert grouping.offline_key(gateway) == grouping.group_key(gateway, None, "emergency")
    assert grouping.group_key(gateway, None, "emergency") == grouping.group_key(
        gateway, "", "emergency"
    )


@given(st.integers(0, 5000), st.lists(st.sampled_from(["Xuhui", "Minhang", ""]), max_size=8))
def test_offline_title_names_how_many_and_where(sites: int, districts: list[str]) -> None:
    title = grouping.offline_title("gw-3", sites, districts)
    assert set(title) == {"zh", "en"}
    if sites:
        assert str(sites) in title["zh"]
        assert str(sites) in title["en"]
        for d in filter(None, districts):
            assert d in title["zh"]
            assert d in title["en"]
    else:
        assert "gw-3" in title["en"]


def test_offline_title_in_plain_words() -> None:
    assert grouping.offline_title("gw-3", 3, ["Xuhui"] * 3) == {
        "zh": "网关离线：Xuhui 区 3 个场所无人监测",  # noqa: RUF001
        "en": "3 sites unmonitored in district Xuhui",
    }
    assert (
        grouping.offline_title("gw-3", 1, ["Xuhui"])["en"] == "1 site unmonitored in district Xuhui"
    )
    two = grouping.offline_title("gw-3", 3, ["Xuhui", "Minhang", "Minhang"])
    assert two["en"] == "3 sites unmonitored in districts Minhang, Xuhui"


def test_site_title_puts_the_alarm_at_the_site() -> None:
    title = grouping.site_title(
        {"zh": "燃气泄漏(高报)", "en": "Gas leak (high level)"}, "leak_high", "老王饭店"
    )
    assert title == {"zh": "老王饭店：燃气泄漏(高报)", "en": "Gas leak (high level) at 老王饭店"}  # noqa: RUF001
    assert grouping.site_title(None, "leak_high", "") == {"zh": "leak_high", "en": "leak_high"}


def test_causes_are_the_words_the_pages_know() -> None:
    assert set(grouping.CAUSES) == set(catalogue("cause"))


@given(st.lists(st.sampled_from(["Xuhui", "Minhang", "Pudong", ""])))
def test_districts_by_size_most_sites_first(districts: list[str]) -> None:
    ranked = grouping.districts_by_size(districts)
    assert set(ranked) == set(districts) - {""}
    counts = [districts.count(d) for d in ranked]
    assert counts == sorted(counts, reverse=True)
