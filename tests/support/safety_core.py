"""The safety core wired as the gateway wires it (ingest -> bus -> supervision, rules), on a
ManualClock and a real in-memory registry, for the ingest / rules / supervision tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.contract import report_topic
from gateway.events import (
    ConditionChanged,
    DeviceAvailabilityChanged,
    InputRejected,
    ReceiverStatusChanged,
    ReportReceived,
)
from gateway.ingest import Ingest
from gateway.registry import (
    Component,
    ComponentType,
    Cylinder,
    Registry,
    RegistryData,
    Site,
    SiteType,
)
from gateway.supervision import Supervision
from rules.engine import RuleEngine
from rules.schema import RuleSet

C = ComponentType
DETECTOR = "1a2b3c4d"  # radio, mains: 60 s
VALVE = "00c0ffee"  # radio, mains, linked to DETECTOR
REGULATOR = "0badf00d"  # radio, battery: 600 s
HOME_DETECTOR = "home-det-7"  # MQTT-native, household site
UNKNOWN = "deadbeef"


def registry() -> Registry:
    sites = (
        Site("S0001", "Lucky Noodles", SiteType.RESTAURANT, "four_piece", "Futian", "1 Main St"),
        Site("S0002", "Flat 7", SiteType.HOUSEHOLD, "two_piece", "Nanshan", "7 Hill Rd"),
    )
    recent = date(2025, 6, 1)
    components = (
        Component("S0001", C.LEAK_DETECTOR, DETECTOR, "default-detector", recent),
        Component("S0001", C.SHUTOFF_VALVE, VALVE, "default-valve", recent, (DETECTOR,)),
        Component("S0001", C.SMART_REGULATOR, REGULATOR, "default-regulator", recent, (VALVE,)),
        Component("S0001", C.METAL_HOSE, None, "hose", recent),
        Component("S0002", C.LEAK_DETECTOR, HOME_DETECTOR, "default-detector", recent),
        Component("S0002", C.SELF_CLOSING_REGULATOR, None, "reg", recent),
        Component("S0002", C.METAL_HOSE, None, "old-hose", date(2015, 1, 1)),  # past 8 years
    )
    cylinders = (
        Cylinder("S0001", "CYL-1", 15.0, date(2027, 1, 1)),
        Cylinder("S0002", "CYL-2", 15.0, date(2026, 1, 1)),  # overdue
    )
    return Registry(RegistryData(sites=sites, components=components, cylinders=cylinders))


def detector_report(seq: int, lel: float, flags: tuple[str, ...] = (), **extra: Any) -> bytes:
    body = {"kind": "detector", "seq": seq, "event": "periodic"}
    body["detector"] = {"lel_pct": lel, "flags": list(flags)}
    body.update(extra)
    return json.dumps(body).encode()


def valve_report(seq: int, state: str, flags: tuple[str, ...] = ()) -> bytes:
    body = {"kind": "valve", "seq": seq, "event": "state_change"}
    body["valve"] = {"state": state, "cause": "linked_alarm", "flags": list(flags)}
    return json.dumps(body).encode()


def regulator_report(seq: int, flags: tuple[str, ...] = (), pressure_pa: int = 2800) -> bytes:
    body = {"kind": "regulator", "seq": seq, "event": "periodic"}
    body["regulator"] = {"pressure_pa": pressure_pa, "flags": list(flags)}
    return json.dumps(body).encode()


@dataclass
class Core:
    """Ingest, supervision and the rule engine on one bus, recording what comes out."""

    clock: ManualClock = field(default_factory=ManualClock)
    bus: Bus = field(default_factory=Bus)
    registry: Registry = field(default_factory=registry)
    rules: RuleSet = field(default_factory=RuleSet.defaults)
    conditions: list[ConditionChanged] = field(default_factory=list)
    availability: list[DeviceAvailabilityChanged] = field(default_factory=list)
    rejected: list[InputRejected] = field(default_factory=list)
    reports: list[ReportReceived] = field(default_factory=list)
    receivers: list[ReceiverStatusChanged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ingest = Ingest(self.bus, self.registry, self.clock)
        self.supervision = Supervision(self.bus, self.registry, self.clock)
        self.engine = RuleEngine(self.bus, self.registry, self.clock, self.rules)
        self.bus.subscribe(ConditionChanged, self.conditions.append)
        self.bus.subscribe(DeviceAvailabilityChanged, self.availability.append)
        self.bus.subscribe(InputRejected, self.rejected.append)
        self.bus.subscribe(ReportReceived, self.reports.append)
        self.bus.subscribe(ReceiverStatusChanged, self.receivers.append)

    async def start(self) -> None:
        await self.ingest.start()
        await self.supervision.start()
        await self.engine.start()
        await self.bus.join()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.supervision.stop()
        await self.ingest.stop()
        await self.bus.stop()

    async def send(self, device_id: str, payload: bytes) -> None:
        self.ingest.handle_message(report_topic(device_id), payload)
        await self.bus.join()

    async def message(self, topic: str, payload: bytes) -> None:
        self.ingest.handle_message(topic, payload)
        await self.bus.join()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.bus.join()

    def of(self, alarm_type: str, source: str | None = None) -> list[tuple[str, bool]]:
        """(type, active) of every condition of this type (and source), in order."""
        return [
            (c.alarm_type, c.active)
            for c in self.conditions
            if c.alarm_type == alarm_type and (source is None or c.source == source)
        ]
