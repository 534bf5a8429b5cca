"""A fleet of simulated gateways on ``gasco/v1``, for the center's tests, demo and benchmarks.

Each simulated gateway says what a real one says (docs/gas-company-contract.md): its retained
``availability`` (``online``), one retained ``sites/{site_id}/summary`` per site, and alarm
events on ``alarms/events`` whose ``alarm_id`` / ``revision`` sequences are those of real alarms
(raised → valve_changed → escalated → acknowledged → cleared → resolved for a leak; raised →
acknowledged → cleared for a maintenance alarm). The payloads come from the gateway's own
builders (:func:`gateway.escalation.payloads.site_summary` and ``alarm_event``, with the edge
audit's :class:`gateway.audit.SiteCondition` behind ``protected``), so they are valid against
docs/schemas by construction.

A few MQTT connections publish on behalf of every gateway: a thousand gateways do not need a
thousand sockets to put a hundred thousand retained messages at the broker, and the center
cannot tell (it reads topics, not client ids). The one thing a shared connection cannot do is
a per-gateway last will: a simulated gateway goes offline only when the fleet says so
(:meth:`Fleet.offline`, published retained like a real clean stop).

Publishing is :mod:`central.fleet_wire`: QoS 1, pre-encoded, as many in flight as the broker
allows on each connection, so the broker, not the round trip or the client library, sets the
pace. Everything is bounded: gateways, sites, events and time (:data:`LIMITS`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import click

from central.fleet_wire import Wire, WireError
from gateway.alarms import new_id
from gateway.audit import SiteCondition
from gateway.escalation.payloads import alarm_event, site_summary
from gateway.events import Severity
from gateway.model import Alarm, AlarmState
from gateway.mqtturl import parse_mqtt_url
from gateway.registry.model import (
    ComponentType,
    Cylinder,
    KitStatus,
    ServiceFinding,
    Site,
    SiteType,
)

__all__ = [
    "DISTRICTS",
    "LIMITS",
    "Fleet",
    "FleetError",
    "FleetReport",
    "FleetSpec",
    "Message",
    "Publisher",
    "Story",
    "Storyteller",
    "availability",
    "simulate",
    "simulate_command",
    "summaries",
]

Message = tuple[str, bytes]  # topic, payload

DISTRICTS: Final = ("Liangxi", "Xinwu", "Binhu", "Huishan", "Xishan", "Jiangyin", "Yixing")
LIMITS: Final = {
    "gateways": 10_000,
    "sites": 1_000,  # per gateway
    "summaries": 1_000_000,  # gateways x sites
    "events_per_s": 50_000,
    "duration_s": 3_600,
    "events": 1_000_000,
}
OFFICER: Final = "sim-officer"
CENTER: Final = (31.49, 120.31)  # Wuxi: the simulated sites lie around it


class FleetError(ValueError):
    """A fleet beyond :data:`LIMITS`, or a broker that did not take what was published."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """``gateways`` gateways of ``sites`` sites each; ids ``{name}-gw0001``, ``...-s001``."""

    gateways: int
    sites: int
    prefix: str = "gasco/v1"
    name: str = "sim"
    seed: int = 13

    def __post_init__(self) -> None:
        if not 1 <= self.gateways <= LIMITS["gateways"]:
            raise FleetError(f"gateways: 1 to {LIMITS['gateways']}")
        if not 1 <= self.sites <= LIMITS["sites"]:
            raise FleetError(f"sites: 1 to {LIMITS['sites']} per gateway")
        if self.gateways * self.sites > LIMITS["summaries"]:
            raise FleetError(f"gateways x sites: at most {LIMITS['summaries']}")

    def gateway_id(self, g: int) -> str:
        return f"{self.name}-gw{g + 1:04d}"

    def gateway_ids(self) -> list[str]:
        return [self.gateway_id(g) for g in range(self.gateways)]

    def site_id(self, g: int, s: int) -> str:
        return f"{self.gateway_id(g)}-s{s + 1:03d}"

    def district(self, g: int) -> str:
        """A gateway serves one district (a gateway offline: "N sites in district D")."""
        return DISTRICTS[g % len(DISTRICTS)]

    def topic(self, g: int, suffix: str) -> str:
        return f"{self.prefix}/{self.gateway_id(g)}/{suffix}"

    def site(self, g: int, s: int) -> Site:
        rng = random.Random(hash((self.seed, g, s)))
        kind = SiteType.HOUSEHOLD if s % 3 == 2 else SiteType.RESTAURANT
        if s % 20 == 19:
            kind = SiteType.OTHER
        return Site(
            site_id=self.site_id(g, s),
            name=f"{'Restaurant' if kind is SiteType.RESTAURANT else 'Site'} {g + 1}-{s + 1}",
            site_type=kind,
            kit="two_piece" if kind is SiteType.HOUSEHOLD else "four_piece",
            district=self.district(g),
            address=f"{s + 1} {self.district(g)} Road, block {g + 1}",
            latitude=round(CENTER[0] + rng.uniform(-0.2, 0.2), 5),
            longitude=round(CENTER[1] + rng.uniform(-0.3, 0.3), 5),
        )


# --- site summaries ----------------------------------------------------------------------------


def _condition(site_id: str, s: int, today: date) -> tuple[KitStatus, SiteCondition]:
    """A varied but fixed coverage picture: 1 site in 7 misses its hose, 1 in 10 has a detector
    past its service life, 1 in 13 a device not heard for a day, 1 in 20 an overdue cylinder."""
    missing = (str(ComponentType.METAL_HOSE),) if s % 7 == 3 else ()
    devices = (f"{site_id}-det", f"{site_id}-valve")
    expired = (
        (
            ServiceFinding(
                site_id,
                ComponentType.LEAK_DETECTOR,
                devices[0],
                "KD-210C",
                today - timedelta(days=3 * 365 + 30),
                36,
                today - timedelta(days=30),
            ),
        )
        if s % 10 == 4
        else ()
    )
    overdue = (
        (Cylinder(site_id, f"{site_id}-cyl", 15.0, today - timedelta(days=20)),)
        if s % 20 == 11
        else ()
    )
    condition = SiteCondition(
        kit_complete=not missing,
        missing=missing,
        devices=devices,
        offline=devices[1:] if s % 13 == 6 else (),
        past_service_life=expired,
        cylinders_overdue=overdue,
    )
    return KitStatus(not missing, missing), condition


def summaries(
    spec: FleetSpec, at: datetime, gateways: Iterable[int] | None = None
) -> list[Message]:
    """Every site's retained summary (QoS 1, retained), built by the gateway's own builder."""
    out: list[Message] = []
    today = at.date()
    for g in range(spec.gateways) if gateways is None else gateways:
        for s in range(spec.sites):
            site = spec.site(g, s)
            kit, condition = _condition(site.site_id, s, today)
            online = len(condition.devices) - len(condition.offline)
            body = site_summary(
                site,
                gateway_id=spec.gateway_id(g),
                kit=kit,
                devices={"total": 2, "online": online, "offline": len(condition.offline)},
                open_alarms=[],
                condition=condition,
                at=at,
            )
            topic = spec.topic(g, f"sites/{site.site_id}/summary")
            out.append((topic, json.dumps(body, ensure_ascii=False).encode()))
    return out


def availability(spec: FleetSpec, online: bool = True) -> list[Message]:
    word = b"online" if online else b"offline"
    return [(spec.topic(g, "availability"), word) for g in range(spec.gateways)]


# --- alarm events ------------------------------------------------------------------------------

_LEAK: Final = ("raised", "valve_changed", "escalated", "acknowledged", "cleared", "resolved")
_MAINTENANCE: Final = ("raised", "acknowledged", "cleared")


@dataclass(slots=True)
class Story:
    """One alarm's life as its gateway publishes it: :meth:`next` is its next event (None once
    the alarm is closed). ``revision`` +1 per event; ``alarm_revision`` +1 per alarm change
    (not for ``escalated`` / ``valve_changed``), as docs/gas-company-contract.md §3 says."""

    spec: FleetSpec
    g: int
    s: int
    alarm: Alarm
    steps: tuple[str, ...]
    revision: int = 0
    valve: str = "open"

    @classmethod
    def begin(cls, spec: FleetSpec, g: int, s: int, at: datetime, *, leak: bool = True) -> Story:
        site_id = spec.site_id(g, s)
        kind = "leak_high" if leak else "low_battery"
        alarm = Alarm(
            alarm_id=new_id(spec.gateway_id(g), at),
            revision=1,
            source=f"{site_id}-det",
            alarm_type=kind,
            site_id=site_id,
            device_id=f"{site_id}-det",
            rule_id="leak.high" if leak else "battery.low",
            severity=Severity.CRITICAL if leak else Severity.LOW,
            state=AlarmState.UNACK_ACTIVE,
            active=True,
            latched=leak,
            message="gas at 55 %LEL" if leak else "battery at 2.9 V",
            readings={"lel_pct": 55.0} if leak else {"battery_mv": 2900},
            raised_at=at,
            updated_at=at,
        )
        return cls(spec, g, s, alarm, _LEAK if leak else _MAINTENANCE)

    @property
    def alarm_id(self) -> str:
        return self.alarm.alarm_id

    @property
    def done(self) -> bool:
        return self.revision >= len(self.steps)

    def next(self, at: datetime) -> Message | None:
        if self.done:
            return None
        transition = self.steps[self.revision]
        self.revision += 1
        by = self._apply(transition, at)
        site = self.spec.site(self.g, self.s)
        body = alarm_event(
            self.alarm,
            gateway_id=self.spec.gateway_id(self.g),
            transition=transition,
            revision=self.revision,
            site={
                "site_id": site.site_id,
                "name": site.name,
                "address": site.address,
                "district": site.district,
                "site_type": site.site_type.value,
                "contacts": [
                    {"name": "Owner", "phone": "13800000000", "lang": "zh", "role": "owner"}
                ],
            },
            valves={f"{site.site_id}-valve": self.valve},
            escalation={"policy": "leak", "step": 1, "targets": ["duty_supervisor"]}
            if transition == "escalated"
            else None,
            by=by,
            note=None,
            at=at,
        )
        topic = self.spec.topic(self.g, "alarms/events")
        return topic, json.dumps(body, ensure_ascii=False).encode()

    def _apply(self, transition: str, at: datetime) -> str | None:
        """The alarm after ``transition``; the officer behind it, if any."""
        a = self.alarm
        if transition == "valve_changed":
            self.valve = "closed"
        elif transition == "acknowledged":
            self.alarm = a.evolve(
                state=AlarmState.ACK_ACTIVE, acked_at=at, acked_by=OFFICER, updated_at=at
            )
            return OFFICER
        elif transition == "cleared":
            # A latched leak stays acknowledged until resolved; a maintenance alarm that was
            # acknowledged closes when it clears.
            state = AlarmState.ACK_ACTIVE if a.latched else AlarmState.NORMAL
            closed = None if a.latched else at
            self.alarm = a.evolve(
                state=state, active=False, cleared_at=at, closed_at=closed, updated_at=at
            )
        elif transition == "resolved":
            self.alarm = a.evolve(
                state=AlarmState.NORMAL, closed_at=at, closed_by=OFFICER, updated_at=at
            )
            return OFFICER
        return None


class Storyteller:
    """Alarm events at a steady mix: new alarms at random sites, and the next step of alarms
    already told, so every alarm's events go out in revision order."""

    def __init__(self, spec: FleetSpec, *, open_alarms: int = 200) -> None:
        self._spec = spec
        self._rng = random.Random(spec.seed)
        self._stories: list[Story] = []
        self._open = open_alarms
        self.raised = 0

    def next(self, at: datetime) -> Message:
        stories = self._stories
        if len(stories) < self._open or self._rng.random() < 0.2:
            g = self._rng.randrange(self._spec.gateways)
            s = self._rng.randrange(self._spec.sites)
            story = Story.begin(self._spec, g, s, at, leak=self._rng.random() < 0.8)
            stories.append(story)
            self.raised += 1
        else:
            story = stories[self._rng.randrange(len(stories))]
        message = story.next(at)
        assert message is not None  # finished stories are dropped below
        if story.done:
            stories.remove(story)
        return message


