"""``gasgate demo``: the whole loop on one machine, in about a minute.

An embedded MQTT broker (or a given one), a simulated district (restaurants with four-piece kits,
households with two-piece kits and wireless alarms) behind a KSP/1 receiver on a pty plus some
MQTT-native devices, the serial bridge, the gateway, and a monitor that prints what travels:
decoded reports, valve commands, alarm transitions. A scripted story plays on top: a leak at a
restaurant, an over-flow trip, a valve that fails to close, a detector going silent.

Everything runs in this one process, on loopback; Ctrl-C stops it all cleanly. The console's
address and login come first; the story starts when someone logs in to the console (or at once
with ``--story-now``), so a newcomer sees it happen. On a given broker (``--mqtt``) the demo
removes the retained messages it left there when it stops: a gateway run on that broker later
must not find the demo's receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import signal
import socket
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import click

from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.link import LinkConfig
from firmware_bridge.simulator import District, PtyPort, SimSite, Simulation, Step, Story
from firmware_bridge.simulator import scenarios as sc
from gateway import contract
from gateway.alarm_types import AlarmType, info
from gateway.api.auth import Session, Sessions
from gateway.app import Gateway, GatewaySettings, describe_transition
from gateway.demo_people import DemoPeople
from gateway.embedded_broker import EmbeddedBroker
from gateway.errors import GasgateError, RejectedInput
from gateway.escalation.config import GascoSettings
from gateway.events import AlarmChanged
from gateway.logs import setup_logging
from gateway.mqtturl import MqttUrl, parse_mqtt_url
from gateway.site_mqtt import gateway_availability_topic
from gateway.telemetry import influx_options
from gateway.users import Role, User, UserError

__all__ = ["DemoOptions", "demo", "kit_rooms", "run_demo"]

log = logging.getLogger(__name__)
BRIDGE_ID = "demo-receiver"
GATEWAY_ID = "gw-demo"
GASCO_EVENTS = "gasco/v1/+/alarms/events"
DEMO_PASSWORD = "gasgate-demo"  # noqa: S105 - printed on purpose: throw-away demo data
DEMO_USERS = {
    "officer": Role.DUTY_OFFICER,
    "supervisor": Role.SUPERVISOR,
    "regulator": Role.REGULATOR,
}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    mqtt: str | None = None  # None: the embedded broker on a free port
    data_dir: Path | None = None  # None: a temporary directory, removed at the end
    restaurants: int = 20
    households: int = 50
    seed: int = 1
    time_scale: float = 0.1  # device report intervals x this (mains 60 s -> 6 s)
    duration_s: float | None = None  # None: until Ctrl-C
    story: bool = True
    story_now: bool = False  # False: the story waits for the first console login
    verbose: bool = False  # also print periodic reports
    http_port: int = 8080  # the console; 0: any free port (printed)
    influx_url: str | None = None  # telemetry: off unless given
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_token: str | None = None


class Monitor:
    """Prints what crosses the site broker, in plain words; counts the rest."""

    def __init__(self, url: str, out: Callable[[str], None], sites: dict[str, SimSite]) -> None:
        self._url = url
        self._out = out
        self._sites = {dev: site for site in sites.values() for dev in site.devices}
        self.counts: Counter[str] = Counter()
        self.verbose = False
        self._receivers: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready), name="demo-monitor")
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, ready: asyncio.Event) -> None:
        async with parse_mqtt_url(self._url).client(identifier="gasgate-demo-monitor") as client:
            await client.subscribe(f"{contract.PREFIX}/#", qos=1)
            await client.subscribe(GASCO_EVENTS, qos=1)
            ready.set()
            async for message in client.messages:
                self._show(str(message.topic), message.payload)

    def _show(self, topic: str, payload: object) -> None:
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        if topic.endswith("/alarms/events"):
            self._gasco_event(raw)
            return
        try:
            kind, ident = contract.parse_topic(topic)
        except RejectedInput:
            return
        self.counts[kind] += 1
        if kind == "report":
            self._report(ident, raw, topic)
        elif kind in ("cmd", "cmd/ack"):
            self._out(f"  {_where(self._sites.get(ident))} {ident} {kind}: {raw.decode()}")
        elif kind == "receiver":
            self._receiver(ident, raw, topic)

    def _gasco_event(self, raw: bytes) -> None:
        self.counts["gas company event"] += 1
        event = json.loads(raw)
        if event["severity"] in ("critical", "high"):
            site = event.get("site") or {}
            self._out(
                f"  ⇒ gas company: {event['transition']} {event['alarm_type']} at "
                f"{site.get('name', '?')} ({event['state']}, valves {event['valve_state']}, "
                f"revision {event['revision']})"
            )

    def _receiver(self, bridge_id: str, raw: bytes, topic: str) -> None:
        try:
            status = contract.decode(contract.ReceiverStatus, raw, topic)
        except RejectedInput as exc:
            self._out(f"  ! {exc}")
            return
        if self._receivers.get(bridge_id) != status.online:
            self._receivers[bridge_id] = status.online
            state = "online" if status.online else "OFFLINE"
            self._out(f"  receiver {bridge_id}: {state}, {status.paired_count} devices paired")

    def _report(self, device_id: str, raw: bytes, topic: str) -> None:
        try:
            report = contract.decode(contract.KitReport, raw, topic)
        except RejectedInput as exc:
            self._out(f"  ! {exc}")
            return
        if report.event in ("periodic", "power_on") and not self.verbose:
            return
        self._out(f"  {_where(self._sites.get(device_id))} {device_id} {_reading(report)}")


def _where(site: SimSite | None) -> str:
    return f"[{site.site_id} {site.name}]" if site else "[?]"


def _reading(report: contract.KitReport) -> str:
    body = report.detector or report.valve or report.regulator
    assert body is not None  # a KitReport always has its body
    values = ", ".join(
        f"{k}={'|'.join(v) if isinstance(v, tuple) else v}"
        for k, v in body.model_dump(exclude_none=True).items()
        if v not in ((), [])
    )
    return f"{report.kind} {report.event}: {values}"


class RetainedCleanup:
    """Removes, when the demo stops, the retained messages its rooms left on a given broker
    (an empty retained payload deletes one): bridge availability and receiver status,
    MQTT-native devices' availability, the gateway's and its gas company link's topics. A later
    gateway on a shared broker would otherwise supervise the demo's receivers."""

    QUIET_S = 0.5  # the broker sends what it retains at once on subscribing
    WITHIN_S = 5.0

    def __init__(self, url: str, filters: Callable[[], Iterable[str]]) -> None:
        self._url = url
        self._filters = filters
        self.removed: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        async with parse_mqtt_url(self._url).client(identifier="gasgate-demo-cleanup") as client:
            for topic_filter in self._filters():
                await client.subscribe(topic_filter, qos=1)
            topics = await self._retained(client)
            for topic in sorted(topics):
                await client.publish(topic, b"", qos=1, retain=True)
        self.removed = sorted(topics)

    async def _retained(self, client: aiomqtt.Client) -> set[str]:
        topics: set[str] = set()
        messages = aiter(client.messages)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.WITHIN_S):
                while True:
                    message = await asyncio.wait_for(anext(messages), self.QUIET_S)
                    if message.retain and message.payload:
                        topics.add(str(message.topic))
        return topics


