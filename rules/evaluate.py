"""The rules' verdicts as pure functions: (state, reading, time, parameters) -> (state, verdicts).

No bus, no clock, no registry here, so every rule can be property-tested. Times are monotonic
seconds. The engine (:mod:`rules.engine`) keeps one state per device and turns verdicts into
``ConditionChanged`` events. A verdict is produced only when a condition changes (or, for an
active leak, when its peak worsens by the re-announce step), never once per report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from firmware_bridge.ksp import DetectorFlag, RegulatorFlag, ValveFlag, ValveState
from gateway.alarm_types import AlarmType
from gateway.contract import KitReport
from gateway.events import ReadingValue
from rules.schema import GasRisingRule, LeakRule

__all__ = [
    "LeakState",
    "RiseState",
    "Verdict",
    "flag_conditions",
    "readings",
    "step_flags",
    "step_leak",
    "step_rise",
]

A = AlarmType
RULE_LEAK: Final = "leak_threshold"
RULE_RISE: Final = "gas_rising"
RULE_FLAGS: Final = "device_flags"


@dataclass(frozen=True, slots=True)
class Verdict:
    alarm_type: AlarmType
    active: bool
    rule_id: str
    message: str


# --- leak: threshold with a clear level and a hold time -------------------------------------


@dataclass(frozen=True, slots=True)
class LeakState:
    level: int = 0  # 0 none, 1 leak_low active, 2 leak_low and leak_high active
    peak_lel: float = 0.0  # highest reading since the leak was raised
    announced_lel: float = 0.0  # the peak the last verdict carried
    clear_since: float | None = None  # when the reading went (and stayed) clear

    def clear_due(self, rule: LeakRule) -> float | None:
        """When a held clear completes (the engine arms a timer for it), None if not pending."""
        return None if self.clear_since is None else self.clear_since + rule.clear_hold_s


_ALARM_FLAGS: Final = frozenset({DetectorFlag.ALARM_LOW, DetectorFlag.ALARM_HIGH})


def step_leak(
    state: LeakState,
    lel: float,
    flags: frozenset[DetectorFlag],
    now: float,
    rule: LeakRule,
) -> tuple[LeakState, tuple[Verdict, ...]]:
    """One detector reading (or a timer re-checking the last one) against the leak rule.

    Raises at ``low``/``high`` or on the detector's own flag; clears both levels together only
    after the reading has been below ``clear`` with the alarm flags off for ``clear_hold_s``.
    """
    high = lel >= rule.high_lel_pct or DetectorFlag.ALARM_HIGH in flags
    low = high or lel >= rule.low_lel_pct or DetectorFlag.ALARM_LOW in flags
    level = 2 if high else 1 if low else 0
    if level > state.level:
        verdicts = tuple(
            Verdict(t, True, RULE_LEAK, _leak_message(t, lel, flags))
            for t in (A.LEAK_LOW, A.LEAK_HIGH)[state.level : level]
        )
        peak = max(lel, state.peak_lel)
        return LeakState(level, peak, peak, None), verdicts
    if state.level == 0:
        return state, ()
    peak = max(lel, state.peak_lel)
    clear = lel < rule.clear_lel_pct and not (flags & _ALARM_FLAGS)
    if not clear:
        # Re-announce a high leak that keeps worsening (below the high level, the next
        # announcement is leak_high itself).
        step = rule.reemit_step_lel_pct
        if state.level == 2 and step > 0 and peak - state.announced_lel >= step:
            message = f"leak worsening: peak {peak:g} %LEL"
            return LeakState(2, peak, peak, None), (Verdict(A.LEAK_HIGH, True, RULE_LEAK, message),)
        return replace(state, peak_lel=peak, clear_since=None), ()
    since = now if state.clear_since is None else state.clear_since
    if now - since < rule.clear_hold_s:
        return replace(state, peak_lel=peak, clear_since=since), ()
    message = f"gas below {rule.clear_lel_pct:g} %LEL for {rule.clear_hold_s:g} s"
    verdicts = tuple(
        Verdict(t, False, RULE_LEAK, message) for t in (A.LEAK_HIGH, A.LEAK_LOW)[2 - state.level :]
    )
    return LeakState(), verdicts


def _leak_message(alarm_type: AlarmType, lel: float, flags: frozenset[DetectorFlag]) -> str:
    flag = DetectorFlag.ALARM_HIGH if alarm_type is A.LEAK_HIGH else DetectorFlag.ALARM_LOW
    why = f"detector flag {flag.value}" if flag in flags else "threshold"
    return f"gas at {lel:g} %LEL ({why})"


# --- rate of rise below the alarm level -----------------------------------------------------

_SAMPLE_SPACING_S: Final = 5.0  # closer readings replace the newest sample: bounded memory


@dataclass(frozen=True, slots=True)
class RiseState:
    samples: tuple[tuple[float, float], ...] = ()  # (monotonic s, %LEL), oldest first
    active: bool = False
    calm_since: float | None = None


def _rate_per_min(samples: tuple[tuple[float, float], ...], rule: GasRisingRule) -> float | None:
    (t0, lel0), (t1, lel1) = samples[0], samples[-1]
    span = t1 - t0
    return (lel1 - lel0) / span * 60.0 if span >= rule.min_span_s else None


def step_rise(
    state: RiseState,
    lel: float,
    now: float,
    rule: GasRisingRule,
    *,
    leak_active: bool,
    alarm_lel: float,
) -> tuple[RiseState, tuple[Verdict, ...]]:
    """Gas rising at ``rise_lel_pct_per_min`` or faster while below the alarm level.

    A leak alarm supersedes the early warning (it clears); a rate below half the raise rate
    held for ``clear_hold_s`` clears it.
    """
    kept = tuple(s for s in state.samples if now - s[0] <= rule.window_s)
    if kept and now - kept[-1][0] < _SAMPLE_SPACING_S:
        kept = kept[:-1]
    samples = (*kept, (now, lel))
    rate = _rate_per_min(samples, rule)
    if leak_active or not rule.enabled:
        if state.active:
            return RiseState(samples), (Verdict(A.GAS_RISING, False, RULE_RISE, "leak alarm"),)
        return RiseState(samples), ()
    rising = rate is not None and rate >= rule.rise_lel_pct_per_min and lel < alarm_lel
    if not state.active:
        if rising:
            message = f"gas rising {rate:.1f} %LEL/min, now {lel:g} %LEL"
            return RiseState(samples, True), (Verdict(A.GAS_RISING, True, RULE_RISE, message),)
        return RiseState(samples), ()
    calm = rate is None or rate < rule.rise_lel_pct_per_min / 2
    if not calm:
        return RiseState(samples, True), ()
    since = now if state.calm_since is None else state.calm_since
    if now - since >= rule.clear_hold_s:
        message = f"gas no longer rising ({lel:g} %LEL)"
        return RiseState(samples), (Verdict(A.GAS_RISING, False, RULE_RISE, message),)
    return RiseState(samples, True, since), ()


# --- device flags ---------------------------------------------------------------------------

_FLAG_TYPES: Final[Mapping[str, AlarmType]] = MappingProxyType(
    {
        DetectorFlag.SENSOR_FAULT: A.SENSOR_FAULT,
        DetectorFlag.END_OF_LIFE: A.END_OF_LIFE,
        DetectorFlag.TAMPER: A.TAMPER,
        DetectorFlag.LOW_BATTERY: A.LOW_BATTERY,
        ValveFlag.MOTOR_FAULT: A.VALVE_FAULT,
        ValveFlag.POSITION_FAULT: A.VALVE_FAULT,
        RegulatorFlag.OVERFLOW_TRIPPED: A.OVERFLOW,
        RegulatorFlag.SELF_CLOSED: A.OVERFLOW,
        RegulatorFlag.OVER_PRESSURE: A.OVER_PRESSURE,
    }
)


def flag_conditions(report: KitReport) -> frozenset[AlarmType]:
    """The flag-driven conditions a report shows (a valve in state ``fault`` is a valve fault)."""
    body = report.detector or report.valve or report.regulator
    if body is None:
        return frozenset()
    found = {_FLAG_TYPES[f] for f in body.flags if f in _FLAG_TYPES}
    if report.valve is not None and report.valve.state is ValveState.FAULT:
        found.add(A.VALVE_FAULT)
    return frozenset(found)


def step_flags(
    active: frozenset[AlarmType], now_shown: frozenset[AlarmType]
) -> tuple[frozenset[AlarmType], tuple[Verdict, ...]]:
    """Flags raise and clear with the report that shows them (no hold: a fault is a fact)."""
    if active == now_shown:
        return active, ()
    raised = sorted(now_shown - active)
    cleared = sorted(active - now_shown)
    verdicts = [Verdict(t, True, RULE_FLAGS, f"device reports {t.value}") for t in raised]
    verdicts += [Verdict(t, False, RULE_FLAGS, f"{t.value} no longer reported") for t in cleared]
    return now_shown, tuple(verdicts)


def readings(report: KitReport, peak_lel: float | None = None) -> Mapping[str, ReadingValue]:
    """What a duty officer needs to see beside a condition raised from this report."""
    out: dict[str, ReadingValue] = {"event": report.event.value, "seq": report.seq}
    if report.detector is not None:
        out["lel_pct"] = report.detector.lel_pct
        out["flags"] = tuple(f.value for f in report.detector.flags)
        if peak_lel is not None:
            out["peak_lel_pct"] = peak_lel
    elif report.valve is not None:
        out["valve_state"] = report.valve.state.value
        out["valve_cause"] = report.valve.cause.value
        out["flags"] = tuple(f.value for f in report.valve.flags)
    elif report.regulator is not None:
        out["pressure_pa"] = report.regulator.pressure_pa
        out["flags"] = tuple(f.value for f in report.regulator.flags)
    if report.battery_mv is not None:
        out["battery_mv"] = report.battery_mv
    if report.ts is not None:
        out["device_ts"] = report.ts.text  # the device's clock as it sent it, as data only
        if report.ts.problem is not None:
            out["device_ts_problem"] = report.ts.problem
    return MappingProxyType(out)