# --- publishing --------------------------------------------------------------------------------


class Publisher:
    """Some connections (:class:`central.fleet_wire.Wire`) publishing QoS 1 for the whole fleet;
    :meth:`send` spreads messages over them, :meth:`wait` returns once the broker acknowledged
    everything sent."""

    def __init__(self, url: str, *, connections: int = 4, name: str) -> None:
        self._url = parse_mqtt_url(url)
        self._connections = connections
        self._name = name
        self._wires: list[Wire] = []

    async def __aenter__(self) -> Publisher:
        for i in range(self._connections):
            self._wires.append(await Wire.open(self._url, f"{self._name}-{i}"))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.gather(*(w.close() for w in self._wires))
        self._wires.clear()

    async def send(self, messages: Sequence[Message], *, retain: bool = False) -> None:
        """Written to the broker; the last ones may still await their PUBACK."""
        n = len(self._wires)
        share = -(-len(messages) // n)
        await asyncio.gather(
            *(
                w.send(messages[i * share : (i + 1) * share], retain=retain)
                for i, w in enumerate(self._wires)
            )
        )

    async def wait(self, within: float) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(w.drained() for w in self._wires)), within)
        except TimeoutError:
            raise FleetError(
                f"the broker did not acknowledge everything in {within:.0f} s"
            ) from None

    async def publish(
        self, messages: Sequence[Message], *, retain: bool = False, within: float = 300
    ) -> float:
        """Publish and wait for every PUBACK; the seconds it took."""
        started = time.perf_counter()
        await self.send(messages, retain=retain)
        await self.wait(within)
        return time.perf_counter() - started