class _LoginWatch(Sessions):
    """The console's sessions, telling the demo when the first one opens (the story waits)."""

    def __init__(self, logged_in: asyncio.Event) -> None:
        super().__init__()
        self._logged_in = logged_in

    def open(self, user: User, now_mono: float) -> tuple[str, Session]:
        self._logged_in.set()
        return super().open(user, now_mono)


def watch_command(url: MqttUrl, topic: str) -> str:
    """The ``mosquitto_sub`` line that shows ``topic`` on this broker."""
    args = ["mosquitto_sub", "-h", url.host, "-p", str(url.port)]
    if url.username:
        args += ["-u", url.username]
    if url.password:
        args += ["-P", url.password]
    if url.tls:
        args += ["--cafile", str(url.ca_file)] if url.ca_file else ["--capath", "/etc/ssl/certs"]
    return shlex.join([*args, "-t", topic, "-v"])


def kit_rooms(
    district: District, url: str, data_dir: Path, bridge_prefix: str
) -> tuple[Simulation, list[PtyPort], list[Bridge]]:
    """The district's kits as rooms to start in this order: the simulation (its radio devices
    behind receivers on these ptys in ``data_dir``, its MQTT-native devices on ``url``), then
    one bridge per receiver, ``{bridge_prefix}-{n}``, onto ``url``."""
    scale = district.time_scale
    ports = [
        PtyPort(data_dir / f"ksp-receiver-{n}") for n in range(1, district.receivers_needed() + 1)
    ]
    sim = Simulation(district, ports, mqtt_url=url, heartbeat_s=30 * scale)
    bridges = [
        Bridge(
            BridgeConfig(f"{bridge_prefix}-{n}", parse_mqtt_url(url)),
            LinkConfig(str(port.link_path), heartbeat_timeout_s=90 * scale),
        )
        for n, port in enumerate(ports, start=1)
    ]
    return sim, ports, bridges


