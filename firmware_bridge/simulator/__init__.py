"""The kit simulator: a KSP/1 receiver with radio devices on a pty, MQTT-native kit devices,
a seeded district with its registry, and scenarios. See docs/simulator.md."""

from __future__ import annotations

from firmware_bridge.simulator.devices import SimDetector, SimDevice, SimRegulator, SimValve
from firmware_bridge.simulator.district import District, SimSite
from firmware_bridge.simulator.mqtt_device import MqttDevice
from firmware_bridge.simulator.port import PtyPort, SerialPort, SimPort
from firmware_bridge.simulator.receiver import ReceivedCommand, ReceiverStats, SimReceiver
from firmware_bridge.simulator.scenarios import (
    Step,
    Story,
    clear_gas,
    detector_silent,
    leak,
    lost_acks,
    low_battery,
    noise_burst,
    overflow_trip,
    unplug,
)
from firmware_bridge.simulator.simulation import SCENARIOS, Simulation, scenario_story

__all__ = [
    "SCENARIOS",
    "District",
    "MqttDevice",
    "PtyPort",
    "ReceivedCommand",
    "ReceiverStats",
    "SerialPort",
    "SimDetector",
    "SimDevice",
    "SimPort",
    "SimReceiver",
    "SimRegulator",
    "SimSite",
    "SimValve",
    "Simulation",
    "Step",
    "Story",
    "clear_gas",
    "detector_silent",
    "leak",
    "lost_acks",
    "low_battery",
    "noise_burst",
    "overflow_trip",
    "scenario_story",
    "unplug",
]