@dataclass(slots=True)
class FleetReport:
    gateways: int
    sites: int
    summaries: int = 0
    summaries_s: float = 0.0
    events: int = 0
    events_s: float = 0.0
    alarms_raised: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "gateways": self.gateways,
            "sites": self.sites,
            "summaries": self.summaries,
            "summaries_s": round(self.summaries_s, 3),
            "summaries_per_s": round(self.summaries / self.summaries_s)
            if self.summaries_s
            else None,
            "events": self.events,
            "events_s": round(self.events_s, 3),
            "events_per_s": round(self.events / self.events_s) if self.events_s else None,
            "alarms_raised": self.alarms_raised,
        }


class Fleet:
    """The fleet's moves, each bounded; a :class:`Publisher` it is given does the I/O."""

    def __init__(self, spec: FleetSpec, publisher: Publisher) -> None:
        self.spec = spec
        self.publisher = publisher
        self.report = FleetReport(spec.gateways, spec.gateways * spec.sites)

    async def online(self) -> None:
        await self.publisher.publish(availability(self.spec), retain=True)

    async def offline(self) -> None:
        """Every gateway's retained ``offline``, as a clean stop publishes it."""
        await self.publisher.publish(availability(self.spec, online=False), retain=True)

    async def storm(self, at: datetime | None = None) -> float:
        """Every gateway's availability and every site's retained summary, as fast as the broker
        takes them (built first, so the clock measures the broker and its readers)."""
        messages = availability(self.spec) + summaries(self.spec, at or datetime.now(UTC))
        took = await self.publisher.publish(messages, retain=True)
        self.report.summaries += len(messages) - self.spec.gateways
        self.report.summaries_s += took
        return took

    async def events(self, per_s: float, duration_s: float) -> float:
        """Alarm events at ``per_s`` for ``duration_s`` (paced in 10 ms slices), then waits for
        the last PUBACK; the seconds it took."""
        if not 0 < per_s <= LIMITS["events_per_s"]:
            raise FleetError(f"events per second: above 0, at most {LIMITS['events_per_s']}")
        if not 0 < duration_s <= LIMITS["duration_s"]:
            raise FleetError(f"duration: above 0, at most {LIMITS['duration_s']} s")
        total = int(per_s * duration_s)
        if total > LIMITS["events"]:
            raise FleetError(f"at most {LIMITS['events']} events in one run")
        teller = Storyteller(self.spec)
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * per_s) + 1)
            at = datetime.now(UTC)
            batch = [teller.next(at) for _ in range(due - sent)]
            if batch:
                await self.publisher.send(batch)
                sent += len(batch)
            await asyncio.sleep(0.01)
        await self.publisher.wait(within=max(60.0, duration_s))
        took = time.perf_counter() - started
        self.report.events += total
        self.report.events_s += took
        self.report.alarms_raised += teller.raised
        return took


