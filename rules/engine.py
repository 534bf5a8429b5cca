"""The rule engine room: reports, availability and rejections in, ``ConditionChanged`` out.

It keeps a small state per device (O(1) work per report), applies the pure rules of
:mod:`rules.evaluate` with that device's site parameters (:class:`rules.schema.RuleSet`), and
publishes a ``ConditionChanged`` only when a condition changes. Sources: a device id, or
``site:<site_id>`` (registry dates of passive parts, cylinders), or ``bridge:<bridge_id>``
(receiver offline). Hold timers (leak clear, leak isolation, unregistered quiet) run on the
clock's monotonic timers and exist only while a condition waits on one.

Handlers are plain functions (no awaits): a timer callback and a report of the same device
can never interleave half-way.

A receiver's status counts only for the bridges this gateway is configured for
(:class:`gateway.supervision.BridgeRoster`). A bridge stopped on purpose says so (its last status
carries ``stopping``): the alarm waits ``planned_stop_grace_s`` for it to come back, and the
bridge's ``offline`` availability that follows is part of the same stop. A plain ``offline``
(its last will, a receiver gone silent) raises at once, except in the first
``RETAINED_SETTLE_S`` after start: the broker's retained statuses arrive then in no set order,
and a planned stop's ``stopping`` must win over the ``offline`` beside it.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final, Protocol

from firmware_bridge.ksp import ValveState
from gateway.alarm_types import AlarmType, info
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.contract import KitReport
from gateway.events import (
    ConditionChanged,
    DeviceAvailabilityChanged,
    InputRejected,
    ReadingValue,
    ReceiverStatusChanged,
    ReportReceived,
)
from gateway.registry.model import Cylinder, DeviceInfo, ServiceFinding, Site
from gateway.supervision import BridgeRoster
from rules.evaluate import (
    LeakState,
    RiseState,
    Verdict,
    flag_conditions,
    readings,
    step_flags,
    step_leak,
    step_rise,
)
from rules.schema import Params, RuleSet

__all__ = ["PLANNED_STOP_GRACE_S", "RETAINED_SETTLE_S", "RegistryView", "RuleEngine"]

log = logging.getLogger(__name__)

A = AlarmType
_NO_READINGS: Final[Mapping[str, ReadingValue]] = MappingProxyType({})
_MAX_UNREGISTERED_TRACKED: Final = 10_000  # a flood of random ids must not grow memory
# A bridge restarted on purpose (an upgrade, a reboot) is back within a minute or two; five
# minutes without its radio devices is the most we let pass before telling the duty room.
PLANNED_STOP_GRACE_S: Final = 300.0
RETAINED_SETTLE_S: Final = 5.0  # the retained statuses' burst after start, with margin


class RegistryView(Protocol):
    """What the rules read from :class:`gateway.registry.Registry`."""

    def device(self, device_id: str) -> DeviceInfo | None: ...
    def site(self, site_id: str) -> Site | None: ...
    def valves_for_detector(self, detector_id: str) -> tuple[str, ...]: ...
    def past_service_life(self, on: date) -> tuple[ServiceFinding, ...]: ...
    def inspection_overdue(self, on: date) -> tuple[Cylinder, ...]: ...


@dataclass(slots=True)
class _Device:
    info: DeviceInfo
    params: Params
    leak: LeakState = field(default_factory=LeakState)
    rise: RiseState = field(default_factory=RiseState)
    flags: frozenset[AlarmType] = frozenset()
    last: KitReport | None = None
    offline: bool = False
    clear_timer: Timer | None = None


@dataclass(slots=True)
class _Isolation:
    """A leak at one detector waiting for, or missing, its linked valves' ``closed``."""

    valves: tuple[str, ...]
    timer: Timer | None
    raised: bool = False


@dataclass(slots=True)
class _Unregistered:
    seen: list[float] = field(default_factory=list)
    active: bool = False
    last: float = 0.0
    timer: Timer | None = None


