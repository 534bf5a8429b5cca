"""A small hand-written registry for linkage and end-to-end tests: one restaurant whose leak
detector closes two valves, and whose smart regulator closes a third; all MQTT-native."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice

__all__ = [
    "DETECTOR",
    "REGULATOR",
    "REGULATOR_VALVE",
    "SITE",
    "VALVES",
    "kit_devices",
    "write_registry",
]

SITE = "rest-e2e"
DETECTOR = "det-a"
VALVES = ("valve-a1", "valve-a2")
REGULATOR = "reg-a"
REGULATOR_VALVE = "valve-r"


def write_registry(directory: Path, interval_s: int = 60) -> Path:
    """sites.csv + components.csv in ``directory``; every device reports every ``interval_s``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sites.csv").write_text(
        "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang\n"
        f"{SITE},Golden Wok,restaurant,four_piece,Futian,12 Shennan Rd,Li Wei,13800138000,zh\n",
        encoding="utf-8",
    )
    rows = [
        f"{SITE},leak_detector,{DETECTOR},KD-210C,2025-03-01,,{interval_s}",
        *(f"{SITE},shutoff_valve,{v},SV-25E,2025-03-01,{DETECTOR},{interval_s}" for v in VALVES),
        f"{SITE},shutoff_valve,{REGULATOR_VALVE},SV-25E,2025-03-01,,{interval_s}",
        f"{SITE},smart_regulator,{REGULATOR},RG-28S,2025-03-01,{REGULATOR_VALVE},{interval_s}",
        f"{SITE},metal_hose,,MH-1500,2025-03-01,,",
    ]
    (directory / "components.csv").write_text(
        "site_id,component,device_id,model,installed_on,links,report_interval_s\n"
        + "\n".join(rows)
        + "\n",
        encoding="utf-8",
    )
    return directory


@asynccontextmanager
async def kit_devices(mqtt_url: str, *, stuck: bool = False) -> AsyncIterator[SimDetector]:
    """The restaurant's detector and its two linked valves, MQTT-native on the site broker,
    reporting every minute; ``stuck``: the first valve answers "ok" to every close command and
    stays open."""
    detector = SimDetector(1, battery_mv=0, interval_s=60)
    valves = [SimValve(2, fail_to_close=stuck, close_time_s=0.1, interval_s=60),
              SimValve(3, close_time_s=0.1, interval_s=60)]  # fmt: skip
    devices = [MqttDevice(mqtt_url, DETECTOR, detector.kind, model=detector)] + [
        MqttDevice(mqtt_url, v, SimValve.kind, model=m) for v, m in zip(VALVES, valves, strict=True)
    ]
    for device in devices:
        await device.start()
    try:
        yield detector
    finally:
        for device in devices:
            await device.stop()