async def simulate(
    url: str,
    spec: FleetSpec,
    *,
    events_per_s: float = 0.0,
    duration_s: float = 10.0,
    storm: bool = False,
    connections: int = 4,
) -> FleetReport:
    """What ``gasgate central simulate`` does: the fleet comes online with its summaries (a
    storm: all at once), then alarm events at ``events_per_s`` for ``duration_s``."""
    async with Publisher(url, connections=connections, name=f"{spec.name}-fleet") as publisher:
        fleet = Fleet(spec, publisher)
        if storm:
            await fleet.storm()
        else:
            await fleet.online()
            fleet.report.summaries_s += await publisher.publish(
                summaries(spec, datetime.now(UTC)), retain=True
            )
            fleet.report.summaries += spec.gateways * spec.sites
        if events_per_s:
            await fleet.events(events_per_s, duration_s)
        return fleet.report


@click.command("simulate")
@click.option(
    "--gasco-mqtt", "url", required=True, help="The gas company broker, mqtt://host:port."
)
@click.option("--gateways", type=int, default=3, show_default=True, help="Simulated gateways.")
@click.option("--sites", type=int, default=10, show_default=True, help="Sites per gateway.")
@click.option("--events-per-s", type=float, default=0.0, help="Alarm events per second (0: none).")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds of events.")
@click.option(
    "--storm",
    is_flag=True,
    help="Every summary at once, as fast as the broker takes them (default 1,000 x 100).",
)
@click.option("--prefix", default="gasco/v1", show_default=True)
@click.option("--name", default="sim", show_default=True, help="Gateway ids {name}-gw0001, ...")
@click.option("--connections", type=int, default=4, show_default=True)
@click.pass_context
def simulate_command(
    ctx: click.Context,
    *,
    url: str,
    gateways: int,
    sites: int,
    events_per_s: float,
    duration: float,
    storm: bool,
    prefix: str,
    name: str,
    connections: int,
) -> None:
    """Play N gateways of M sites on gasco/v1: retained availability and site summaries, then
    alarm events with real alarm_id / revision sequences. Prints what it did as JSON."""
    if storm:
        defaults = ctx.get_parameter_source("gateways") is click.core.ParameterSource.DEFAULT
        gateways = 1000 if defaults else gateways
        if ctx.get_parameter_source("sites") is click.core.ParameterSource.DEFAULT:
            sites = 100
    try:
        spec = FleetSpec(gateways, sites, prefix=prefix, name=name)
        report = asyncio.run(
            simulate(
                url,
                spec,
                events_per_s=events_per_s,
                duration_s=duration,
                storm=storm,
                connections=max(1, min(connections, 64)),
            )
        )
    except (FleetError, WireError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(report.to_dict()))
