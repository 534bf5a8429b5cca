"""Scenarios: what happens at a site, as short bounded coroutines, and a timed :class:`Story`.

Device scenarios take their pace from the device's ``time_scale`` (one "second" of a scenario is
``time_scale`` wall seconds), so a story written in real seconds runs fast in tests.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from firmware_bridge.simulator.devices import SimDetector, SimDevice, SimRegulator
from firmware_bridge.simulator.port import PtyPort
from firmware_bridge.simulator.receiver import SimReceiver

__all__ = [
    "Step",
    "Story",
    "clear_gas",
    "detector_silent",
    "leak",
    "lost_acks",
    "low_battery",
    "noise_burst",
    "overflow_trip",
    "unplug",
]

log = logging.getLogger(__name__)


async def leak(
    detector: SimDetector, peak_pct: float = 35.0, *, step_pct: float = 5.0, step_s: float = 10.0
) -> None:
    """Gas rises from the current reading to ``peak_pct`` in steps, and stays there."""
    if step_pct <= 0:
        raise ValueError("step_pct must be positive")
    level = detector.lel_pct
    while level < peak_pct:
        level = min(peak_pct, level + step_pct)
        detector.set_lel(level)
        if level < peak_pct:
            await asyncio.sleep(detector.scaled(step_s))


async def clear_gas(detector: SimDetector, *, step_pct: float = 10.0, step_s: float = 10.0) -> None:
    """Ventilation: the reading falls to 0 in steps (alarm flags clear with hysteresis)."""
    level = detector.lel_pct
    while level > 0:
        level = max(0.0, level - step_pct)
        detector.set_lel(level)
        if level > 0:
            await asyncio.sleep(detector.scaled(step_s))


async def overflow_trip(regulator: SimRegulator) -> None:
    """The hose ruptures: the regulator trips (its linked valve closes by radio)."""
    regulator.trip_overflow()


async def low_battery(device: SimDevice, battery_mv: int = 2300) -> None:
    """The battery runs down below the low-battery threshold."""
    device.set_battery(battery_mv)


async def detector_silent(receiver: SimReceiver, detector: SimDetector) -> None:
    """The detector stops reporting (dead, removed, out of range): supervision must notice."""
    receiver.silence(detector.device_id)


async def noise_burst(receiver: SimReceiver, n_bytes: int, *, seed: int = 0) -> None:
    """Random bytes on the line between frames."""
    rng = random.Random(seed)
    receiver.inject_noise(bytes(rng.randrange(256) for _ in range(n_bytes)))


async def lost_acks(receiver: SimReceiver, n: int) -> None:
    """The next ``n`` ACKs are lost on the line: the receiver retransmits."""
    receiver.drop_next_acks(n)


async def unplug(port: PtyPort, seconds: float) -> None:
    """Pull the USB adapter for ``seconds``, then plug it back in (a new tty node)."""
    port.unplug()
    await asyncio.sleep(seconds)
    port.replug()


Action = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at_s`` (story seconds from the start), run ``action``; ``label`` says what it is."""

    at_s: float
    label: str
    action: Action


class Story:
    """Timed steps run in order; a step's action may be a coroutine (awaited before the next)."""

    def __init__(self, steps: Sequence[Step], *, time_scale: float = 1.0) -> None:
        self.steps = sorted(steps, key=lambda s: s.at_s)
        self.time_scale = time_scale
        self.done: list[str] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for step in self.steps:
            delay = started + step.at_s * self.time_scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            log.info("story t=%.1fs: %s", step.at_s, step.label)
            result = step.action()
            if inspect.isawaitable(result):
                await result
            self.done.append(step.label)
