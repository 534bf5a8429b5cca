"""Device supervision: who is online. A device silent for ``missed_intervals`` of its own
reporting intervals (the registry's, per device: mains 60 s, battery 600 s) goes offline; its
next report brings it back. A receiver that goes offline (its status says so, the bridge's
last will, or no status for ``RECEIVER_SILENCE_S``) takes its radio devices with it.

Deadlines sit in a timer wheel of one-second slots driven by a single periodic tick on the
clock's monotonic timers: a report moves its device to a later slot (two set operations, O(1)),
the tick looks only at the slots that came due. With 100k devices reporting every minute that is
~1.7k moves per second and no timer handle per device; a wall-clock jump moves nothing.

After :meth:`Supervision.start` every registered device counts as just heard from, so a restart
gives each one ``missed_intervals`` full intervals of grace: no flood of offline alarms. Until a
device is heard from (or its grace ends) it is only its id in the wheel slot where its grace
ends: its own state is made at its first report, so 100,000 registered devices cost no more
than the ones that report.

Which devices are behind which bridge: kit/v1 topics do not say (a bridge publishes radio
devices' reports under their own ids) and the registry has no such field. Radio devices have
8-hex-digit ids; when a receiver goes offline every online radio device goes offline with it,
except those learned not to be behind it: a radio device that reports while a receiver is offline
is remembered as not behind that receiver. One bridge per gateway (the usual site) is therefore
exact; with several, the first outage of each may mark too many devices offline, the safe side
(each comes back with its next report).

Which bridges are this gateway's: the ``bridges`` setting (:class:`BridgeRoster`). A site broker
may be shared, and keeps the retained status of every bridge that ever ran on it (a demo, a
neighbour's gateway): a receiver not listed is logged once, counted and ignored, so its outage
neither takes our devices offline nor pages our duty room.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.contract import ReceiverStatus
from gateway.events import DeviceAvailabilityChanged, ReceiverStatusChanged, ReportReceived
from gateway.registry.model import DeviceInfo

__all__ = ["RECEIVER_SILENCE_S", "TICK_S", "BridgeRoster", "DeviceDirectory", "Supervision"]

log = logging.getLogger(__name__)

TICK_S: Final = 1.0  # wheel slot width: offline is declared at most this late
# The bridge republishes its receiver's status on every heartbeat (30 s): three missed ones and
# the receiver, or a hung bridge that kept its MQTT session, is unreachable (docs/bridge.md).
RECEIVER_SILENCE_S: Final = 90.0
_RADIO_ID: Final = re.compile(r"[0-9a-f]{8}")


class DeviceDirectory(Protocol):
    """What supervision reads from :class:`gateway.registry.Registry`."""

    def device(self, device_id: str) -> DeviceInfo | None: ...
    def devices(self) -> tuple[DeviceInfo, ...]: ...


class BridgeRoster:
    """The bridges whose receivers this gateway supervises (``None``: every bridge heard, as a
    library default for tests and single-bridge tools; the gateway passes its setting)."""

    def __init__(self, bridge_ids: Collection[str] | None = None) -> None:
        self._ids = None if bridge_ids is None else frozenset(bridge_ids)
        self._ignored: set[str] = set()
        self.counts: Counter[str] = Counter()  # ignored.<bridge_id>: statuses passed over

    def listed(self, bridge_id: str) -> bool:
        """True for one of ours, without a word (the rule engine asks too: one log line)."""
        return self._ids is None or bridge_id in self._ids

    def supervises(self, bridge_id: str) -> bool:
        """True for one of ours; another is logged the first time, then only counted."""
        if self.listed(bridge_id):
            return True
        self.counts[f"ignored.{bridge_id}"] += 1
        if bridge_id not in self._ignored:
            self._ignored.add(bridge_id)
            log.warning(
                "bridge %s is not one of this gateway's (bridges: %s): its receiver status is "
                "ignored; add it to the bridges setting to supervise it",
                bridge_id,
                ", ".join(sorted(self._ids or ())) or "none configured",
            )
        return False


@dataclass(slots=True)
class _Watch:
    interval_s: int  # the registry's own int object: no float per device
    radio: bool
    online: bool = True
    slot: int | None = None  # the wheel slot holding it; None while offline
    cut_off: bool = False  # offline only because its receiver is: not yet proven dead itself


class Supervision:
    def __init__(
        self,
        bus: Bus,
        registry: DeviceDirectory,
        clock: Clock,
        *,
        missed_intervals: int = 3,
        receiver_silence_s: float = RECEIVER_SILENCE_S,
        bridges: BridgeRoster | None = None,
    ) -> None:
        self._bus = bus
        self._bridges = bridges or BridgeRoster()
        self._registry = registry
        self._clock = clock
        self._missed = missed_intervals
        self._watches: dict[str, _Watch] = {}
        self._wheel: defaultdict[int, set[str]] = defaultdict(set)
        self._next_slot = 0
        # Report interval → the slot where the start's grace ends for devices of that interval.
        self._grace_slots: dict[int, int] = {}
        self._tick: Timer | None = None
        self._receiver_silence_s = receiver_silence_s
        self._receivers_offline: set[str] = set()
        self._receivers_heard: dict[str, float] = {}  # online receivers: last status (mono)
        self._not_behind: defaultdict[str, set[str]] = defaultdict(set)
        self._running = False
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        now = self._clock.monotonic()
        self._next_slot = math.floor(now)
        self._running = True
        devices = self._registry.devices()
        for info in devices:
            interval = info.report_interval_s
            slot = self._grace_slots.get(interval)
            if slot is None:
                slot = self._grace_slots[interval] = math.ceil(now + self._missed * interval)
            self._wheel[slot].add(info.device_id)
        self._bus.subscribe(ReportReceived, self._on_report, name="supervision.report")
        self._bus.subscribe(
            DeviceAvailabilityChanged, self._on_availability, name="supervision.availability"
        )
        self._bus.subscribe(ReceiverStatusChanged, self._on_receiver, name="supervision.receiver")
        self._tick = self._clock.call_later(TICK_S, self._on_tick)
        log.info("supervising %d device(s)", len(devices))

    async def stop(self) -> None:
        self._running = False
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def online(self, device_id: str) -> bool | None:
        """The device's availability as supervision sees it (None: not supervised)."""
        watch = self._watches.get(device_id)
        if watch is not None:
            return watch.online
        info = self._registry.device(device_id)
        return True if info is not None and self._grace_slot(info) is not None else None

    # --- the wheel ------------------------------------------------------------------------

    def _watch(self, info: DeviceInfo) -> _Watch:
        """The device's state, made at the first need; a device still in the start's grace
        takes its place in the wheel over."""
        watch = self._watches.get(info.device_id)
        if watch is None:
            radio = _RADIO_ID.fullmatch(info.device_id) is not None
            watch = self._watches[info.device_id] = _Watch(info.report_interval_s, radio)
            watch.slot = self._grace_slot(info)
        return watch

    def _grace_slot(self, info: DeviceInfo) -> int | None:
        """The slot holding a device not heard from since the start, if its grace runs."""
        slot = self._grace_slots.get(info.report_interval_s)
        waiting = self._wheel.get(slot) if slot is not None else None
        return slot if waiting is not None and info.device_id in waiting else None

    def _heard(self, device_id: str, watch: _Watch, now: float) -> None:
        slot = math.ceil(now + self._missed * watch.interval_s)
        if slot != watch.slot:
            self._unslot(device_id, watch)
            self._wheel[slot].add(device_id)
            watch.slot = slot

    def _unslot(self, device_id: str, watch: _Watch) -> None:
        if watch.slot is not None:
            self._wheel[watch.slot].discard(device_id)
            watch.slot = None

    def _on_tick(self) -> None:
        if not self._running:
            return
        now = self._clock.monotonic()
        # Every slot up to now, so a stalled loop catches up instead of skipping slots.
        while self._next_slot <= now:
            slot = self._next_slot
            due = self._wheel.pop(slot, None)
            self._next_slot += 1
            for device_id in due or ():
                watch = self._watches.get(device_id)
                if watch is None:  # silent since the start: its grace is over
                    info = self._registry.device(device_id)
                    if info is None:  # no longer registered (a new import)
                        continue
                    watch = self._watch(info)
                elif watch.slot != slot:
                    # Its watch was made elsewhere (a new import changed its interval).
                    continue
                watch.slot = None
                self._set_offline(device_id, watch, "missed_reports")
        self._check_receivers(now)
        self._tick = self._clock.call_later(TICK_S, self._on_tick)

    def _check_receivers(self, now: float) -> None:
        """A receiver whose status stopped coming is offline, as if the bridge had said so."""
        for bridge_id, heard in list(self._receivers_heard.items()):
            if now - heard >= self._receiver_silence_s:
                del self._receivers_heard[bridge_id]
                self.counts["receiver_silent"] += 1
                at = self._clock.now()
                status = ReceiverStatus(online=False, ts=at)
                self._bus.publish(ReceiverStatusChanged(bridge_id, status, at))

    def _set_offline(
        self, device_id: str, watch: _Watch, reason: Literal["missed_reports", "receiver_offline"]
    ) -> None:
        self._unslot(device_id, watch)
        # A device cut off with its receiver is offline already, but silently (the receiver's
        # alarm stands for it); if it stays silent once its receiver is back, say so now.
        if not watch.online and not (watch.cut_off and reason == "missed_reports"):
            return
        watch.online = False
        watch.cut_off = reason == "receiver_offline"
        self.counts[f"offline.{reason}"] += 1
        self._bus.publish(DeviceAvailabilityChanged(device_id, False, reason, self._clock.now()))

    # --- events ---------------------------------------------------------------------------

    def _on_report(self, event: ReportReceived) -> None:
        if not self._running:
            return
        watch = self._watches.get(event.device_id)
        if watch is None:
            info = self._registry.device(event.device_id)
            if info is None:
                return
            watch = self._watch(info)
        self._heard(event.device_id, watch, event.received_mono)
        if watch.radio and self._receivers_offline:
            for bridge_id in self._receivers_offline:  # it reports, so it is not behind these
                self._not_behind[bridge_id].add(event.device_id)
        if not watch.online:
            watch.online = True
            watch.cut_off = False
            self.counts["online.report"] += 1
            self._bus.publish(
                DeviceAvailabilityChanged(event.device_id, True, "report", self._clock.now())
            )

    def _on_availability(self, event: DeviceAvailabilityChanged) -> None:
        """A device's own availability topic (MQTT-native devices' last will); our own events
        come back here too and are already applied."""
        if event.reason != "availability_topic" or not self._running:
            return
        info = self._registry.device(event.device_id)
        if info is None:
            return
        watch = self._watch(info)
        if not event.online:
            watch.online = False
            self._unslot(event.device_id, watch)
        elif not watch.online:
            # Connected again: it must now report within the usual intervals.
            watch.online = True
            self._heard(event.device_id, watch, self._clock.monotonic())

    def _on_receiver(self, event: ReceiverStatusChanged) -> None:
        if not self._running or not self._bridges.supervises(event.bridge_id):
            return
        bridge_id = event.bridge_id
        if event.status.online:
            # Its devices stay offline until each reports again: only a report proves it. Each
            # gets its usual intervals to do so; one that does not is offline in its own right.
            self._receivers_offline.discard(bridge_id)
            now = self._receivers_heard[bridge_id] = self._clock.monotonic()
            for device_id, watch in self._watches.items():
                if watch.cut_off and watch.slot is None:
                    self._heard(device_id, watch, now)
            return
        self._receivers_heard.pop(bridge_id, None)
        if bridge_id in self._receivers_offline:
            return
        self._receivers_offline.add(bridge_id)
        self._watch_radio_in_grace()
        for device_id in self._behind(bridge_id):
            self._set_offline(device_id, self._watches[device_id], "receiver_offline")

    def _watch_radio_in_grace(self) -> None:
        """Radio devices not heard from since the start get their state now: a receiver's
        outage takes them offline with the rest."""
        for info in self._registry.devices():
            if (
                info.device_id not in self._watches
                and _RADIO_ID.fullmatch(info.device_id)
                and self._grace_slot(info) is not None
            ):
                self._watch(info)

    def _behind(self, bridge_id: str) -> Iterable[str]:
        excluded = self._not_behind.get(bridge_id, set())
        return [
            device_id
            for device_id, watch in self._watches.items()
            if watch.radio and watch.online and device_id not in excluded
        ]