class RuleEngine:
    def __init__(
        self,
        bus: Bus,
        registry: RegistryView,
        clock: Clock,
        rules: RuleSet,
        *,
        bridges: BridgeRoster | None = None,
        planned_stop_grace_s: float = PLANNED_STOP_GRACE_S,
    ) -> None:
        self._bus = bus
        self._registry = registry
        self._clock = clock
        self._rules = rules
        self._devices: dict[str, _Device] = {}
        self._valve_states: dict[str, ValveState] = {}
        self._isolations: dict[str, _Isolation] = {}
        self._unregistered: OrderedDict[str, _Unregistered] = OrderedDict()
        self._receivers_offline: set[str] = set()
        self._bridges = bridges or BridgeRoster()
        self._planned_stop_grace_s = planned_stop_grace_s
        self._planned_stops: dict[str, Timer] = {}  # bridge -> its grace's end
        self._held: dict[str, ReceiverStatusChanged] = {}  # plain offlines while settling
        self._settle_until = 0.0
        self._settle_timer: Timer | None = None
        self._dated: dict[tuple[AlarmType, str], str | None] = {}  # active date findings
        self._service_timer: Timer | None = None
        self._running = False
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._running = True
        self._settle_until = self._clock.monotonic() + RETAINED_SETTLE_S
        self._settle_timer = self._clock.call_later(RETAINED_SETTLE_S, self._settled)
        self._bus.subscribe(ReportReceived, self._on_report, name="rules.report")
        self._bus.subscribe(
            DeviceAvailabilityChanged, self._on_availability, name="rules.availability"
        )
        self._bus.subscribe(ReceiverStatusChanged, self._on_receiver, name="rules.receiver")
        self._bus.subscribe(InputRejected, self._on_rejected, name="rules.rejected")
        self._check_dates()

    async def stop(self) -> None:
        self._running = False
        timers = [self._service_timer, *(d.clear_timer for d in self._devices.values())]
        timers += [i.timer for i in self._isolations.values()]
        timers += [u.timer for u in self._unregistered.values()]
        timers += [*self._planned_stops.values(), self._settle_timer]
        for timer in timers:
            if timer is not None:
                timer.cancel()

    # --- emitting -------------------------------------------------------------------------

    def _emit(
        self,
        verdict: Verdict,
        source: str,
        *,
        site_id: str | None,
        device_id: str | None,
        params: Params,
        values: Mapping[str, ReadingValue] = _NO_READINGS,
    ) -> None:
        self.counts[f"{verdict.alarm_type.value}.{'raised' if verdict.active else 'cleared'}"] += 1
        severity = params.severity_of(verdict.alarm_type, info(verdict.alarm_type).severity)
        self._bus.publish(
            ConditionChanged(
                alarm_type=verdict.alarm_type.value,
                source=source,
                site_id=site_id,
                device_id=device_id,
                active=verdict.active,
                severity=severity,
                rule_id=verdict.rule_id,
                message=verdict.message,
                at=self._clock.now(),
                readings=values,
            )
        )

    def _emit_device(
        self, device: _Device, verdicts: Iterable[Verdict], values: Mapping[str, ReadingValue]
    ) -> None:
        info_ = device.info
        for verdict in verdicts:
            self._emit(
                verdict,
                info_.device_id,
                site_id=info_.site_id,
                device_id=info_.device_id,
                params=device.params,
                values=values,
            )

    # --- per-device state -----------------------------------------------------------------

    def _device(self, device_id: str) -> _Device | None:
        device = self._devices.get(device_id)
        if device is None:
            found = self._registry.device(device_id)
            if found is None:
                return None  # ingest only passes registered devices; a registry swap may not
            site = self._registry.site(found.site_id)
            site_type = site.site_type.value if site is not None else None
            params = self._rules.for_site(found.site_id, site_type)
            device = self._devices[device_id] = _Device(found, params)
        return device

    # --- reports --------------------------------------------------------------------------

    def _on_report(self, event: ReportReceived) -> None:
        device = self._device(event.device_id) if self._running else None
        if device is None:
            return
        report = event.report
        device.last = report
        shown = flag_conditions(report)
        if shown != device.flags:
            device.flags, verdicts = step_flags(device.flags, shown)
            self._emit_device(device, verdicts, readings(report))
        if report.detector is not None:
            self._detector(device, report, event.received_mono)
        elif report.valve is not None:
            self._valve(event.device_id, report.valve.state)

    def _detector(self, device: _Device, report: KitReport, now: float) -> None:
        assert report.detector is not None
        lel, flags = report.detector.lel_pct, frozenset(report.detector.flags)
        was_leaking = device.leak.level > 0
        device.leak, verdicts = step_leak(device.leak, lel, flags, now, device.params.leak)
        self._emit_device(device, verdicts, readings(report, device.leak.peak_lel or None))
        leaking = device.leak.level > 0
        device.rise, verdicts = step_rise(
            device.rise,
            lel,
            now,
            device.params.gas_rising,
            leak_active=leaking,
            alarm_lel=device.params.leak.low_lel_pct,
        )
        self._emit_device(device, verdicts, readings(report))
        self._arm_clear(device)
        if leaking and not was_leaking:
            self._watch_isolation(device)
        elif was_leaking and not leaking:
            self._end_isolation(device, "leak cleared")

    def _arm_clear(self, device: _Device) -> None:
        """A pending held clear completes on a timer even if the detector says nothing more."""
        due = device.leak.clear_due(device.params.leak)
        if device.clear_timer is not None:
            device.clear_timer.cancel()
            device.clear_timer = None
        if due is not None:
            delay = due - self._clock.monotonic()
            device.clear_timer = self._clock.call_later(delay, lambda: self._clear_due(device))

    def _clear_due(self, device: _Device) -> None:
        device.clear_timer = None
        if not self._running or device.last is None or device.last.detector is None:
            return
        detector = device.last.detector
        flags = frozenset(detector.flags)
        now = self._clock.monotonic()
        device.leak, verdicts = step_leak(
            device.leak, detector.lel_pct, flags, now, device.params.leak
        )
        self._emit_device(device, verdicts, readings(device.last))
        self._arm_clear(device)
        if device.leak.level == 0:
            self._end_isolation(device, "leak cleared")

    # --- leak isolation (combination over time) -------------------------------------------

    def _watch_isolation(self, device: _Device) -> None:
        detector_id = device.info.device_id
        valves = self._registry.valves_for_detector(detector_id)
        if not valves or detector_id in self._isolations:
            return  # nothing to isolate with: the leak alarm itself is the call-out
        delay = device.params.isolation.valve_closed_within_s
        timer = self._clock.call_later(delay, lambda: self._isolation_due(device))
        self._isolations[detector_id] = _Isolation(valves, timer)

    def _open_valves(self, valves: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v for v in valves if self._valve_states.get(v) is not ValveState.CLOSED)

    def _isolation_due(self, device: _Device) -> None:
        isolation = self._isolations.get(device.info.device_id)
        if isolation is None or not self._running:
            return
        isolation.timer = None
        still_open = self._open_valves(isolation.valves)
        if not still_open:
            del self._isolations[device.info.device_id]
            return
        isolation.raised = True
        within = device.params.isolation.valve_closed_within_s
        verdict = Verdict(
            A.LEAK_NOT_ISOLATED,
            True,
            "leak_isolation",
            f"valve(s) {', '.join(still_open)} not reported closed within {within:g} s of the leak",
        )
        self._emit_device(device, (verdict,), self._isolation_readings(isolation))

    def _isolation_readings(self, isolation: _Isolation) -> Mapping[str, ReadingValue]:
        states = tuple(
            f"{v}={s.value if (s := self._valve_states.get(v)) else 'unknown'}"
            for v in isolation.valves
        )
        return MappingProxyType(
            {"open_valves": self._open_valves(isolation.valves), "valve_states": states}
        )

    def _end_isolation(self, device: _Device, why: str) -> None:
        isolation = self._isolations.pop(device.info.device_id, None)
        if isolation is None:
            return
        if isolation.timer is not None:
            isolation.timer.cancel()
        if isolation.raised:
            verdict = Verdict(A.LEAK_NOT_ISOLATED, False, "leak_isolation", why)
            self._emit_device(device, (verdict,), self._isolation_readings(isolation))

    def _valve(self, valve_id: str, state: ValveState) -> None:
        self._valve_states[valve_id] = state
        if state is not ValveState.CLOSED or not self._isolations:
            return
        for detector_id, isolation in list(self._isolations.items()):
            if (
                isolation.raised
                and valve_id in isolation.valves
                and not self._open_valves(isolation.valves)
            ):
                self._end_isolation(self._devices[detector_id], "linked valves closed")

    # --- availability ---------------------------------------------------------------------

    def _on_availability(self, event: DeviceAvailabilityChanged) -> None:
        device = self._device(event.device_id) if self._running else None
        if device is None or device.offline == (not event.online):
            return
        if event.reason == "receiver_offline":
            # ISA-18.2 designed suppression: the receiver_offline alarm stands for every device
            # behind it. One alarm per device would be a flood that can hide a leak elsewhere;
            # a device still silent once its receiver is back raises its own alarm then.
            self.counts["suppressed.device_offline.receiver_offline"] += 1
            return
        device.offline = not event.online
        verdict = Verdict(
            A.DEVICE_OFFLINE,
            device.offline,
            "offline",
            f"device {'offline' if device.offline else 'back online'} ({event.reason})",
        )
        values = MappingProxyType({"reason": event.reason, "kind": device.info.kind.value})
        self._emit_device(device, (verdict,), values)

    def _on_receiver(self, event: ReceiverStatusChanged) -> None:
        bridge, status = event.bridge_id, event.status
        if not self._running or not self._bridges.listed(bridge):
            return
        if status.online:
            self._end_planned_stop(bridge)
            self._held.pop(bridge, None)
            self._receiver_condition(event, offline=False)
        elif status.stopping:
            self._held.pop(bridge, None)
            self._planned_stop(event)
        elif bridge in self._planned_stops:
            # The stopping bridge's own "offline" availability: the same planned stop.
            self.counts["receiver_offline.planned_stop_offline"] += 1
        elif self._clock.monotonic() < self._settle_until:
            self._held[bridge] = event
        else:
            self._receiver_condition(event, offline=True)

    def _planned_stop(self, event: ReceiverStatusChanged) -> None:
        bridge = event.bridge_id
        if bridge in self._receivers_offline or bridge in self._planned_stops:
            return  # already raised, or already waiting: nothing new
        self.counts["receiver_offline.planned_stop"] += 1
        grace = self._planned_stop_grace_s
        log.info(
            "bridge %s stopped on purpose: receiver_offline only if not back in %gs", bridge, grace
        )
        self._planned_stops[bridge] = self._clock.call_later(
            grace, lambda: self._planned_stop_due(event)
        )

    def _planned_stop_due(self, event: ReceiverStatusChanged) -> None:
        if self._planned_stops.pop(event.bridge_id, None) is None or not self._running:
            return
        grace = self._planned_stop_grace_s
        why = f"bridge stopped on purpose and not back within {grace:g} s"
        self._receiver_condition(event, offline=True, why=why)

    def _end_planned_stop(self, bridge: str) -> None:
        timer = self._planned_stops.pop(bridge, None)
        if timer is not None:
            timer.cancel()
            self.counts["receiver_offline.planned_stop_back"] += 1

    def _settled(self) -> None:
        """The start's retained burst is over: a plain offline not explained by a planned
        stop meanwhile raises now."""
        held, self._held = self._held, {}
        for event in held.values():
            if self._running and event.bridge_id not in self._planned_stops:
                self._receiver_condition(event, offline=True)

    def _receiver_condition(
        self, event: ReceiverStatusChanged, *, offline: bool, why: str = ""
    ) -> None:
        bridge = event.bridge_id
        if offline == (bridge in self._receivers_offline):
            return
        if offline:
            self._receivers_offline.add(bridge)
        else:
            self._receivers_offline.discard(bridge)
        text = "receiver offline: its radio devices are unreachable" if offline else "back online"
        if why:
            text = f"{text} ({why})"
        values: dict[str, ReadingValue] = {"uptime_s": event.status.uptime_s}
        values["paired_count"] = event.status.paired_count
        verdict = Verdict(A.RECEIVER_OFFLINE, offline, "offline", text)
        self._emit(
            verdict,
            f"bridge:{bridge}",
            site_id=None,
            device_id=None,
            params=self._rules.base,
            values=values,
        )

    # --- unregistered devices -------------------------------------------------------------

    def _on_rejected(self, event: InputRejected) -> None:
        if event.reason != "unregistered_device" or event.device_id is None or not self._running:
            return
        rule = self._rules.base.unregistered
        now = self._clock.monotonic()
        seen = self._unregistered.get(event.device_id)
        if seen is None:
            seen = self._unregistered[event.device_id] = _Unregistered()
            if len(self._unregistered) > _MAX_UNREGISTERED_TRACKED:
                self._forget_oldest_unregistered()
        else:
            self._unregistered.move_to_end(event.device_id)
        seen.last = now
        if seen.active:
            return
        seen.seen = [t for t in seen.seen if now - t <= rule.window_s][-rule.messages :]
        seen.seen.append(now)
        if len(seen.seen) >= rule.messages:
            seen.active, seen.seen = True, []
            message = f"{rule.messages} message(s) within {rule.window_s:g} s: {event.detail}"
            verdict = Verdict(A.UNREGISTERED_DEVICE, True, "unregistered", message)
            values = MappingProxyType({"where": event.where})
            self._emit(
                verdict,
                event.device_id,
                site_id=None,
                device_id=event.device_id,
                params=self._rules.base,
                values=values,
            )
            self._arm_quiet(event.device_id, seen, rule.quiet_s)

    def _forget_oldest_unregistered(self) -> None:
        for device_id, seen in self._unregistered.items():
            if not seen.active:  # an active one is kept until it clears: never lose a clear
                del self._unregistered[device_id]
                return

    def _arm_quiet(self, device_id: str, seen: _Unregistered, delay: float) -> None:
        seen.timer = self._clock.call_later(delay, lambda: self._quiet_due(device_id, seen))

    def _quiet_due(self, device_id: str, seen: _Unregistered) -> None:
        if not self._running:
            return
        quiet_s = self._rules.base.unregistered.quiet_s
        silent = self._clock.monotonic() - seen.last
        if silent < quiet_s:
            self._arm_quiet(device_id, seen, quiet_s - silent)
            return
        self._unregistered.pop(device_id, None)
        verdict = Verdict(A.UNREGISTERED_DEVICE, False, "unregistered", f"silent {quiet_s:g} s")
        self._emit(verdict, device_id, site_id=None, device_id=device_id, params=self._rules.base)

    # --- registry dates -------------------------------------------------------------------

    def _check_dates(self) -> None:
        """Service life and cylinder inspection, at start and then every ``check_every_s``."""
        if not self._running:
            return
        today = self._clock.now().date()
        found: dict[tuple[AlarmType, str], tuple[str | None, list[str]]] = {}
        for finding in self._registry.past_service_life(today):
            key = (A.PAST_SERVICE_LIFE, finding.device_id or f"site:{finding.site_id}")
            found.setdefault(key, (finding.site_id, []))[1].append(
                f"{finding.component.value} {finding.model} installed {finding.installed_on}, "
                f"life ended {finding.expired_on}"
            )
        for cylinder in self._registry.inspection_overdue(today):
            key = (A.INSPECTION_OVERDUE, f"site:{cylinder.site_id}")
            found.setdefault(key, (cylinder.site_id, []))[1].append(
                f"cylinder {cylinder.cylinder_id} due {cylinder.next_inspection_due}"
            )
        self._publish_dates(found)
        every = self._rules.base.service.check_every_s
        self._service_timer = self._clock.call_later(every, self._check_dates)

    def _publish_dates(
        self, found: Mapping[tuple[AlarmType, str], tuple[str | None, list[str]]]
    ) -> None:
        for key, (site_id, items) in found.items():
            if key in self._dated:
                continue
            self._dated[key] = site_id
            alarm_type, source = key
            device_id = None if source.startswith("site:") else source
            verdict = Verdict(alarm_type, True, "registry_dates", "; ".join(items))
            values = MappingProxyType({"items": tuple(items)})
            params = self._site_params(site_id)
            self._emit(
                verdict,
                source,
                site_id=site_id,
                device_id=device_id,
                params=params,
                values=values,
            )
        for key in [k for k in self._dated if k not in found]:
            site_id = self._dated.pop(key)
            alarm_type, source = key
            device_id = None if source.startswith("site:") else source
            verdict = Verdict(alarm_type, False, "registry_dates", "no longer found")
            params = self._site_params(site_id)
            self._emit(verdict, source, site_id=site_id, device_id=device_id, params=params)

    def _site_params(self, site_id: str | None) -> Params:
        site = self._registry.site(site_id) if site_id is not None else None
        return self._rules.for_site(site_id, site.site_type.value if site else None)
