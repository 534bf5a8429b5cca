"""A whole simulated district running: receivers on their lines, MQTT-native devices on the
broker, and the named scenarios the CLI and the demo play on it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from firmware_bridge.simulator import scenarios
from firmware_bridge.simulator.devices import SimDetector
from firmware_bridge.simulator.district import District, SimSite
from firmware_bridge.simulator.mqtt_device import MqttDevice
from firmware_bridge.simulator.port import PtyPort, SimPort
from firmware_bridge.simulator.receiver import CAPACITY, SimReceiver
from firmware_bridge.simulator.scenarios import Step, Story

__all__ = ["SCENARIOS", "Simulation", "scenario_story"]

log = logging.getLogger(__name__)


@dataclass
class Simulation:
    """``district``'s radio devices behind one receiver per port; its MQTT-native devices on
    ``mqtt_url`` (none if it is ``None``)."""

    district: District
    ports: Sequence[SimPort]
    mqtt_url: str | None = None
    heartbeat_s: float = 30.0
    capacity: int = CAPACITY
    receivers: list[SimReceiver] = field(default_factory=list)
    mqtt_devices: list[MqttDevice] = field(default_factory=list)

    async def start(self) -> None:
        self.receivers = [
            SimReceiver(p, heartbeat_s=self.heartbeat_s, capacity=self.capacity) for p in self.ports
        ]
        if self.receivers:
            self.district.attach(*self.receivers)
        for port, receiver in zip(self.ports, self.receivers, strict=True):
            await port.start()
            await receiver.start()
        if self.mqtt_url is not None:
            self.mqtt_devices = self.district.mqtt_devices(self.mqtt_url)
            for device in self.mqtt_devices:
                await device.start()

    async def stop(self) -> None:
        for device in reversed(self.mqtt_devices):
            await device.stop()
        for port, receiver in zip(self.ports, self.receivers, strict=True):
            await receiver.stop()
            await port.stop()

    def restaurant(self, nth: int = 0, *, with_regulator: bool = False) -> SimSite:
        """The ``nth`` restaurant the simulation runs (behind a receiver, or on MQTT if given);
        negative counts from the end, and a district with fewer gives its last one."""
        running = [
            s
            for s in self.district.sites
            if s.site_type == "restaurant"
            and self._runs(s)
            and _has_detector(s)
            and (s.regulator or not with_regulator)
        ]
        if not running:
            raise LookupError("no running restaurant site fits this scenario")
        return running[max(-len(running), min(nth, len(running) - 1))]

    def household(self, *, radio: bool = False) -> SimSite:
        """The first household the simulation runs (``radio``: one behind a receiver)."""
        for site in self.district.sites:
            fits = (not radio or not site.mqtt_native) and _has_detector(site)
            if site.site_type == "household" and self._runs(site) and fits:
                return site
        raise LookupError("no running household site fits this scenario")

    def _runs(self, site: SimSite) -> bool:
        return (site.mqtt_native and self.mqtt_url is not None) or (
            bool(site.radio_devices) and bool(self.receivers)
        )

    def receiver_of(self, site: SimSite) -> SimReceiver:
        device = site.detector.device_id
        for receiver in self.receivers:
            if device in {d.device_id for d in receiver.devices}:
                return receiver
        raise LookupError(f"site {site.site_id} is not behind a receiver")

    def first_receiver(self) -> SimReceiver:
        if not self.receivers:
            raise LookupError("this simulation has no receiver")
        return self.receivers[0]


def _has_detector(site: SimSite) -> bool:
    return any(isinstance(d, SimDetector) for d in site.devices.values())


async def _leak(sim: Simulation) -> None:
    await scenarios.leak(sim.restaurant().detector)


async def _clear(sim: Simulation) -> None:
    await scenarios.clear_gas(sim.restaurant().detector)


async def _stuck_valve(sim: Simulation) -> None:
    site = sim.restaurant(1)  # not the leak scenario's restaurant, so both can be played
    if site.valve is not None:
        site.valve.fail_to_close = True
    await scenarios.leak(site.detector, peak_pct=55.0)


async def _overflow(sim: Simulation) -> None:
    regulator = sim.restaurant(-1, with_regulator=True).regulator
    if regulator is not None:
        await scenarios.overflow_trip(regulator)


async def _low_battery(sim: Simulation) -> None:
    await scenarios.low_battery(sim.household().detector)


async def _silent(sim: Simulation) -> None:
    site = sim.household(radio=True)
    await scenarios.detector_silent(sim.receiver_of(site), site.detector)


async def _noise(sim: Simulation) -> None:
    await scenarios.noise_burst(sim.first_receiver(), 64)


async def _lost_acks(sim: Simulation) -> None:
    await scenarios.lost_acks(sim.first_receiver(), 3)


async def _unplug(sim: Simulation) -> None:
    port = sim.first_receiver().port
    if isinstance(port, PtyPort):
        await scenarios.unplug(port, 3.0)
    else:
        log.warning("scenario unplug skipped: the line is a real serial device, not a pty")


SCENARIOS: dict[str, tuple[str, Callable[[Simulation], Awaitable[None]]]] = {
    "leak": ("gas rises to 35 %LEL at the first restaurant", _leak),
    "clear": ("the gas at the first restaurant clears", _clear),
    "stuck-valve": (
        "at a second restaurant the valve fails to close; gas reaches 55 %LEL",
        _stuck_valve,
    ),
    "overflow": ("the last restaurant's smart regulator trips on over-flow", _overflow),
    "low-battery": ("a household's wireless alarm runs low on battery", _low_battery),
    "silent": ("a radio household's detector stops reporting", _silent),
    "noise": ("64 random bytes on the first receiver's line", _noise),
    "lost-acks": ("the next 3 ACKs to the first receiver are lost", _lost_acks),
    "unplug": ("the first receiver's USB adapter is pulled for 3 s", _unplug),
}


def scenario_story(
    sim: Simulation, names: Sequence[str], *, start_s: float = 5.0, gap_s: float = 30.0
) -> Story:
    """The named scenarios one after another, ``gap_s`` story seconds apart."""
    steps = []
    for n, name in enumerate(names):
        label, play = SCENARIOS[name]

        steps.append(Step(start_s + n * gap_s, f"{name}: {label}", _bound(play, sim, name)))
    return Story(steps, time_scale=sim.district.time_scale)


def _bound(
    play: Callable[[Simulation], Awaitable[None]], sim: Simulation, name: str
) -> Callable[[], Awaitable[None]]:
    """The scenario as a story action; one that does not fit this district is skipped, logged."""

    async def action() -> None:
        try:
            await play(sim)
        except LookupError as exc:
            log.warning("scenario %s skipped: %s", name, exc)

    return action
