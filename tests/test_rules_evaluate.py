"""Properties of the pure rules: whatever the readings, conditions alternate raise/clear, a
clear needs the held clear reading, and no flood of verdicts comes from a steady reading."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.ksp import DetectorFlag
from gateway.alarm_types import AlarmType
from rules.evaluate import LeakState, RiseState, step_leak, step_rise
from rules.schema import GasRisingRule, LeakRule

RULE = LeakRule()
_flags = st.frozensets(
    st.sampled_from([DetectorFlag.ALARM_LOW, DetectorFlag.ALARM_HIGH]), max_size=2
)
_readings = st.lists(
    st.tuples(st.floats(0, 100), _flags, st.floats(0.1, 40)), min_size=1, max_size=60
)


@given(_readings)
def test_leak_verdicts_alternate_and_clear_only_when_held(
    readings: list[tuple[float, frozenset[DetectorFlag], float]],
) -> None:
    state, now = LeakState(), 0.0
    active = {AlarmType.LEAK_LOW: False, AlarmType.LEAK_HIGH: False}
    clear_started: float | None = None
    for lel, flags, gap in readings:
        now += gap
        clear_now = lel < RULE.clear_lel_pct and not flags
        clear_started = (clear_started if clear_started is not None else now) if clear_now else None
        state, verdicts = step_leak(state, lel, flags, now, RULE)
        for verdict in verdicts:
            if verdict.active and active[verdict.alarm_type]:
                assert verdict.alarm_type is AlarmType.LEAK_HIGH  # only a worsening re-announce
                assert "worsening" in verdict.message
            if not verdict.active:
                assert active[verdict.alarm_type]
                assert clear_started is not None
                assert now - clear_started >= RULE.clear_hold_s
            active[verdict.alarm_type] = verdict.active
        # leak_high never without leak_low, and the level says which are active
        assert active[AlarmType.LEAK_LOW] or not active[AlarmType.LEAK_HIGH]
        assert state.level == active[AlarmType.LEAK_LOW] + active[AlarmType.LEAK_HIGH]
        if lel >= RULE.low_lel_pct or flags:
            assert active[AlarmType.LEAK_LOW]


@given(st.floats(0, 100), _flags, st.integers(2, 200))
def test_a_steady_reading_gives_verdicts_at_most_once(
    lel: float, flags: frozenset[DetectorFlag], repeats: int
) -> None:
    state, total = LeakState(), 0
    for i in range(repeats):
        state, verdicts = step_leak(state, lel, flags, float(i), RULE)
        total += len(verdicts)
    assert total <= 2  # the raise of one or both levels, nothing per report


@given(st.lists(st.tuples(st.floats(0, 19.9), st.floats(1, 90)), min_size=1, max_size=60))
def test_gas_rising_alternates(readings: list[tuple[float, float]]) -> None:
    rule, state, now, active = GasRisingRule(), RiseState(), 0.0, False
    for lel, gap in readings:
        now += gap
        state, verdicts = step_rise(state, lel, now, rule, leak_active=False, alarm_lel=20)
        for verdict in verdicts:
            assert verdict.active is not active
            active = verdict.active
        assert len(state.samples) <= rule.window_s / 5 + 2
