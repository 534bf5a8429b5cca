"""The gateway controller: settings in, rooms built in data-flow order, started, stopped.

    store → registry → bus → rules → alarms → linkage → escalation → supervision → ingest
    → site MQTT → api (HTTP console and API, last: it only reads and answers alarms)

Rooms start in that order (each subscribes to the bus in ``start``, so every consumer listens
before the site MQTT client lets the first report in) and stop in reverse. After all have
started, the alarms room announces the open alarms it restored, so the linkage closes what a
crash left open and resumes its retries.
"""

from __future__ import annotations

import logging
import re
import socket
import sqlite3
from pathlib import Path
from typing import Annotated, Final, Protocol

from pydantic import Field, field_validator

from gateway.alarms import Alarms
from gateway.api.room import ApiRoom
from gateway.bus import Bus
from gateway.clock import Clock, SystemClock
from gateway.errors import ConfigError
from gateway.escalation import EscalationSettings
from gateway.escalation import build as build_escalation
from gateway.events import AlarmChanged
from gateway.ingest import Ingest
from gateway.interlock import InterlockMode, InterlockRoom
from gateway.linkage import RETRY_S, TRIES, Linkage
from gateway.logs import LogFormat
from gateway.metrics import GatewayMetrics
from gateway.metrics_feed import MetricsFeed
from gateway.model import AlarmState, Transition
from gateway.mqtturl import parse_mqtt_url
from gateway.registry import Registry, import_dir, save
from gateway.settings import GasgateSettings
from gateway.site_mqtt import SiteMqtt
from gateway.store import Store, StoreError, StoreWatch, disk_trouble
from gateway.supervision import BridgeRoster, Supervision
from gateway.telemetry import TelemetryFeed, TelemetrySettings, TelemetryWriter
from rules.engine import RuleEngine
from rules.schema import RuleSet, load_rules, rule_files

__all__ = ["Gateway", "GatewaySettings", "describe_transition"]

log = logging.getLogger(__name__)

STORE_FILE: Final = "gasgate.db"


def _default_gateway_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:60] or "gateway"
    return f"gw-{host}"


