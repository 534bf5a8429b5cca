"""An integrator's own registry as a simulated district: their sites, device ids, links and
reporting intervals, played instead of the generated district (``gasgate simulate --registry``).

A registry device id of 8 lowercase hex digits is a radio device behind a KSP/1 receiver (the
id the bridge publishes it under); any other id is an MQTT-native device. Each site keeps its
registry links: a valve closes by radio when a detector or smart regulator it is linked to
alarms, as the kits do without the gateway. Intervals are the registry's (the row's, else its
model's), multiplied by ``time_scale`` like every other device time.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Final

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector, SimDevice, SimRegulator, SimValve
from firmware_bridge.simulator.district import District, SimSite
from gateway.registry import (
    ComponentType,
    DeviceInfo,
    Power,
    Registry,
    RegistryImportError,
    Site,
    import_dir,
)

__all__ = ["RADIO_ID", "district_from_registry"]

RADIO_ID: Final = re.compile(r"[0-9a-f]{8}")
_BATTERY_MV: Final = {ksp.DeviceKind.VALVE: 3600}  # others: 3000 mV, a fresh lithium cell


def district_from_registry(directory: Path, time_scale: float = 1.0) -> District:
    """The registry in ``directory`` as a district; :class:`RegistryImportError` listing every
    error (``file:line:column``) when the registry check would refuse it."""
    result = import_dir(directory)
    if not result.ok:
        problems = "; ".join(str(p) for p in result.errors[:20])
        more = f" (+{len(result.errors) - 20} more)" if len(result.errors) > 20 else ""
        raise RegistryImportError(f"{directory}: registry has errors: {problems}{more}")
    registry = Registry(result.data)
    sites = [_site(registry, site, time_scale) for site in registry.sites()]
    _link(registry, sites)
    return District(sites, time_scale=time_scale)


def _site(registry: Registry, site: Site, time_scale: float) -> SimSite:
    contacts = registry.contacts(site.site_id)
    contact = contacts[0] if contacts else None
    sim = SimSite(
        site_id=site.site_id,
        name=site.name,
        site_type=site.site_type.value,
        kit=site.kit,
        district=site.district,
        address=site.address,
        contact_name=contact.name if contact else "",
        contact_phone=contact.phone if contact else "",
        contact_lang="en" if contact and contact.lang.value == "en" else "zh",
    )
    for component in registry.components(site.site_id):
        info = registry.device(component.device_id) if component.device_id else None
        if info is not None:
            sim.devices[info.device_id] = _device(info, time_scale)
    sim.mqtt_native = bool(sim.devices) and not any(map(RADIO_ID.fullmatch, sim.devices))
    return sim


def _device(info: DeviceInfo, time_scale: float) -> SimDevice:
    radio = RADIO_ID.fullmatch(info.device_id)
    # An MQTT-native device's number only sets the phase of its reporting interval.
    number = int(info.device_id, 16) if radio else zlib.crc32(info.device_id.encode())
    battery = _BATTERY_MV.get(info.kind, 3000) if info.power is Power.BATTERY else 0
    interval = info.report_interval_s
    if info.kind is ksp.DeviceKind.DETECTOR:
        return SimDetector(number, battery_mv=battery, interval_s=interval, time_scale=time_scale)
    if info.kind is ksp.DeviceKind.VALVE:
        return SimValve(number, battery_mv=battery, interval_s=interval, time_scale=time_scale)
    return SimRegulator(number, battery_mv=battery, interval_s=interval, time_scale=time_scale)


def _link(registry: Registry, sites: list[SimSite]) -> None:
    """Each valve closes on its linked detectors' alarms and its regulators' trips."""
    devices = {ident: device for site in sites for ident, device in site.devices.items()}
    for site in sites:
        for component in registry.components(site.site_id):
            device = devices.get(component.device_id or "")
            if component.component is ComponentType.SHUTOFF_VALVE and isinstance(device, SimValve):
                for source in component.links:
                    detector = devices.get(source)
                    if isinstance(detector, SimDetector):
                        device.link_to(detector)
            elif component.component is ComponentType.SMART_REGULATOR and isinstance(
                device, SimRegulator
            ):
                for target in component.links:
                    valve = devices.get(target)
                    if isinstance(valve, SimValve):
                        valve.link_to(device)
