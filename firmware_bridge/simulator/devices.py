"""Simulated kit devices: state, the reports a real device would send, and periodic reporting.

A device does not know how its reports travel. It hands each report to its *sinks* (a
:class:`~firmware_bridge.simulator.receiver.SimReceiver` over KSP/1, or an
:class:`~firmware_bridge.simulator.mqtt_device.MqttDevice` over kit/v1), as
``sink(device, event)``; the sink asks the device for the body at the moment it sends.

Every time constant (reporting interval, valve travel, buzzer mute) is multiplied by
``time_scale`` so tests and demos can run a ten-minute interval in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar, Literal

from firmware_bridge import ksp
from gateway.contract import DetectorReading, KitReport, RegulatorReading, ValveReading

__all__ = [
    "BATTERY_INTERVAL_S",
    "LOW_BATTERY_MV",
    "MAINS_INTERVAL_S",
    "ReportSink",
    "SimDetector",
    "SimDevice",
    "SimRegulator",
    "SimValve",
    "make_device",
]

log = logging.getLogger(__name__)

MAINS_INTERVAL_S = 60.0  # KSP/1: mains-powered devices report every 60 s
BATTERY_INTERVAL_S = 600.0  # ... battery devices every 600 s
LOW_BATTERY_MV = 2400  # below this a battery device sets its low_battery flag
SILENCE_S = 300.0  # KSP/1 "silence": mute the buzzer for 5 min
DETECTOR_LOW_PCT = 20.0  # the detector's own alarm thresholds (GB/T 50493 defaults)
DETECTOR_HIGH_PCT = 50.0
DETECTOR_HYSTERESIS_PCT = 5.0  # a flag clears this far below its threshold, so it does not chatter

ReportSink = Callable[["SimDevice", ksp.Event], None]


class SimDevice(ABC):
    """Base of the simulated electronic kit devices (detector, valve, smart regulator)."""

    kind: ClassVar[ksp.DeviceKind]

    def __init__(
        self,
        device_id: int,
        *,
        battery_mv: int,
        interval_s: float | None,
        time_scale: float,
        rssi_dbm: int = -67,
    ) -> None:
        if not 0 <= device_id <= 0xFFFF_FFFF:
            raise ValueError(f"device id {device_id} is not a 32-bit number")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.device_id = device_id
        self.battery_mv = battery_mv
        self.rssi_dbm = rssi_dbm
        self.time_scale = time_scale
        default = MAINS_INTERVAL_S if battery_mv == 0 else BATTERY_INTERVAL_S
        self.interval_s = default if interval_s is None else interval_s
        self.silent = False  # out of radio range or dead: sends nothing at all
        self._sinks: list[ReportSink] = []
        self._periodic: asyncio.Task[None] | None = None

    @property
    def id_hex(self) -> str:
        return ksp.format_device_id(self.device_id)

    def scaled(self, seconds: float) -> float:
        """A device time constant in (simulated) wall seconds."""
        return seconds * self.time_scale

    def connect(self, sink: ReportSink) -> None:
        self._sinks.append(sink)

    def disconnect(self, sink: ReportSink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    async def start(self) -> None:
        """Power on: one power_on report, then a periodic report every interval."""
        if self._periodic is None:
            self._periodic = asyncio.create_task(self._report_periodically(), name=self.id_hex)
            self.emit(ksp.Event.POWER_ON)

    async def stop(self) -> None:
        task, self._periodic = self._periodic, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _report_periodically(self) -> None:
        # Devices powered on together must not all report in the same instant: each starts at
        # its own phase of the interval, derived from its id so that runs repeat.
        phase = 1 - (self.device_id * 2654435761 % 2**32) / 2**32  # in (0, 1]
        await asyncio.sleep(self.scaled(self.interval_s) * phase)
        while True:
            self.emit(ksp.Event.PERIODIC)
            await asyncio.sleep(self.scaled(self.interval_s))

    def emit(self, event: ksp.Event) -> None:
        """Send a report now (unless the device is silent)."""
        if self.silent:
            log.debug("%s is silent, %s report not sent", self.id_hex, event)
            return
        for sink in list(self._sinks):
            sink(self, event)

    def report(self, event: ksp.Event) -> ksp.Report:
        """The KSP/1 report this device sends for ``event``, from its current state."""
        return ksp.Report(self.device_id, event, self.battery_mv, self.rssi_dbm, self.body())

    def kit_report(self, event: ksp.Event, seq: int, ts: datetime | None) -> KitReport:
        """The same report as kit/v1 JSON, for MQTT-native devices."""
        return KitReport.model_validate(
            {
                "kind": self.kind,
                "seq": seq,
                "event": event,
                "ts": ts,
                "battery_mv": self.battery_mv,
                "rssi_dbm": self.rssi_dbm,
                self.kind.value: self.reading(),
            }
        )

    def set_battery(self, battery_mv: int) -> None:
        """A battery reading; below :data:`LOW_BATTERY_MV` the device flags low_battery."""
        self.battery_mv = battery_mv
        self.emit(ksp.Event.STATE_CHANGE)

    @property
    def low_battery(self) -> bool:
        return 0 < self.battery_mv < LOW_BATTERY_MV

    def accepts(self, command: ksp.CommandCode) -> bool:
        """Whether this kind of device can carry out ``command`` (else: CMD_ACK rejected)."""
        return command in (ksp.CommandCode.QUERY, ksp.CommandCode.SELF_TEST)

    def execute(self, command: ksp.CommandCode) -> None:
        """Carry out a command this device :meth:`accepts`."""
        if command is ksp.CommandCode.SELF_TEST:
            self.emit(ksp.Event.SELF_TEST)
        elif command is ksp.CommandCode.QUERY:
            self.emit(ksp.Event.PERIODIC)

    @abstractmethod
    def body(self) -> ksp.DetectorBody | ksp.ValveBody | ksp.RegulatorBody:
        """The KSP/1 body of a report, from the current state."""

    @abstractmethod
    def reading(self) -> DetectorReading | ValveReading | RegulatorReading:
        """The kit/v1 body object of a report, from the current state."""


class SimDetector(SimDevice):
    """A combustible-gas leak detector with its own alarm thresholds (20 / 50 %LEL)."""

    kind = ksp.DeviceKind.DETECTOR

    def __init__(
        self,
        device_id: int,
        *,
        battery_mv: int = 3000,
        interval_s: float | None = None,
        time_scale: float = 1.0,
        temp_c: int = 24,
    ) -> None:
        super().__init__(
            device_id, battery_mv=battery_mv, interval_s=interval_s, time_scale=time_scale
        )
        self.lel_pct = 0.0
        self.temp_c = temp_c
        self._alarm: set[ksp.DetectorFlag] = set()
        self._extra: set[ksp.DetectorFlag] = set()  # faults set by hand: tamper, sensor_fault...
        self._muted_until = 0.0
        self._alarm_listeners: list[Callable[[SimDetector], None]] = []

    @property
    def flags(self) -> frozenset[ksp.DetectorFlag]:
        flags = set(self._alarm) | self._extra
        if self.low_battery:
            flags.add(ksp.DetectorFlag.LOW_BATTERY)
        if time.monotonic() < self._muted_until:
            flags.add(ksp.DetectorFlag.MUTED)
        return frozenset(flags)

    def on_alarm(self, listener: Callable[[SimDetector], None]) -> None:
        """Called when the detector raises an alarm: kit valves close on this radio signal."""
        self._alarm_listeners.append(listener)

    def set_lel(self, pct: float) -> None:
        """A new gas reading; crossing a threshold upwards is an ``alarm`` report."""
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"gas concentration {pct} %LEL is outside 0..100")
        self.lel_pct = round(pct, 1)
        before = set(self._alarm)
        for flag, threshold in (
            (ksp.DetectorFlag.ALARM_LOW, DETECTOR_LOW_PCT),
            (ksp.DetectorFlag.ALARM_HIGH, DETECTOR_HIGH_PCT),
        ):
            if self.lel_pct >= threshold:
                self._alarm.add(flag)
            elif self.lel_pct < threshold - DETECTOR_HYSTERESIS_PCT:
                self._alarm.discard(flag)
        self._report_change(raised=bool(self._alarm - before))

    def set_flags(self, *flags: ksp.DetectorFlag) -> None:
        """Replace the hand-set flags (alarm flags given here are raised too)."""
        before = set(self._alarm)
        alarm_flags = {ksp.DetectorFlag.ALARM_LOW, ksp.DetectorFlag.ALARM_HIGH}
        self._alarm |= set(flags) & alarm_flags
        self._extra = set(flags) - alarm_flags
        self._report_change(raised=bool(self._alarm - before))

    def _report_change(self, *, raised: bool) -> None:
        if raised:
            self.emit(ksp.Event.ALARM)
            for listener in list(self._alarm_listeners):
                listener(self)
        else:
            self.emit(ksp.Event.STATE_CHANGE)

    def accepts(self, command: ksp.CommandCode) -> bool:
        return command is ksp.CommandCode.SILENCE or super().accepts(command)

    def execute(self, command: ksp.CommandCode) -> None:
        if command is ksp.CommandCode.SILENCE:
            self._muted_until = time.monotonic() + self.scaled(SILENCE_S)
            self.emit(ksp.Event.STATE_CHANGE)
        elif command is ksp.CommandCode.SELF_TEST:
            self._extra.add(ksp.DetectorFlag.SELF_TEST_OK)
            self.emit(ksp.Event.SELF_TEST)
            self._extra.discard(ksp.DetectorFlag.SELF_TEST_OK)
        else:
            super().execute(command)

    def body(self) -> ksp.DetectorBody:
        return ksp.DetectorBody(round(self.lel_pct * 10), self.flags, self.temp_c)

    def reading(self) -> DetectorReading:
        return DetectorReading(lel_pct=self.lel_pct, flags=tuple(self.flags), temp_c=self.temp_c)


ValveFailure = Literal["stuck", "fault"]


class SimValve(SimDevice):
    """An emergency shut-off valve. It closes on command or on a linked alarm; it never opens
    on any command: only :meth:`manual_open` (a person, on site) reopens it."""

    kind = ksp.DeviceKind.VALVE

    def __init__(
        self,
        device_id: int,
        *,
        fail_to_close: bool = False,
        failure: ValveFailure = "stuck",
        close_time_s: float = 1.0,
        battery_mv: int = 0,
        interval_s: float | None = None,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(
            device_id, battery_mv=battery_mv, interval_s=interval_s, time_scale=time_scale
        )
        self.fail_to_close = fail_to_close
        self.failure: ValveFailure = failure
        self.close_time_s = close_time_s
        self.state = ksp.ValveState.OPEN
        self.cause = ksp.ValveCause.NONE
        self._fault_flags: set[ksp.ValveFlag] = set()
        self._motion: asyncio.Task[None] | None = None

    def link_to(self, source: SimDetector | SimRegulator) -> None:
        """Close by radio when ``source`` alarms, as kit valves do without the gateway."""
        if isinstance(source, SimDetector):
            source.on_alarm(lambda _: self.close(ksp.ValveCause.LINKED_ALARM))
        else:
            source.on_trip(lambda _: self.close(ksp.ValveCause.LINKED_ALARM))

    def close(self, cause: ksp.ValveCause) -> None:
        """Start closing (``moving``); ``closed`` after close_time_s unless it fails."""
        if self.state is ksp.ValveState.CLOSED or self._motion is not None:
            self.emit(ksp.Event.STATE_CHANGE)  # tell the caller where it stands
            return
        self.state, self.cause = ksp.ValveState.MOVING, cause
        self.emit(ksp.Event.STATE_CHANGE)
        self._motion = asyncio.create_task(self._travel(cause), name=f"{self.id_hex}-close")

    async def _travel(self, cause: ksp.ValveCause) -> None:
        try:
            await asyncio.sleep(self.scaled(self.close_time_s))
            if not self.fail_to_close:
                self.state, self.cause = ksp.ValveState.CLOSED, cause
            elif self.failure == "fault":
                self.state = ksp.ValveState.FAULT
                self._fault_flags.add(ksp.ValveFlag.MOTOR_FAULT)
            else:  # stuck: the motor ran, the ball did not turn
                self.state, self.cause = ksp.ValveState.OPEN, ksp.ValveCause.NONE
            self.emit(ksp.Event.STATE_CHANGE)
        finally:
            self._motion = None

    def manual_open(self) -> None:
        """A person reopens the valve by hand on site (the only way it ever opens)."""
        if self._motion is not None:
            self._motion.cancel()
            self._motion = None
        self.state, self.cause = ksp.ValveState.OPEN, ksp.ValveCause.MANUAL
        self._fault_flags.clear()
        self.emit(ksp.Event.STATE_CHANGE)

    async def stop(self) -> None:
        if self._motion is not None:
            self._motion.cancel()
            self._motion = None
        await super().stop()

    def accepts(self, command: ksp.CommandCode) -> bool:
        return command is ksp.CommandCode.CLOSE_VALVE or super().accepts(command)

    def execute(self, command: ksp.CommandCode) -> None:
        # KSP/1 and kit/v1 have no open command: nothing here can open the valve.
        if command is ksp.CommandCode.CLOSE_VALVE:
            self.close(ksp.ValveCause.REMOTE_COMMAND)
        else:
            super().execute(command)

    @property
    def flags(self) -> frozenset[ksp.ValveFlag]:
        flags = set(self._fault_flags)
        if self.low_battery:
            flags.add(ksp.ValveFlag.LOW_BATTERY)
        return frozenset(flags)

    def body(self) -> ksp.ValveBody:
        return ksp.ValveBody(self.state, self.cause, self.flags)

    def reading(self) -> ValveReading:
        return ValveReading(state=self.state, cause=self.cause, flags=tuple(self.flags))


class SimRegulator(SimDevice):
    """A smart over-flow regulator: outlet pressure and a trip sensor (reset by hand)."""

    kind = ksp.DeviceKind.REGULATOR

    def __init__(
        self,
        device_id: int,
        *,
        pressure_pa: int = 2800,
        battery_mv: int = 0,
        interval_s: float | None = None,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(
            device_id, battery_mv=battery_mv, interval_s=interval_s, time_scale=time_scale
        )
        self.nominal_pa = pressure_pa
        self.pressure_pa = pressure_pa
        self._trip: set[ksp.RegulatorFlag] = set()
        self._trip_listeners: list[Callable[[SimRegulator], None]] = []

    def on_trip(self, listener: Callable[[SimRegulator], None]) -> None:
        self._trip_listeners.append(listener)

    def trip_overflow(self) -> None:
        """Over-flow (a ruptured hose): the regulator shuts, outlet pressure drops to 0."""
        self._trip = {ksp.RegulatorFlag.OVERFLOW_TRIPPED, ksp.RegulatorFlag.SELF_CLOSED}
        self.pressure_pa = 0
        self.emit(ksp.Event.ALARM)
        for listener in list(self._trip_listeners):
            listener(self)

    def set_pressure(self, pressure_pa: int) -> None:
        """A new outlet pressure reading (over 8 kPa the regulator flags over_pressure)."""
        self.pressure_pa = pressure_pa
        over = pressure_pa > 8000
        was_over = ksp.RegulatorFlag.OVER_PRESSURE in self._trip
        if over:
            self._trip.add(ksp.RegulatorFlag.OVER_PRESSURE)
        else:
            self._trip.discard(ksp.RegulatorFlag.OVER_PRESSURE)
        self.emit(ksp.Event.ALARM if over and not was_over else ksp.Event.STATE_CHANGE)

    def manual_reset(self) -> None:
        """A person resets the tripped regulator on site."""
        self._trip.clear()
        self.pressure_pa = self.nominal_pa
        self.emit(ksp.Event.STATE_CHANGE)

    @property
    def flags(self) -> frozenset[ksp.RegulatorFlag]:
        flags = set(self._trip)
        if self.low_battery:
            flags.add(ksp.RegulatorFlag.LOW_BATTERY)
        return frozenset(flags)

    def body(self) -> ksp.RegulatorBody:
        return ksp.RegulatorBody(self.pressure_pa, self.flags)

    def reading(self) -> RegulatorReading:
        return RegulatorReading(pressure_pa=self.pressure_pa, flags=tuple(self.flags))


def make_device(
    kind: ksp.DeviceKind, device_id: int, *, battery_mv: int = 0, time_scale: float = 1.0
) -> SimDevice:
    """A device of ``kind`` with default state (used for MQTT-native devices and the district)."""
    if kind is ksp.DeviceKind.DETECTOR:
        return SimDetector(device_id, battery_mv=battery_mv, time_scale=time_scale)
    if kind is ksp.DeviceKind.VALVE:
        return SimValve(device_id, battery_mv=battery_mv, time_scale=time_scale)
    return SimRegulator(device_id, battery_mv=battery_mv, time_scale=time_scale)
