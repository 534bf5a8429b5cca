"""Ingest: every ``kit/v1/#`` message in, typed events out. The hot path of the gateway.

:meth:`Ingest.handle_message` is called by the site MQTT client for each message. It is
synchronous, O(1) per message and never raises: a report from a registered device becomes a
``ReportReceived`` (stamped with the gateway's own clock: device clocks are data, not time),
availability topics become ``DeviceAvailabilityChanged``, the bridge's receiver topic a
``ReceiverStatusChanged``. Everything else is refused with a reason that is counted
(:attr:`Ingest.counts`), logged at most once per reason every ``LOG_EVERY_S`` (a flood cannot fill
the disk; the suppressed number is logged with the next line), and published as
``InputRejected``. Our own ``cmd`` topics and devices' ``cmd/ack`` belong to the linkage room and
are passed over here without a word.

A receiver's retransmission or a QoS 1 redelivery is a duplicate: the same device, seq and
report within ``DUPLICATE_WINDOW_S`` (the contract's 10 s) is dropped and counted. A device's
last report is kept only that long: it is ~2 KB decoded, and 100,000 devices' would be 200 MB.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Final, Protocol

from firmware_bridge.ksp import Event
from gateway.bus import Bus
from gateway.clock import Clock
from gateway.contract import DeviceTime, KitReport, ReceiverStatus, decode, parse_topic
from gateway.errors import RejectedInput
from gateway.events import (
    DeviceAvailabilityChanged,
    InputRejected,
    ReceiverStatusChanged,
    ReportReceived,
)
from gateway.logs import LogGate
from gateway.registry.model import DeviceInfo

__all__ = ["DUPLICATE_WINDOW_S", "LOG_EVERY_S", "DeviceLookup", "Ingest"]

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S: Final = 10.0
LOG_EVERY_S: Final = 10.0
_AVAILABILITY: Final = {b"online": True, b"offline": False}


class DeviceLookup(Protocol):
    """The one registry lookup ingest needs (:meth:`gateway.registry.Registry.device`)."""

    def device(self, device_id: str) -> DeviceInfo | None: ...


@dataclass(slots=True)
class _Last:
    """The last accepted report of one device, for the duplicate check."""

    seq: int
    payload: bytes
    report: KitReport
    mono: float


class Ingest:
    def __init__(self, bus: Bus, registry: DeviceLookup, clock: Clock) -> None:
        self._bus = bus
        self._registry = registry
        self._clock = clock
        self._last: dict[str, _Last] = {}
        self._accepted: deque[tuple[float, str]] = deque()  # (mono, device): oldest first
        self._log_gates: dict[str, LogGate] = {}
        self._device_time_gate = LogGate(LOG_EVERY_S)
        #: accepted.report, duplicate, accepted.availability, accepted.receiver, ignored.cmd,
        #: and one ``rejected.<reason>`` per refusal reason.
        self.counts: Counter[str] = Counter()
        #: what was accepted with a flag (beside ``counts``, which has one outcome a message):
        #: ``device_time``, a report whose ``ts`` is no usable time.
        self.flagged: Counter[str] = Counter()

    async def start(self) -> None:
        """Nothing to open: ingest is driven by the site MQTT client's messages."""

    async def stop(self) -> None:
        """Say how many rejection log lines were held back since the last one logged."""
        for reason, gate in self._log_gates.items():
            if gate.suppressed:
                log.warning("%d more input(s) rejected as %s (not logged)", gate.suppressed, reason)
                gate.suppressed = 0
        if self._device_time_gate.suppressed:
            held, self._device_time_gate.suppressed = self._device_time_gate.suppressed, 0
            log.warning("%d more device time(s) flagged (not logged)", held)

    def handle_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One ``kit/v1/#`` message (``retained``: the broker's stored copy). Never raises: a
        bug here must not cost the next leak."""
        try:
            kind, ident = parse_topic(topic)
            if kind == "report":
                self._report(topic, ident, payload, retained)
            elif kind == "availability":
                self._availability(topic, ident, payload)
            elif kind == "receiver":
                self._receiver(topic, ident, payload)
            elif kind == "bridge/availability":
                self._bridge_availability(topic, ident, payload)
            else:  # cmd (ours, echoed by the broker) and cmd/ack: the linkage room's
                self.counts["ignored.cmd"] += 1
        except RejectedInput as exc:
            self._reject(exc.reason, exc.where or topic, exc.detail, None)
        except Exception as exc:  # a bug: counted and logged, never propagated to the client
            log.exception("ingest failed on %s", topic)
            self._reject("internal_error", topic, repr(exc), None)

    # --- topics ---------------------------------------------------------------------------

    def _report(self, topic: str, device_id: str, payload: bytes, retained: bool) -> None:
        device = self._registry.device(device_id)
        if device is None:
            self._reject("unregistered_device", topic, "device id not in the registry", device_id)
            return
        now = self._clock.monotonic()
        last = self._last.get(device_id)
        if last is not None and payload == last.payload and now - last.mono <= DUPLICATE_WINDOW_S:
            self.counts["duplicate"] += 1  # byte-identical: no need to parse it again
            return
        report = decode(KitReport, payload, topic)
        if report.kind is not device.kind:
            detail = f"a {report.kind.value} report from a registered {device.kind.value}"
            self._reject("wrong_kind", topic, detail, device_id)
            return
        if (
            last is not None
            and report.seq == last.seq
            and now - last.mono <= DUPLICATE_WINDOW_S
            and report == last.report
        ):
            self.counts["duplicate"] += 1
            return
        self._last[device_id] = _Last(report.seq, payload, report, now)
        self._accepted.append((now, device_id))
        self._forget_old(now)
        self.counts["accepted.report"] += 1
        # Anything but a periodic report (an alarm, a state change) is handled ahead of them.
        urgent = report.event is not Event.PERIODIC
        event = ReportReceived(device_id, report, self._clock.now(), now, retained)
        self._bus.publish(event, urgent=urgent)
        # Flagged only once published: nothing in the flagging can cost the report.
        if report.ts is not None and report.ts.problem is not None:
            self._flag_device_time(topic, report.ts)

    def _forget_old(self, now: float) -> None:
        """Drop the last reports no duplicate can match any more (O(1) a report, amortized)."""
        accepted = self._accepted
        while accepted and now - accepted[0][0] > DUPLICATE_WINDOW_S:
            mono, device_id = accepted.popleft()
            last = self._last.get(device_id)
            if last is not None and last.mono == mono:  # not replaced by a later report
                del self._last[device_id]

    def _availability(self, topic: str, device_id: str, payload: bytes) -> None:
        online = _AVAILABILITY.get(payload.strip())
        if online is None:
            raise RejectedInput("bad_availability", "payload must be online or offline", topic)
        if self._registry.device(device_id) is None:
            self._reject("unregistered_device", topic, "device id not in the registry", device_id)
            return
        self.counts["accepted.availability"] += 1
        event = DeviceAvailabilityChanged(
            device_id, online, "availability_topic", self._clock.now()
        )
        self._bus.publish(event)

    def _receiver(self, topic: str, bridge_id: str, payload: bytes) -> None:
        status = decode(ReceiverStatus, payload, topic)
        self.counts["accepted.receiver"] += 1
        self._bus.publish(ReceiverStatusChanged(bridge_id, status, self._clock.now()))

    def _bridge_availability(self, topic: str, bridge_id: str, payload: bytes) -> None:
        """The bridge process itself gone (its last will): its receiver is unreachable too.
        ``online`` says nothing about the receiver; its own retained status topic does."""
        online = _AVAILABILITY.get(payload.strip())
        if online is None:
            raise RejectedInput("bad_availability", "payload must be online or offline", topic)
        self.counts["accepted.bridge_availability"] += 1
        if not online:
            now = self._clock.now()
            status = ReceiverStatus(online=False, ts=now)
            self._bus.publish(ReceiverStatusChanged(bridge_id, status, now))

    # --- refusals -------------------------------------------------------------------------

    def _reject(self, reason: str, where: str, detail: str, device_id: str | None) -> None:
        self.counts[f"rejected.{reason}"] += 1
        self._log_rejection(reason, where, detail)
        self._bus.publish(InputRejected(reason, where, detail, self._clock.now(), device_id))

    def _log_rejection(self, reason: str, where: str, detail: str) -> None:
        gate = self._log_gates.get(reason)
        if gate is None:
            gate = self._log_gates[reason] = LogGate(LOG_EVERY_S)
        held = gate.admit(self._clock.monotonic())
        if held is not None:
            log.warning("rejected %s: %s: %s (+%d not logged before)", where, reason, detail, held)

    def _flag_device_time(self, topic: str, ts: DeviceTime) -> None:
        """A ``ts`` that is no usable time is counted and logged; the report stands all the same
        (a device clock must never veto a leak)."""
        self.flagged["device_time"] += 1
        held = self._device_time_gate.admit(self._clock.monotonic())
        if held is not None:
            detail = f"ts {ts.text!r}: {ts.problem}"
            log.warning("device time flagged, %s: %s (+%d not logged before)", topic, detail, held)