class GatewaySettings(GasgateSettings, TelemetrySettings):
    """Settings of ``gasgate run`` (env ``GASGATE_`` + the name in capitals)."""

    mqtt: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Site broker: mqtt://[user:pass@]host[:port] or mqtts://... (TLS).",
    )
    data_dir: Path = Field(
        Path("gasgate-data"), description="Directory of the gateway's store (gasgate.db)."
    )
    registry: Path | None = Field(
        None,
        description="Registry directory (sites.csv, components.csv, ...) imported on start; "
        "unset: the registry stored by the last import is used.",
    )
    rules_dir: Path | None = Field(
        None, description="Directory of rule files (*.yaml) layered over the built-in rules."
    )
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        default_factory=_default_gateway_id,
        description="This gateway's id: prefix of its alarm ids, and in its MQTT topics "
        "(default: gw-<hostname>).",
    )
    bridges: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")], ...] = Field(
        (),
        description="Bridge ids whose receivers this gateway supervises (env: a JSON list); "
        "any other bridge on the site broker is logged once and ignored (docs/bridge.md).",
    )
    interlock: InterlockMode = Field(
        "spawn",
        description="The interlock process that closes a leak's valves before anything is "
        "written: spawn (started by the gateway, survives its crash), external (a unit of its "
        "own runs `gasgate interlock`), off (docs/interlock.md).",
    )
    missed_intervals: int = Field(
        3, ge=1, le=100, description="A device is offline after this many silent intervals."
    )
    valve_retry_s: float = Field(
        RETRY_S,
        gt=0,
        le=60,
        description="A valve not reporting closed this long after a close command is "
        f"commanded again ({TRIES} tries in all, then valve_failed_to_close).",
    )
    gasco_mqtt: str | None = Field(
        None,
        description="Gas company broker, mqtt:// or mqtts:// (overrides escalation.gasco.url); "
        "unset: alarm events wait in the outbox.",
    )
    escalation: EscalationSettings = Field(
        default_factory=EscalationSettings,
        description="Escalation: gas company link, channels, people, policies "
        "(docs/gas-company-contract.md).",
    )
    http_host: str = Field(
        "127.0.0.1", description="Address of the console, API and /metrics (loopback by default)."
    )
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the console and API.")
    log_level: str = Field("INFO", description="debug, info, warning or error.")
    log_format: LogFormat = Field("auto", description="auto, json or text.")

    @field_validator("mqtt", "gasco_mqtt")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        try:
            if value is not None:
                parse_mqtt_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class _Room(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Gateway:
    """One gateway process's rooms. ``start`` builds and starts them; ``stop`` undoes it."""

    def __init__(self, settings: GatewaySettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.bus = Bus()
        # fallback: a disk that refuses writes degrades the store to memory, never stops the
        # start (systemd would restart it into the same failure, and no valve would close).
        self.store = Store(settings.data_dir / STORE_FILE, fallback=True)
        self.metrics = GatewayMetrics()
        self._started: list[_Room] = []

    async def start(self) -> None:
        """Build and start every room; on failure, stop what started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        self.store.open()
        self.registry = self._load_registry()
        ruleset = load_rules(rule_files(s.rules_dir) if s.rules_dir else ())
        self.ingest = Ingest(self.bus, self.registry, self.clock)
        bridges = BridgeRoster(s.bridges)
        self.rules = RuleEngine(self.bus, self.registry, self.clock, ruleset, bridges=bridges)
        self.alarms = Alarms(self.bus, self.store, self.clock, s.gateway_id)
        self.site_mqtt = SiteMqtt(
            s.mqtt,
            f"gasgate-{s.gateway_id}",
            s.gateway_id,
            self._on_site_message,
            settled=self.bus.when_done,  # a report is acknowledged once what it caused is done
        )
        self.linkage = Linkage(
            self.bus,
            self.registry,
            self.site_mqtt,
            self.store,
            self.clock,
            retry_s=s.valve_retry_s,
        )
        self.escalation = build_escalation(
            s.escalation.with_gasco_url(s.gasco_mqtt),
            bus=self.bus,
            store=self.store,
            clock=self.clock,
            registry=self.registry,
            desk=self.alarms,
            valves=self.linkage,
            gateway_id=s.gateway_id,
        )
        self.supervision = Supervision(
            self.bus,
            self.registry,
            self.clock,
            missed_intervals=s.missed_intervals,
            bridges=bridges,
        )
        self.telemetry = TelemetryWriter(s, s.data_dir)
        self.telemetry_feed = TelemetryFeed(
            self.bus,
            self.telemetry,
            self.registry,
            self.supervision,
            self.alarms,
            clock=self.clock,
            gateway_id=s.gateway_id,
        )
        metrics_feed = MetricsFeed(
            self.bus,
            self.metrics,
            self.alarms,
            self.clock,
            {
                "outbox_depth": self.escalation.outbox.depth,
                "spool_depth": lambda: {"telemetry": self.telemetry.stats().spooled},
                "link_up": self._links,
            },
        )
        rooms: list[_Room] = [
            StoreWatch(self.store, self.clock, self._held),
            self._build_interlock(ruleset),  # first: valves close while the rest starts
            self.rules,
            self.alarms,
            self.linkage,
            self.escalation,
            self.supervision,
            self.telemetry,
            self.telemetry_feed,
            metrics_feed,  # after linkage and escalation: it times what they have queued
            self.ingest,
            self.site_mqtt,
            self._build_api(),
        ]
        for room in rooms:
            await room.start()
            self._started.append(room)
        # Handlers run in subscription order: the log line comes after the valve commands.
        self.bus.subscribe(AlarmChanged, self._log_transition, name="app.log")
        self.alarms.announce_restored()
        log.info(
            "gateway %s started: %d site(s), %d device(s), %d open alarm(s), broker %s",
            s.gateway_id,
            len(self.registry.sites()),
            len(self.registry.devices()),
            len(self.alarms.open_alarms()),
            parse_mqtt_url(s.mqtt),
        )

    def _build_interlock(self, ruleset: RuleSet) -> InterlockRoom:
        s = self.settings
        self.interlock = InterlockRoom(
            s.interlock,
            s.data_dir,
            registry=self.registry,
            rules=ruleset,
            bus=self.bus,
            store=self.store,
            clock=self.clock,
            child_env={
                "GASGATE_MQTT": s.mqtt,
                "GASGATE_GATEWAY_ID": s.gateway_id,
                "GASGATE_VALVE_RETRY_S": str(s.valve_retry_s),
                "GASGATE_LOG_LEVEL": s.log_level,
                "GASGATE_LOG_FORMAT": s.log_format,
            },
        )
        return self.interlock

    def _build_api(self) -> ApiRoom:
        self.api = ApiRoom(
            self.settings.http_host,
            self.settings.http_port,
            bus=self.bus,
            store=self.store,
            clock=self.clock,
            registry=self.registry,
            alarms=self.alarms,
            supervision=self.supervision,
            linkage=self.linkage,
            metrics=self.metrics,
            readiness=self.readiness,
            timezone=self.settings.escalation.timezone,
        )
        return self.api

    def _links(self) -> dict[str, bool]:
        """The gateway's own links for /metrics (receivers are added from their status)."""
        links = {"site_broker": self.site_mqtt.connected.is_set()}
        if self.escalation.gasco.configured:
            links["gas_company_broker"] = self.escalation.gasco.connected.is_set()
        telemetry = self.telemetry.stats()
        if telemetry.enabled:
            links["influxdb"] = telemetry.influx_up
        return links

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks: the store open and writing to disk (not degraded, its last
        commit done: ``store.problem`` says why not, and no alarm transition waiting to be
        stored), the site broker connected, a registry loaded."""
        # Not while an alarm the store refused waits to be written, even if a smaller commit
        # got through meanwhile.
        store_ok = self.store.problem is None and not self.alarms.unrecorded
        try:
            self.store.db.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "not ready", never an error page
            store_ok = False
        return {
            "store": store_ok,
            "site_broker": self.site_mqtt.connected.is_set(),
            "registry": bool(self.registry.sites()),
        }

    def _on_site_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """Every kit/v1 message to the ingest; command acks also to the linkage's audit."""
        self.ingest.handle_message(topic, payload, retained)
        if topic.endswith("/cmd/ack"):
            self.linkage.handle_ack(topic, payload)

    def _load_registry(self) -> Registry:
        source = self.settings.registry
        if source is not None:
            self._import_registry(source)  # its parsed files are gone before the load below
        registry = Registry.load(self.store)
        if source is None and self.store.degraded is not None:
            log.critical(
                "registry: the last stored import (generation %d) is used, read from the disk "
                "into the degraded store",
                registry.generation,
            )
        if not registry.devices():
            log.warning("the registry has no reporting devices: every report will be refused")
        return registry

    def _import_registry(self, source: Path) -> None:
        result = import_dir(source)
        for problem in result.warnings:
            log.warning("registry %s: %s", source, problem)
        if not result.ok:
            listing = "\n".join(str(p) for p in result.errors)
            raise ConfigError(f"registry {source}: {len(result.errors)} error(s)\n{listing}")
        try:
            save(self.store, result, who="gasgate run")
        except (StoreError, sqlite3.Error) as exc:
            if self.store.degraded is not None or not disk_trouble(exc):
                raise
            self.store.degrade(f"the registry import from {source} could not be saved: {exc}")
            save(self.store, result, who="gasgate run")  # into the memory copy: it is used
        if self.store.degraded is not None:
            log.critical(
                "registry: the files in %s are used as parsed now, saved in memory only; the "
                "disk keeps the last good import until it takes writes again",
                source,
            )

    def _held(self) -> str:
        """What a degraded store puts at risk, for its CRITICAL line."""
        return f"{len(self.alarms.open_alarms())} open alarm(s) in memory"

    def _log_transition(self, event: AlarmChanged) -> None:
        # A leak, over-flow or offline detector raised is worth a warning; the rest is routine.
        # While the store is degraded every transition is CRITICAL: it is held in memory only.
        urgent = event.alarm.severity.rank <= 1 and event.transition in _RAISES
        level = logging.WARNING if urgent else logging.INFO
        held = ""
        if self.store.degraded is not None:
            level, held = logging.CRITICAL, " [NOT on disk: the store is degraded]"
        log.log(level, "%s%s", describe_transition(event), held)

    async def stop(self) -> None:
        """Stop the rooms in reverse order, let the bus finish (bounded), close the store."""
        while self._started:
            room = self._started.pop()
            try:
                await room.stop()
            except Exception:
                log.exception("stopping %s failed", type(room).__name__)
        await self.bus.stop()
        self.store.close()


_RAISES: Final = frozenset({Transition.RAISED, Transition.REACTIVATED, Transition.CHATTERING})
_STATE_WORDS: Final = {
    AlarmState.UNACK_ACTIVE: "active, not yet acknowledged",
    AlarmState.ACK_ACTIVE: "acknowledged",
    AlarmState.UNACK_CLEARED: "cleared, not yet acknowledged",
    AlarmState.NORMAL: "closed",
}


def describe_transition(event: AlarmChanged) -> str:
    """One line in plain words: what happened to which alarm, where, and where it stands."""
    a = event.alarm
    where = f"{a.source}" + (f" at site {a.site_id}" if a.site_id else "")
    who = f" by {event.by}" if event.by else ""
    note = f" ({event.note})" if event.note else ""
    state = _STATE_WORDS[a.state]
    if a.state is AlarmState.ACK_ACTIVE and not a.active:
        state = "acknowledged, condition cleared, waiting to be resolved"
    flags = [w for w, on in (("shelved", a.shelved_until), ("chattering", a.chattering)) if on]
    if a.out_of_service_by:
        flags.append("out of service")
    extra = f" [{', '.join(flags)}]" if flags else ""
    return (
        f"alarm {a.alarm_id} ({a.severity} {a.alarm_type}, {where}) {event.transition}{who}"
        f"{note}: now {state}{extra}; {a.message} (revision {a.revision})"
    )
