"""Escalation policies: who is told, through which channel, how long after the alarm.

A policy file (YAML) holds ``policies:``, a list tried in order; the first whose ``match`` fits
an alarm escalates it. Each step fires ``after_s`` seconds after the alarm was raised and
notifies targets through named channels (configured in the settings). ``repeat`` re-sends the
last step. ``stop_on`` says whether an acknowledgement, a clear, or both end the escalation.
The defaults are docs/gas-company-contract.md's (§6).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.alarm_types import AlarmType, info
from gateway.errors import ConfigError
from gateway.escalation.messages import known_type
from gateway.events import Severity
from gateway.settings import read_config_file, yaml_where

__all__ = [
    "DEFAULT_POLICIES",
    "Notify",
    "Policy",
    "PolicySet",
    "Repeat",
    "ScheduledStep",
    "StopOn",
    "Target",
    "load_policies",
]


class Target(StrEnum):
    SITE_CONTACTS = "site_contacts"  # the site's own contacts, from the registry
    DUTY_ROOM = "duty_room"  # the gas company duty room (beside the MQTT event it always gets)
    DUTY_SUPERVISOR = "duty_supervisor"
    EMERGENCY_DISPATCHER = "emergency_dispatcher"
    DISTRICT_REGULATOR = "district_regulator"  # the site's district's regulator
    SERVICE_TEAM = "service_team"  # work orders for maintenance alarms


class StopOn(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Notify(_Model):
    to: Target
    via: Annotated[tuple[str, ...], Field(min_length=1)]


class Step(_Model):
    after_s: Annotated[float, Field(ge=0, le=7 * 86400)]
    notify: Annotated[tuple[Notify, ...], Field(min_length=1)]


class Repeat(_Model):
    every_s: Annotated[float, Field(gt=0, le=86400)]
    times: Annotated[int, Field(ge=0, le=100)]


class Match(_Model):
    """Empty lists match anything; ``maintenance`` None matches both."""

    alarm_types: tuple[AlarmType, ...] = ()
    severities: tuple[Severity, ...] = ()
    maintenance: bool | None = None

    def fits(self, alarm_type: str, severity: Severity) -> bool:
        if self.alarm_types and alarm_type not in self.alarm_types:
            return False
        if self.severities and severity not in self.severities:
            return False
        if self.maintenance is not None:
            kind = known_type(alarm_type)
            return (kind is not None and info(kind).maintenance) is self.maintenance
        return True


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    index: int  # stable: part of every delivery key this step creates
    after_s: float
    notify: tuple[Notify, ...]
    repeat: int  # 0 for a step as written, k for its k-th repeat


class Policy(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")]
    match: Match = Match()
    steps: Annotated[tuple[Step, ...], Field(min_length=1)]
    stop_on: Annotated[tuple[StopOn, ...], Field(min_length=1)] = (StopOn.ACKNOWLEDGED,)
    repeat: Repeat | None = None
    digest: bool = False  # also listed in the daily digest of open alarms

    @model_validator(mode="after")
    def _steps_in_order(self) -> Policy:
        delays = [s.after_s for s in self.steps]
        if delays != sorted(delays):
            raise ValueError("steps must be in order of after_s")
        return self

    def schedule(self) -> tuple[ScheduledStep, ...]:
        steps = [ScheduledStep(i, s.after_s, s.notify, 0) for i, s in enumerate(self.steps)]
        if self.repeat:
            last = steps[-1]
            steps += [
                ScheduledStep(
                    len(self.steps) + k - 1, last.after_s + k * self.repeat.every_s, last.notify, k
                )
                for k in range(1, self.repeat.times + 1)
            ]
        return tuple(steps)

    def channels(self) -> set[str]:
        return {v for s in self.steps for n in s.notify for v in n.via}


class PolicySet(_Model):
    policies: Annotated[tuple[Policy, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> PolicySet:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError("policy names must be unique")
        return self

    def for_alarm(self, alarm_type: str, severity: Severity) -> Policy | None:
        return next((p for p in self.policies if p.match.fits(alarm_type, severity)), None)

    def named(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)


def _notify(to: Target, *via: str) -> Notify:
    return Notify(to=to, via=via)


_LEAKS = (
    AlarmType.LEAK_LOW,
    AlarmType.LEAK_HIGH,
    AlarmType.OVERFLOW,
    AlarmType.VALVE_FAILED_TO_CLOSE,
    AlarmType.LEAK_NOT_ISOLATED,
)
_ACK, _CLEAR = StopOn.ACKNOWLEDGED, StopOn.CLEARED
T = Target

# The gas companies' practice: a leak tells the site and the duty room at once, the supervisor
# after 2 min without acknowledgement, the dispatcher and the district regulator after 10 min.
# Leaks latch, so only a person's acknowledgement stops them.
DEFAULT_POLICIES = PolicySet(
    policies=(
        Policy(
            name="leak",
            match=Match(alarm_types=_LEAKS),
            steps=(
                Step(
                    after_s=0,
                    notify=(_notify(T.SITE_CONTACTS, "sms"), _notify(T.DUTY_ROOM, "duty_room_im")),
                ),
                Step(after_s=120, notify=(_notify(T.DUTY_SUPERVISOR, "sms", "email"),)),
                Step(
                    after_s=600,
                    notify=(
                        _notify(T.EMERGENCY_DISPATCHER, "sms"),
                        _notify(T.DISTRICT_REGULATOR, "email"),
                    ),
                ),
            ),
            stop_on=(_ACK,),
            repeat=Repeat(every_s=600, times=3),
        ),
        Policy(
            name="maintenance",
            match=Match(maintenance=True),
            steps=(Step(after_s=0, notify=(_notify(T.SERVICE_TEAM, "work_order"),)),),
            stop_on=(_ACK, _CLEAR),
            digest=True,
        ),
        Policy(
            name="urgent",
            match=Match(severities=(Severity.CRITICAL, Severity.HIGH)),
            steps=(
                Step(after_s=0, notify=(_notify(T.DUTY_ROOM, "duty_room_im"),)),
                Step(after_s=600, notify=(_notify(T.DUTY_SUPERVISOR, "sms"),)),
            ),
            stop_on=(_ACK, _CLEAR),
        ),
        Policy(
            name="default",
            steps=(Step(after_s=0, notify=(_notify(T.DUTY_ROOM, "duty_room_im"),)),),
            stop_on=(_ACK, _CLEAR),
        ),
    )
)


def load_policies(path: Path) -> PolicySet:
    """A validated policy file; ``ConfigError`` naming ``file:line:column`` and the field."""
    data = read_config_file(path)
    try:
        return PolicySet.model_validate(data)
    except ValidationError as exc:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        problems = "; ".join(
            f"{yaml_where(path, root, e['loc'])}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid escalation policies: {problems}") from None