class Demo:
    """The demo's rooms, started in data-flow order and stopped in reverse."""

    def __init__(self, options: DemoOptions, data_dir: Path, out: Callable[[str], None]) -> None:
        self.options = options
        self.data_dir = data_dir
        self.out = out
        self._rooms: list[object] = []
        self.maintenance: Counter[str] = Counter()
        self._scenarios: set[asyncio.Task[None]] = set()
        self.logged_in = asyncio.Event()
        self.cleanup: RetainedCleanup | None = None

    @property
    def bridge_ids(self) -> list[str]:
        return [f"{BRIDGE_ID}-{n}" for n in range(1, self.district.receivers_needed() + 1)]

    async def start(self) -> None:
        o = self.options
        url = o.mqtt or await self._embedded_broker()
        self.district = District.generate(o.restaurants, o.households, o.seed, o.time_scale)
        if o.mqtt is not None:  # stopped last but one: after every room that retains
            self.cleanup = RetainedCleanup(url, self._retained_filters)
            await self._start(self.cleanup)
        self.district.write_registry(self.data_dir / "registry")
        self.monitor = Monitor(url, self.out, {s.site_id: s for s in self.district.sites})
        self.monitor.verbose = o.verbose
        await self._start(self.monitor)
        self.sim, ports, bridges = kit_rooms(self.district, url, self.data_dir, BRIDGE_ID)
        for room in (self.sim, *bridges):
            await self._start(room)
        self.people = DemoPeople(self.out)
        await self._start(self.people)
        self.gateway = Gateway(self._gateway_settings(url))
        await self._start(self.gateway)
        self.gateway.bus.subscribe(AlarmChanged, self._on_alarm, name="demo.print")
        self._console()  # first: what a newcomer needs to follow the story
        await asyncio.sleep(0.5)  # let the start-up maintenance findings arrive
        self.out(
            f"demo: broker {url}, {len(ports)} receiver(s) on ptys "
            f"{', '.join(str(p.link_path) for p in ports)}, "
            f"{len(self.district.sites)} sites, data in {self.data_dir}; "
            f"{sum(self.maintenance.values())} maintenance finding(s) at start "
            "(parts past service life, cylinders overdue): not printed one by one"
        )
        if self.options.mqtt is not None:
            events = watch_command(parse_mqtt_url(self.options.mqtt), GASCO_EVENTS)
            self.out(f"demo: watch the gas company events: {events}")
        else:
            self.out(
                "demo: gas company link off (the embedded broker has no MQTT v5): its events "
                "wait in the outbox; run with --mqtt mqtt://127.0.0.1:1883 (Mosquitto) to see them"
            )
        if not self.gateway.settings.influx_url:
            self.out("demo: telemetry off (no InfluxDB configured: --influx-url to send it)")

    def _console(self) -> None:
        """Demo users (a fixed password: the demo's data is throw-away) and where to log in."""
        api = self.gateway.api
        if api.port is None:
            self.out("demo: console not started (HTTP port in use?); see the log")
            self.logged_in.set()  # nobody can log in: the story must not wait for it
            return
        api.context.sessions = _LoginWatch(self.logged_in)
        for name, role in DEMO_USERS.items():
            with contextlib.suppress(UserError):  # a kept --data-dir has them already
                api.users.add(name, role, DEMO_PASSWORD, self.gateway.clock.now())
        names = ", ".join(f"{n} ({r})" for n, r in DEMO_USERS.items())
        self.out(f"demo: console {api.url}/ (add ?lang=en for English); users {names}, "
                 f"password {DEMO_PASSWORD!r}")  # fmt: skip

    async def _embedded_broker(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        broker = EmbeddedBroker(free)
        await self._start(broker)
        return broker.url

    def _gateway_settings(self, url: str) -> GatewaySettings:
        return GatewaySettings.load(
            None,
            {
                "mqtt": url,
                "data_dir": self.data_dir / "gateway",
                "registry": self.data_dir / "registry",
                "gateway_id": GATEWAY_ID,
                "bridges": self.bridge_ids,  # only its own: a shared broker may hold others
                "valve_retry_s": max(1.0, 10 * self.options.time_scale),
                # A given broker (Mosquitto) plays the gas company's too. The embedded amqtt
                # broker speaks MQTT 3.1.1 only and the gas company link is MQTT v5: then the
                # events wait in the outbox, and the demo says so.
                "gasco_mqtt": self.options.mqtt,
                "escalation": self.people.escalation_settings(),
                "log_level": "WARNING",
                "http_port": self.options.http_port,
                "influx_url": self.options.influx_url,
                "influx_org": self.options.influx_org,
                "influx_bucket": self.options.influx_bucket,
                "influx_token": self.options.influx_token,
            },
        )

    def _retained_filters(self) -> list[str]:
        """Where the demo's rooms publish retained messages (read at stop: all are known)."""
        sim: Simulation | None = getattr(self, "sim", None)  # None: the start failed early
        mqtt_devices = [d.device_id for d in sim.mqtt_devices] if sim else []
        return [
            *(f"{contract.PREFIX}/{contract.BRIDGE}/{b}/#" for b in self.bridge_ids),
            *(contract.device_availability_topic(d) for d in mqtt_devices),
            gateway_availability_topic(GATEWAY_ID),
            f"{GascoSettings().topic_prefix}/{GATEWAY_ID}/#",  # the demo keeps the default
        ]

    async def _start(self, room: object) -> None:
        await room.start()  # type: ignore[attr-defined]
        self._rooms.append(room)

    async def stop(self) -> None:
        for task in list(self._scenarios):
            task.cancel()
        await asyncio.gather(*self._scenarios, return_exceptions=True)
        while self._rooms:
            room = self._rooms.pop()
            try:
                await room.stop()  # type: ignore[attr-defined]
            except Exception:
                log.exception("stopping %s failed", type(room).__name__)
        if self.cleanup is not None and self.cleanup.removed:
            self.out(
                f"demo: removed the {len(self.cleanup.removed)} retained message(s) it left on "
                f"{parse_mqtt_url(self.options.mqtt or '')}"
            )

    def _on_alarm(self, event: AlarmChanged) -> None:
        # Maintenance findings (service life, overdue cylinders, batteries) are counted, not
        # printed one by one: at start a real district has dozens, and they would bury a leak.
        if info(AlarmType(event.alarm.alarm_type)).maintenance:
            self.maintenance[event.transition] += 1
            return
        self.out(f"ALARM {describe_transition(event)}")

    def summary(self) -> str:
        alarms = self.gateway.alarms.open_alarms()
        urgent = sum(not info(AlarmType(a.alarm_type)).maintenance for a in alarms)
        return (
            f"demo: {len(alarms)} open alarm(s), {urgent} urgent and {len(alarms) - urgent} "
            f"maintenance; MQTT messages by kind: {dict(self.monitor.counts)}"
        )

    def story(self) -> Story:
        """Four incidents at four different restaurants, a few seconds apart. Each step starts
        its scenario in the background, so a slow one (gas rising) does not delay the next."""
        radio = [s for s in self.district.radio_sites if s.site_type == "restaurant" and s.valve]
        leak_site = radio[0]
        trip_site = next(s for s in radio[1:] if s.regulator)
        stuck_site, silent_site = [s for s in radio if s not in (leak_site, trip_site)][:2]
        regulator, stuck_valve = trip_site.regulator, stuck_site.valve
        assert regulator is not None
        assert stuck_valve is not None

        async def stuck() -> None:
            stuck_valve.fail_to_close = True
            await sc.leak(stuck_site.detector, peak_pct=55.0)

        async def silent() -> None:
            await sc.detector_silent(self.sim.receiver_of(silent_site), silent_site.detector)

        steps: list[tuple[float, str, Callable[[], Coroutine[Any, Any, None]]]] = [
            (
                3,
                f"gas leak at {leak_site.name} ({leak_site.site_id})",
                lambda: sc.leak(leak_site.detector),
            ),
            (12, f"detector goes silent at {silent_site.name} ({silent_site.site_id})", silent),
            (
                18,
                f"over-flow trip at {trip_site.name} ({trip_site.site_id})",
                lambda: sc.overflow_trip(regulator),
            ),
            (28, f"valve fails to close at {stuck_site.name} ({stuck_site.site_id})", stuck),
        ]
        self.out(
            f"STORY starts: {len(steps)} incidents over {steps[-1][0]:g} s; "
            "watch the console and the lines below"
        )
        return Story(
            [
                Step(at, label, self._play(label, play, _progress(steps, n)))
                for n, (at, label, play) in enumerate(steps)
            ]
        )

    def _play(
        self, label: str, play: Callable[[], Coroutine[Any, Any, None]], progress: str
    ) -> Callable[[], None]:
        def start() -> None:
            self.out(f"STORY {progress} {label}")
            task = asyncio.create_task(play(), name=f"demo-story: {label}")
            self._scenarios.add(task)
            task.add_done_callback(self._scenarios.discard)

        return start


def _progress(steps: list[tuple[float, str, Any]], n: int) -> str:
    """``[2/4 +12 s, next in 6 s]``: where the story is, on the incident's own line."""
    at = steps[n][0]
    following = f"next in {steps[n + 1][0] - at:g} s" if n + 1 < len(steps) else "the last"
    return f"[{n + 1}/{len(steps)} +{at:g} s, {following}]"


async def _story(demo: Demo, options: DemoOptions, stop: asyncio.Event) -> None:
    """The story, once someone has logged in to the console (or at once with story_now)."""
    if not options.story_now and not demo.logged_in.is_set():
        demo.out("demo: the story starts when you log in to the console (--story-now: at once)")
        await demo.logged_in.wait()
    if not stop.is_set():
        await demo.story().run()


async def run_demo(options: DemoOptions, out: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C / SIGTERM (or ``duration_s``); 0 on a clean stop."""
    with contextlib.ExitStack() as stack:
        data_dir = options.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        demo = Demo(options, data_dir, out)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await demo.start()
            story = asyncio.create_task(_story(demo, options, stop)) if options.story else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.duration_s)
            if story is not None:
                story.cancel()
            out(demo.summary())
        finally:
            out("demo: stopping")
            await demo.stop()
        out("demo: stopped cleanly")
    return 0


@click.command("demo")
@click.option("--mqtt", help="Use this broker instead of the embedded one.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Keep data here."
)
@click.option("--restaurants", type=int, help="Restaurants [20; with --central 4 per gateway].")
@click.option("--households", type=int, help="Households [50; with --central 6 per gateway].")
@click.option("--seed", default=1, show_default=True)
@click.option("--time-scale", default=0.1, show_default=True, help="Report intervals x this.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--no-story", is_flag=True, help="Only the district, no scripted incidents.")
@click.option(
    "--story-now", is_flag=True, help="Play the story at once, not at the first console login."
)
@click.option(
    "--http-port",
    type=int,
    help="Console port [8080; the control room's with --central: 8090]; 0: any free.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print periodic reports.")
@influx_options
@click.option(
    "--central",
    is_flag=True,
    help="Three gateways and the gas company's monitoring center (Mosquitto, PostgreSQL).",
)
@click.option(
    "--db",
    envvar="GASGATE_CENTRAL_DB",
    help="With --central: this PostgreSQL database, not a private cluster"
    " [env GASGATE_CENTRAL_DB].",
)
def demo(**flags: Any) -> None:
    """The whole loop on one machine: broker, simulated kits, bridge, gateway, a story.
    With --central: three gateways and the monitoring center over them."""
    setup_logging("WARNING", "text")
    logging.getLogger("gateway.app").setLevel(logging.ERROR)  # the demo prints transitions
    flags["story"] = not flags.pop("no_story")
    flags["duration_s"] = flags.pop("duration")
    central, dsn = flags.pop("central"), flags.pop("db")  # the database: only for --central
    given = {k: v for k, v in flags.items() if v is not None}  # the rest: the options' defaults
    try:
        if central:
            raise SystemExit(asyncio.run(_central(given, dsn)))
        raise SystemExit(asyncio.run(run_demo(DemoOptions(**given), click.echo)))
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None


_NOT_CENTRAL = ("mqtt", "verbose", "influx_url", "influx_org", "influx_bucket", "influx_token")


async def _central(given: dict[str, Any], dsn: str | None) -> int:
    # central.demo builds on this module (its kits, users and people): imported when asked.
    from central.demo import CentralDemoOptions, run_central_demo  # noqa: PLC0415

    refused = [f"--{k.replace('_', '-')}" for k in _NOT_CENTRAL if given.pop(k, None)]
    if refused:
        raise click.UsageError(f"--central runs its own brokers, no telemetry: not {refused}")
    return await run_central_demo(CentralDemoOptions(db=dsn, **given), click.echo)
