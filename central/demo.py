"""``gasgate demo --central``: three gateways and the gas company's monitoring center on one box.

What runs, every server a child process of its own on loopback, in a session of its own:

* a private PostgreSQL (``initdb`` in a temporary directory, a free port), or the database
  given with ``--db`` / ``GASGATE_CENTRAL_DB``;
* the gas company's Mosquitto (the ``gasco/v1`` link is MQTT 5: the embedded amqtt broker of
  ``gasgate demo`` speaks 3.1.1 only) and one site Mosquitto per gateway (each gateway box has
  its own, as deployed);
* three ``gasgate run`` gateways, each with a registry of its own district (restaurants and
  households with a location), simulated kits behind KSP/1 receivers on ptys and MQTT-native
  devices (the simulator and bridges run in this process, as in ``gasgate demo``), and its
  interlock, which the demo runs as a service manager would (``interlock: external``): a
  gateway killed with ``kill -9`` leaves its interlock running, and the demo stops it at the end;
* two ``gasgate central run`` instances in one ``$share`` group on the same database: that is
  how the center is meant to run (either may die), and two are what show it; the second costs
  one more Python process.

The demo users' names and password and the control room's address come first; the story waits
for someone to sign in (or starts at once with ``--story-now``): a gas leak at gateway 2
becomes an incident in the center, with the site contact's SMS carrying the alert page link;
gateway 3 is killed and becomes a "gateway offline" incident naming its sites; gateway 3
returns and that incident closes itself. Ctrl-C stops every child, in reverse order of start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg

from central import db
from central.private_services import Mosquitto, PostgreSQL, free_port
from central.users import UserError, add_user, issue_token
from firmware_bridge.simulator import District, SimSite, Step, Story
from firmware_bridge.simulator import scenarios as sc
from gateway.demo import DEMO_PASSWORD, DEMO_USERS, kit_rooms
from gateway.demo_people import DemoPeople
from gateway.errors import GasgateError

__all__ = ["CentralDemoOptions", "run_central_demo"]

log = logging.getLogger(__name__)

# One district of a city around Wuxi per gateway (central/fleet.py's city), with its centre.
DISTRICTS: Final = (("Liangxi", 31.57, 120.30), ("Xinwu", 31.49, 120.37), ("Binhu", 31.50, 120.25))
INSTANCES: Final = ("demo-a", "demo-b")
GROUP: Final = "gasgate-demo"
# Shared by the gateways (escalation.alert_page.secret) and the center: throw-away demo data.
ALERT_SECRET: Final = "gasgate-demo-alert-link-secret"  # noqa: S105
_UP_WITHIN_S: Final = 180.0  # eight Python processes starting on a busy 2-core box
_SEEN_WITHIN_S: Final = 30.0
_STOP_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class CentralDemoOptions:
    db: str | None = None  # None: a private PostgreSQL cluster, removed at the end
    data_dir: Path | None = None  # None: a temporary directory, removed at the end
    restaurants: int = 4  # per gateway
    households: int = 6
    seed: int = 1
    time_scale: float = 0.1
    duration_s: float | None = None
    story: bool = True
    story_now: bool = False
    http_port: int = 8090  # the control room (instance demo-a); 0: any free port


def _gasgate() -> str:
    beside = Path(sys.executable).with_name("gasgate")  # the venv's own command
    return str(beside) if beside.exists() else shutil.which("gasgate") or "gasgate"


class Child:
    """One child process, its output in a log file, in a session of its own (see the module)."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.args, self.log, self.env = name, args, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.spawn()

    def spawn(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own command and arguments
                self.args,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def kill(self) -> None:
        """``kill -9``: no clean stop, so the broker publishes the gateway's last will."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, _STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Blocking:
    """A service started and stopped by blocking calls (Mosquitto, PostgreSQL) as a room."""

    def __init__(self, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self._start, self._stop = start, stop

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)


@dataclass
class DemoGateway:
    n: int
    gateway_id: str
    district: District
    child: Child

    @property
    def name(self) -> str:
        return f"gateway {self.n} ({self.gateway_id}, {self.district.sites[0].district})"


def make_district(n: int, options: CentralDemoOptions) -> District:
    """Gateway ``n``'s sites: the simulator's district, all in one district of the city, each
    with a location near its centre (the center's map)."""
    name, lat, lon = DISTRICTS[n - 1]
    seed = options.seed * 10 + n
    district = District.generate(options.restaurants, options.households, seed, options.time_scale)
    rng = random.Random(seed)
    for site in district.sites:
        site.address = site.address.removeprefix(site.district)  # the street, not the old district
        site.district = name
        site.latitude = round(lat + rng.uniform(-0.03, 0.03), 5)
        site.longitude = round(lon + rng.uniform(-0.03, 0.03), 5)
    return district


class CentralDemo:
    """The rooms, started in data-flow order and stopped in reverse."""

    def __init__(
        self, options: CentralDemoOptions, workdir: Path, out: Callable[[str], None]
    ) -> None:
        self.options = options
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.out = out
        self._rooms: list[Any] = []
        self.gateways: dict[int, DemoGateway] = {}
        self.centers: list[str] = []  # their base URLs, the control room first
        self.token = ""  # the demo's own API token (user "officer")
        self.dsn = ""
        # Set by Ctrl-C / SIGTERM: the start goes on to its end (a server half started in a
        # thread cannot be called back), but waits no longer for anything.
        self.stopping = asyncio.Event()

    async def _start(self, room: Any) -> None:
        await room.start()
        self._rooms.append(room)

    async def stop(self) -> None:
        while self._rooms:
            room = self._rooms.pop()
            try:
                await room.stop()
            except Exception:  # the next ones must still stop
                log.exception("stopping %s failed", type(room).__name__)

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        dsn = await self._database()
        gasco = await self._broker("gas company")
        self.people = DemoPeople(self.out)
        await self._start(self.people)
        ports = [self.options.http_port or free_port(), *(free_port() for _ in INSTANCES[1:])]
        self.centers = [f"http://127.0.0.1:{port}" for port in ports]
        for n in range(1, len(DISTRICTS) + 1):
            await self._gateway(n, gasco.url)
        for instance, port in zip(INSTANCES, ports, strict=True):
            await self._start(self._center(instance, port, dsn, gasco.url))
        await self._all_up()

    async def _database(self) -> str:
        self.dsn = self.options.db or await self._cluster()
        await asyncio.to_thread(db.upgrade, self.dsn)
        self.token = await asyncio.to_thread(_users, self.dsn)
        return self.dsn

    async def _cluster(self) -> str:
        self.out("demo: starting a private PostgreSQL (initdb in a temporary directory)")
        cluster = PostgreSQL()
        await self._start(_Blocking(cluster.start, cluster.remove))
        self.out(f"demo: PostgreSQL {cluster.dsn} (cluster in {cluster.workdir})")
        return cluster.dsn

    async def _broker(self, role: str) -> Mosquitto:
        broker = Mosquitto(self.logs)
        await self._start(_Blocking(broker.start, broker.stop))
        self.out(f"demo: {role} Mosquitto {broker.url}")
        return broker

    async def _gateway(self, n: int, gasco_url: str) -> None:
        site = await self._broker(f"gateway {n}'s site")
        district = make_district(n, self.options)
        home = self.workdir / f"gateway-{n}"
        district.write_registry(home / "registry")
        sim, _, bridges = kit_rooms(district, site.url, home, f"gw{n}-receiver")
        for room in (sim, *bridges):
            await self._start(room)
        gateway_id = f"gw-demo-{n}"
        config = home / "gasgate.yaml"
        settings = self._gateway_settings(n, gateway_id, site.url, gasco_url, bridges)
        config.write_text(json.dumps(settings, indent=2), encoding="utf-8")  # JSON is YAML
        # The interlock first, as its unit would start before the gateway's.
        interlock = Child(
            f"interlock-{n}",
            [_gasgate(), "interlock", "--data-dir", str(home / "data")],
            self.logs / f"interlock-{n}.log",
            {"GASGATE_MQTT": site.url, "GASGATE_GATEWAY_ID": gateway_id},
        )
        await self._start(interlock)
        child = Child(
            f"gateway-{n}",
            [_gasgate(), "run", "--config", str(config)],
            self.logs / f"gateway-{n}.log",
            {"GASGATE_LOG_FORMAT": "text"},
        )
        await self._start(child)
        self.gateways[n] = DemoGateway(n, gateway_id, district, child)

    def _gateway_settings(
        self, n: int, gateway_id: str, site_url: str, gasco_url: str, bridges: list[Any]
    ) -> dict[str, Any]:
        home = self.workdir / f"gateway-{n}"
        escalation = self.people.escalation_settings()
        # The first SMS to a site's contact links to the center's alert page (issue 14).
        escalation["alert_page"] = {"base_url": self.centers[0], "secret": ALERT_SECRET}
        return {
            "mqtt": site_url,
            "gasco_mqtt": gasco_url,
            "data_dir": str(home / "data"),
            "registry": str(home / "registry"),
            "gateway_id": gateway_id,
            "bridges": [b.config.bridge_id for b in bridges],
            "interlock": "external",  # the demo runs it (see the module)
            "valve_retry_s": max(1.0, 10 * self.options.time_scale),
            "escalation": escalation,
            "http_port": free_port(),
            "log_level": "WARNING",
        }

    def _center(self, instance: str, port: int, dsn: str, gasco_url: str) -> Child:
        args = [
            _gasgate(), "central", "run", "--db", dsn, "--gasco-mqtt", gasco_url,
            "--http-port", str(port), "--instance", instance, "--group", GROUP,
        ]  # fmt: skip
        env = {
            "GASGATE_CENTRAL_ALERT_SECRET": ALERT_SECRET,
            "GASGATE_CENTRAL_HOTLINE": self.people.escalation_settings()["hotline"],
            "GASGATE_CENTRAL_LOG_FORMAT": "text",
            "GASGATE_CENTRAL_LOG_LEVEL": "WARNING",
        }
        return Child(f"center-{instance}", args, self.logs / f"center-{instance}.log", env)

    async def _all_up(self) -> None:
        """Every center ready and every gateway online at the center, or an error naming what
        is missing and where the logs are."""
        waiting = {f"center {i}" for i in INSTANCES} | {g.name for g in self.gateways.values()}

        async def up(client: httpx.AsyncClient) -> bool:
            for instance, url in zip(INSTANCES, self.centers, strict=True):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    waiting.discard(f"center {instance}")
            online = {g["gateway_id"] for g in await self.api("/api/gateways") if g["online"]}
            waiting.difference_update(
                g.name for g in self.gateways.values() if g.gateway_id in online
            )
            return not waiting

        if not await self._until(up, _UP_WITHIN_S) and not self.stopping.is_set():
            raise GasgateError(
                f"not up within {_UP_WITHIN_S:g} s: {', '.join(sorted(waiting))}; "
                f"see the logs in {self.logs}"
            )
        self._introduce()

    def _introduce(self) -> None:
        names = ", ".join(f"{n} ({r})" for n, r in DEMO_USERS.items())
        self.out(f"demo: control room {self.centers[0]}/ (add ?lang=en for English); users "
                 f"{names}, password {DEMO_PASSWORD!r}")  # fmt: skip
        self.out(
            f"demo: the same center's second instance {self.centers[1]}/ (one database: sign "
            "in at either, see at one what the other took in)"
        )
        for g in self.gateways.values():
            self.out(f"demo: {g.name}: {len(g.district.sites)} sites")
        self.out(f"demo: every server's log is in {self.logs}")

    async def api(self, path: str, base: str | None = None) -> Any:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(
                f"{base or self.centers[0]}{path}",
                headers={"Authorization": f"Bearer {self.token}"},
            )
            answer.raise_for_status()
            return answer.json()

    async def _until(
        self, check: Callable[[httpx.AsyncClient], Awaitable[Any]], within_s: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        async with httpx.AsyncClient(timeout=5) as client:
            while loop.time() < deadline and not self.stopping.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    found = await check(client)
                    if found:
                        return found
                await asyncio.sleep(0.2)
        return None

    async def signed_in(self) -> None:
        """Until someone opens a control room session (they live in the database)."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            ask = "SELECT 1 FROM sessions LIMIT 1"  # nothing notifies a sign-in
            while not await (await conn.execute(ask)).fetchone():  # noqa: ASYNC110
                await asyncio.sleep(0.5)

    # --- the story ----------------------------------------------------------------------------

    def story(self) -> Story:
        leak_gw, lost_gw = self.gateways[2], self.gateways[3]
        leak_site = next(
            s for s in leak_gw.district.sites if s.site_type == "restaurant" and s.valve
        )
        steps: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
            (3, f"gas leak at {leak_site.name} ({leak_site.site_id}), {leak_gw.name}",
             lambda: self._leak(leak_gw, leak_site)),
            (20, f"{lost_gw.name} is killed (kill -9): its {len(lost_gw.district.sites)} "
             "sites go unmonitored", lambda: self._lose(lost_gw)),
            (40, f"{lost_gw.name} comes back", lambda: self._return(lost_gw)),
        ]  # fmt: skip
        self.out(f"STORY starts: {len(steps)} steps over {steps[-1][0]:g} s")
        return Story(
            [
                Step(at, label, self._say(f"STORY [{n}/{len(steps)} +{at:g} s] {label}", play))
                for n, (at, label, play) in enumerate(steps, start=1)
            ]
        )

    def _say(self, line: str, play: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            self.out(line)
            await play()

        return step

    async def _leak(self, gateway: DemoGateway, site: SimSite) -> None:
        rising = asyncio.create_task(sc.leak(site.detector))

        async def incident(client: httpx.AsyncClient) -> Any:
            found = [
                i
                for i in await self.api("/api/incidents?state=open")
                if i["gateway_id"] == gateway.gateway_id and i["site_id"] == site.site_id
            ]
            return found[0] if found else None

        seen = await self._until(incident, _SEEN_WITHIN_S)
        self._show(seen, "no incident at the center")
        await rising

    async def _lose(self, gateway: DemoGateway) -> None:
        gateway.child.kill()
        seen = await self._until(lambda _: self._offline(gateway, "open"), _SEEN_WITHIN_S)
        self._show(seen, "no gateway offline incident at the center")

    async def _return(self, gateway: DemoGateway) -> None:
        gateway.child.spawn()
        closed = await self._until(lambda _: self._offline(gateway, "closed"), _UP_WITHIN_S)
        self._show(closed, "the gateway offline incident did not close")

    async def _offline(self, gateway: DemoGateway, state: str) -> Any:
        """The gateway's offline incident that is ``open`` (not closed) or ``closed``."""
        for i in await self.api("/api/incidents?state=all"):
            mine = i["kind"] == "gateway_offline" and i["gateway_id"] == gateway.gateway_id
            if mine and (i["state"] == "closed") == (state == "closed"):
                return i
        return None

    def _show(self, incident: Any, missing: str) -> None:
        if not incident:
            self.out(f"CENTER: {missing} within the wait; see the logs in {self.logs}")
            return
        valve = f", valves {incident['valve_state']}" if incident["valve_state"] else ""
        self.out(
            f"CENTER incident {incident['incident_id']} ({incident['state']}): "
            f"{incident['title'].get('en', '')} [{incident['severity']}{valve}] "
            f"{self.centers[0]}/incidents/{incident['incident_id']}"
        )

    async def summary(self) -> str:
        with contextlib.suppress(httpx.HTTPError):
            incidents = await self.api("/api/incidents?state=all")
            opened = sum(i["state"] != "closed" for i in incidents)
            return f"demo: the center holds {len(incidents)} incident(s), {opened} not closed"
        return "demo: the center did not answer"


def _users(dsn: str) -> str:
    """The demo users (a fixed password: throw-away data); returns an API token for the demo's
    own questions to the center."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, role in DEMO_USERS.items():
            with contextlib.suppress(UserError):  # a kept database has them already
                add_user(conn, name, role, DEMO_PASSWORD, districts=(), at=now)
        return issue_token(conn, "officer", now)


async def _story(demo: CentralDemo, options: CentralDemoOptions) -> None:
    if not options.story_now:
        demo.out(
            "demo: the story starts when you sign in to the control room (--story-now: at once)"
        )
        await demo.signed_in()
    await demo.story().run()


async def run_central_demo(options: CentralDemoOptions, out: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C / SIGTERM (or ``duration_s``); 0 on a clean stop."""
    with contextlib.ExitStack() as stack:
        workdir = options.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="gasgate-demo-"))
        )
        demo = CentralDemo(options, workdir, out)
        stop = demo.stopping
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        story: asyncio.Task[None] | None = None
        try:
            await demo.start()
            if not stop.is_set():
                if options.story:
                    story = asyncio.create_task(_story(demo, options))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), options.duration_s)
                out(await demo.summary())
        finally:
            if story is not None:
                story.cancel()
            out("demo: stopping")
            await demo.stop()
        out("demo: stopped cleanly")
    return 0
