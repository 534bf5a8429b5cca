"""gasgate central under load (issue 13): what one and two instances absorb, a reconnect storm,
and an alarm's way to the duty officer's console during it and when idle.

Everything is a real process on this box: a private PostgreSQL (fsync on, as deployed; the
tests' cluster runs without it), a private Mosquitto configured as deploy/central's (1,000
messages in flight, 200,000 queued per session), and ``gasgate central run`` instances in one
``$share`` group. The fleet simulator (:mod:`central.fleet`) plays the gateways.

1. **Absorbed, one instance then two** (each in a world of its own: a fresh database and
   broker): a burst of alarm events (real alarm_id / revision sequences) published as fast as
   the broker takes them; the clock stops when the last is a row of ``alarm_events``. The same
   for site summaries (rows of ``sites``). The ratio two ÷ one is the goal (≥ 1.6). CPU seconds
   of the centers and of PostgreSQL over each burst say who worked.
2. **Idle**: one new leak at a time (a ``raised`` event of a new alarm), alternately timed from
   its publication until ``GET /api/incidents`` (instance A, polled every 10 ms) lists an
   incident with its alarm id, and until instance A's ``GET /api/stream`` (SSE) pushes it (no
   polling then: a poll is work for the instance that pushes). Events are shared between the
   instances, so half are ingested by B and reach A's console through PostgreSQL's NOTIFY.
3. **Storm**: 1,000 gateways x 100 sites come back at once: 100,000 retained summaries (and
   1,000 availabilities) as fast as the broker takes them; the clock stops when all 100,000
   are rows of ``sites``. Leaks are probed as in 2 all through it, the API and the console
   side by side (taking turns, the slow API probes would leave the console few samples).

Goals (issue 13): storm ≤ 30 s with two instances; alarm → console p99 ≤ 250 ms during the
storm and ≤ 50 ms idle; two instances ≥ 1.6x one. ``--quick`` runs small sizes to prove the
harness, and its figures mean nothing. ``GASGATE_BENCH_CENTRAL=ratio`` runs part 1 alone (about a
minute), ``=storm`` parts 2 and 3 alone (two instances, no bursts before: about 40 s), to try a
change without the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg

from central.fleet import FleetSpec, Message, Publisher, Story, Storyteller, availability, summaries
from tests.support.postgres import PostgreSQL, fresh_database, pg_bin
from tests.support.services import Mosquitto, free_port

GOAL_RATIO: Final = 1.6
GOAL_STORM_S: Final = 30.0
GOAL_STORM_P99_MS: Final = 250.0
GOAL_IDLE_P99_MS: Final = 50.0
PROBE_TIMEOUT_S: Final = 5.0
POLL_S: Final = 0.01  # the API poll: a probe's API figure is late by half of it on average
ABSORB_POLL_S: Final = 0.05
#: By case: (seconds since the probes began, "api" | "console", ms or None) of every probe,
#: written to central-samples.json: when in a storm the slow ones came.
SAMPLES: dict[str, list[tuple[float, str, float | None]]] = {}
BROKER: Final = "max_inflight_messages 1000\nmax_queued_messages 200000\n"  # deploy/central
GASGATE: Final = str(Path(sys.executable).with_name("gasgate"))
PARTS_ENV: Final = "GASGATE_BENCH_CENTRAL"  # ratio | storm | unset (both)


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int  # the burst, per instance count
    summaries: int  # ditto (gateways of 100 sites)
    storm_gateways: int
    storm_sites: int
    idle_probes: int


FULL: Final = Sizes(events=20_000, summaries=50_000, storm_gateways=1_000, storm_sites=100,
                    idle_probes=100)  # fmt: skip
QUICK: Final = Sizes(events=1_000, summaries=2_000, storm_gateways=50, storm_sites=40,
                     idle_probes=10)  # fmt: skip


def _row(measure: str, case: str, instances: int | str, **cells: Any) -> dict[str, object]:
    row: dict[str, object] = {"measure": measure, "case": case, "instances": instances}
    for key in ("value", "unit", "p50_ms", "p99_ms", "goal", "ok", "note"):
        value = cells.get(key, "-")
        row[key] = {True: "yes", False: "NO"}.get(value, value) if key == "ok" else value
    return row


def _p99(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# --- the world ---------------------------------------------------------------------------------


def _postgres() -> PostgreSQL:
    """The tests' private cluster, restarted with fsync on: a center's commits are durable."""
    cluster = PostgreSQL()
    cluster.start()
    cluster.stop()
    assert cluster.workdir is not None
    options = (
        f"-p {cluster.port} -k {cluster.workdir} -c listen_addresses=127.0.0.1 -c fsync=on"
        " -c synchronous_commit=on -c max_connections=200"
    )
    data, log = cluster.workdir / "data", cluster.workdir / "server.log"
    cluster._run(pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start")
    return cluster


def _gasgate(*args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [GASGATE, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"gasgate {' '.join(args[:3])}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def central_run_missing() -> str | None:
    """Why the center cannot run here yet (None: it can)."""
    done = subprocess.run(
        [GASGATE, "central", "run", "--help"], capture_output=True, text=True, check=False
    )
    return None if done.returncode == 0 else "gasgate central run is not there yet"


@dataclass
class Center:
    """One ``gasgate central run`` process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds so far of the instance and its children (its state
        process) (Linux /proc)."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ticks = 0
        for each in (pid, *children):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class World:
    work: Path
    dsn: str
    broker: Mosquitto
    token: str
    cluster: PostgreSQL
    centers: list[Center] = field(default_factory=list)

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds so far: the centers', PostgreSQL's (its postmaster, the backends that
        ended, whose time it collected, and those alive)."""
        centers = sum(c.cpu_s() for c in self.centers)
        assert self.cluster.workdir is not None
        pid = (self.cluster.workdir / "data" / "postmaster.pid").read_text().split()[0]
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if stat.parent.name == pid:
                    ticks += sum(int(f) for f in fields[11:15])
                elif fields[1] == pid:
                    ticks += int(fields[11]) + int(fields[12])
        return centers, ticks / os.sysconf("SC_CLK_TCK")

    async def start_center(self) -> Center:
        name = f"bench-{'abcdefgh'[len(self.centers)]}"
        port = free_port()
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the loop waits below
                [GASGATE, "central", "run", "--db", self.dsn, "--gasco-mqtt", self.broker.url,
                 "--http-port", str(port), "--instance", name, "--group", "bench"],
                stdout=log, stderr=log, env=os.environ | {"GASGATE_LOG_LEVEL": "WARNING"},
            )  # fmt: skip
        center = Center(name, port, proc)
        self.centers.append(center)
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): see {self.work}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{center.url}/readyz")).status_code == 200:
                        return center
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} not ready within 60 s")


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    with tempfile.TemporaryDirectory(prefix="gasgate-bench-central-") as tmp:
        work = Path(tmp)
        cluster = _postgres()
        broker = Mosquitto(work, extra_config=BROKER)
        the_world: World | None = None
        try:
            dsn = fresh_database(cluster.dsn)
            _gasgate("central", "db", "upgrade", "--db", dsn)
            _gasgate(
                "central", "user", "add", "bench", "--role", "supervisor", "--db", dsn,
                "--password-stdin", stdin="bench password 13\n",
            )  # fmt: skip
            token = _gasgate("central", "user", "token", "bench", "--db", dsn).splitlines()[-1]
            broker.start()
            the_world = World(work, dsn, broker, token, cluster)
            yield the_world
        finally:
            for center in the_world.centers if the_world else ():
                center.stop()
            broker.stop()
            cluster.remove()


# --- absorbed ----------------------------------------------------------------------------------


async def _count(conn: psycopg.AsyncConnection[Any], sql: str, like: str) -> int:
    cur = await conn.execute(sql, (like,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Absorbed:
    took: float | None  # seconds until every row was there (None: not within the time allowed)
    published: float  # seconds the publishing took (every PUBACK)
    centers_cpu: float  # CPU seconds meanwhile
    pg_cpu: float
    box_cpu: float  # every process on the box, the other sessions' too
    span: float  # seconds the CPU figures cover

    def rate(self, rows: int) -> float | None:
        return rows / self.took if self.took else None

    @property
    def cpu(self) -> str:
        return (
            f"CPU: centers {self.centers_cpu:.1f} s, PostgreSQL {self.pg_cpu:.1f} s, the box"
            f" {self.box_cpu:.1f} s of {self.span * (os.cpu_count() or 1):.1f} s"
        )


def _box_cpu_s() -> float:
    """CPU seconds every process on the box used so far: all but idle and I/O wait."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


async def absorb(
    world: World,
    publisher: Publisher,
    messages: Sequence[Message],
    sql: str,
    like: str,
    *,
    rows: int,
    retain: bool,
) -> Absorbed:
    """Publish ``messages`` as fast as the broker takes them (retained unless they are alarm
    events, as the gateways do) and wait until ``sql`` counts ``rows``."""
    centers, pg = world.cpu_s()
    box = _box_cpu_s()
    async with await psycopg.AsyncConnection.connect(world.dsn, autocommit=True) as conn:
        started = time.perf_counter()
        sending = asyncio.create_task(publisher.publish(messages, retain=retain))
        took: float | None = None
        deadline = started + max(120.0, rows / 500)
        while time.perf_counter() < deadline:
            if await _count(conn, sql, like) >= rows:
                took = time.perf_counter() - started
                break
            await asyncio.sleep(ABSORB_POLL_S)
        published = await sending
    centers_after, pg_after = world.cpu_s()
    span = time.perf_counter() - started
    return Absorbed(
        took, published, centers_after - centers, pg_after - pg, _box_cpu_s() - box, span
    )


EVENTS_SQL: Final = "SELECT count(*) FROM alarm_events WHERE gateway_id LIKE %s"
SITES_SQL: Final = "SELECT count(*) FROM sites WHERE gateway_id LIKE %s"


def _events(name: str, n: int) -> list[Message]:
    teller = Storyteller(FleetSpec(100, 100, name=name))
    at = datetime.now(UTC)
    return [teller.next(at) for _ in range(n)]


def _summaries(name: str, gateways: int, sites: int) -> list[Message]:
    spec = FleetSpec(gateways, sites, name=name)
    return availability(spec) + summaries(spec, datetime.now(UTC))


async def throughput(
    world: World, publisher: Publisher, sizes: Sizes, instances: int
) -> dict[str, Absorbed]:
    """A burst of events, then one of summaries (with their gateways' availabilities, as they
    come back)."""
    events = _events(f"ev{instances}", sizes.events)
    by_events = await absorb(
        world, publisher, events, EVENTS_SQL, f"ev{instances}-%", rows=len(events), retain=False
    )
    batch = _summaries(f"su{instances}", sizes.summaries // 100, 100)
    by_summaries = await absorb(
        world, publisher, batch, SITES_SQL, f"su{instances}-%", rows=sizes.summaries, retain=True
    )
    return {"events": by_events, "summaries": by_summaries}


# --- probes: an alarm's way to the console -----------------------------------------------------


class Probes:
    """New leaks one at a time, each timed to instance A's API or to its SSE stream."""

    def __init__(self, world: World) -> None:
        self._world = world
        # The probed gateway's own connection, as a real gateway has: on the fleet's, a leak
        # would queue behind the storm's packets in the same socket.
        self._publisher = Publisher(world.broker.url, connections=1, name="bench-probe")
        self._spec = FleetSpec(1, 1000, name="probe")
        self._next = 0
        self._pushed: list[tuple[float, str]] = []  # (arrival, SSE data) of every push
        self._arrived = asyncio.Event()
        self._headers = {"Authorization": f"Bearer {world.token}"}
        self._client = httpx.AsyncClient(headers=self._headers, timeout=PROBE_TIMEOUT_S)
        self.api: list[float | None] = []  # ms to the API; None: not within PROBE_TIMEOUT_S
        self.console: list[float | None] = []  # ms to the SSE push
        self.polls: list[float] = []  # ms each GET /api/incidents took: what bounds the API figure
        self.asked: list[float] = []  # ms after publishing the request that found it was sent
        self.since = time.perf_counter()  # the probes' time 0 (the storm's start)
        self.case = "idle"
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probes:
        await self._publisher.__aenter__()
        connected = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._listen(connected))
        await asyncio.wait_for(connected.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()
        await self._publisher.__aexit__()

    async def _listen(self, connected: asyncio.Event) -> None:
        url = f"{self._world.centers[0].url}/api/stream"
        async with (
            httpx.AsyncClient(headers=self._headers, timeout=None) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            connected.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    self._pushed.append((time.perf_counter(), line))
                    self._arrived.set()

    def reset(self) -> None:
        self.api, self.console, self.polls, self.asked = [], [], [], []
        self.since = time.perf_counter()

    async def one(self, *, api: bool) -> None:
        """One leak, timed to the API (``api``: polled) or to the console (nothing polled: a
        poll of ``GET /api/incidents`` is work for the instance that pushes the console)."""
        s, self._next = self._next % self._spec.sites, self._next + 1
        story = Story.begin(self._spec, 0, s, datetime.now(UTC))
        message = story.next(datetime.now(UTC))
        assert message is not None
        seen_before = len(self._pushed)
        started = time.perf_counter()
        await self._publisher.send([message])
        kind, ms = (
            ("api", await self._api(story, started))
            if api
            else ("console", await self._console(story.alarm_id, started, seen_before))
        )
        (self.api if api else self.console).append(ms)
        SAMPLES.setdefault(self.case, []).append((round(started - self.since, 3), kind, ms))

    async def _api(self, story: Story, started: float) -> float | None:
        url = f"{self._world.centers[0].url}/api/incidents"
        params = {"q": self._spec.site_id(0, story.s)}
        while (elapsed := time.perf_counter() - started) < PROBE_TIMEOUT_S:
            asked = time.perf_counter()
            response = await self._client.get(url, params=params)
            self.polls.append((time.perf_counter() - asked) * 1000)
            if story.alarm_id in response.text:
                self.asked.append((asked - started) * 1000)
                return (time.perf_counter() - started) * 1000
            await asyncio.sleep(max(0.0, POLL_S - (time.perf_counter() - started - elapsed)))
        return None

    async def _console(self, alarm_id: str, started: float, seen: int) -> float | None:
        while time.perf_counter() - started < PROBE_TIMEOUT_S:
            for at, data in self._pushed[seen:]:
                if alarm_id in data:
                    return (at - started) * 1000
            seen = len(self._pushed)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.1)
        return None

    async def run(self, count: int, gap_s: float = 0.05) -> None:
        """``count`` probes of each kind, alternating."""
        self.reset()
        for i in range(2 * count):
            await self.one(api=bool(i % 2))
            await asyncio.sleep(gap_s)

    async def until(self, done: asyncio.Task[Any], gap_s: float = 0.02) -> None:
        """Both kinds side by side until ``done`` (a storm is over in seconds: taking turns,
        the slow API probes would leave the console a handful of samples)."""
        self.reset()

        async def loop(api: bool) -> None:
            while not done.done():
                await self.one(api=api)
                await asyncio.sleep(gap_s)

        await asyncio.gather(loop(api=True), loop(api=False))


def _latency_rows(case: str, probes: Probes, goal_ms: float) -> list[dict[str, object]]:
    rows = []
    for measure, timed in (
        ("alarm -> API (incidents)", probes.api),
        ("alarm -> console (SSE)", probes.console),
    ):
        samples = [x for x in timed if x is not None]
        missing = len(timed) - len(samples)
        notes = [f"{missing} of {len(timed)} not within {PROBE_TIMEOUT_S:g} s"] if missing else []
        if timed is probes.api and probes.polls and probes.asked:
            notes.insert(
                0,
                f"polled every {POLL_S * 1000:g} ms; a poll takes p50"
                f" {statistics.median(probes.polls):.0f} ms, the one that found it was sent at"
                f" p50 {statistics.median(probes.asked):.0f} ms",
            )
        goal = f"p99 <= {goal_ms:g} ms"
        if not samples:
            rows.append(_row(measure, case, 2, goal=goal, ok=False, note="; ".join(notes)))
            continue
        p99 = _p99(samples)
        rows.append(
            _row(
                measure,
                case,
                2,
                value=len(samples),
                unit="probes",
                p50_ms=round(statistics.median(samples), 1),
                p99_ms=round(p99, 1),
                goal=goal,
                ok=p99 <= goal_ms and not missing,
                note="; ".join(notes) or "-",
            )
        )
    return rows


# --- the suite ---------------------------------------------------------------------------------


async def _storm(world: World, publisher: Publisher, probes: Probes, sizes: Sizes) -> Absorbed:
    messages = _summaries("storm", sizes.storm_gateways, sizes.storm_sites)
    storm = asyncio.create_task(
        absorb(
            world,
            publisher,
            messages,
            SITES_SQL,
            "storm-%",
            rows=sizes.storm_gateways * sizes.storm_sites,
            retain=True,
        )
    )
    await probes.until(storm)
    return await storm


def _rate_rows(
    one: dict[str, Absorbed], two: dict[str, Absorbed], sizes: Sizes
) -> list[dict[str, object]]:
    rows = []
    for kind, n in (("events", sizes.events), ("summaries", sizes.summaries)):
        rates = []
        for instances, measured in ((1, one[kind]), (2, two[kind])):
            rate = measured.rate(n)
            rates.append(rate)
            rows.append(
                _row(
                    f"{kind} absorbed",
                    f"burst of {n:,}",
                    instances,
                    value=round(rate) if rate else "-",
                    unit=f"{kind}/s",
                    note=f"{measured.cpu}; published in {measured.published:.1f} s"
                    if rate
                    else "not all within the time allowed",
                )
            )
        a, b = rates
        ratio = b / a if a and b else None
        rows.append(
            _row(
                f"{kind} absorbed",
                "two / one",
                "2 / 1",
                value=round(ratio, 2) if ratio else "-",
                unit="x",
                goal=f">= {GOAL_RATIO:g}x",
                ok=ratio is not None and ratio >= GOAL_RATIO,
            )
        )
    return rows


def _storm_row(storm: Absorbed, sizes: Sizes) -> dict[str, object]:
    n = sizes.storm_gateways * sizes.storm_sites
    return _row(
        "storm absorbed",
        f"{sizes.storm_gateways:,} x {sizes.storm_sites} summaries",
        2,
        value=round(storm.took, 2) if storm.took else "-",
        unit="s",
        goal=f"<= {GOAL_STORM_S:g} s",
        ok=storm.took is not None and storm.took <= GOAL_STORM_S,
        note=f"{n / storm.took:,.0f}/s; published in {storm.published:.1f} s; {storm.cpu}"
        if storm.took
        else "not all within the time allowed",
    )


async def _latencies(w: World, publisher: Publisher, sizes: Sizes) -> list[dict[str, object]]:
    """Idle probes, then the storm with its probes, on a world with two instances."""
    async with Probes(w) as probes:
        probes.case = "warm-up"  # first connections and queries
        await probes.run(3)
        probes.case = "idle"
        await probes.run(sizes.idle_probes)
        rows = _latency_rows("idle", probes, GOAL_IDLE_P99_MS)
        probes.case = "storm"
        storm = await _storm(w, publisher, probes, sizes)
        rows.append(_storm_row(storm, sizes))
        return rows + _latency_rows("during the storm", probes, GOAL_STORM_P99_MS)


async def _suite(sizes: Sizes, parts: str) -> list[dict[str, object]]:
    """Each instance count in a world of its own (a fresh database and broker): the second
    burst must not pay for the rows the first left. The probes run in the two instances' world
    after their bursts (in a fresh one when the storm part runs alone)."""
    rows: list[dict[str, object]] = []
    absorbed: list[dict[str, Absorbed]] = []
    for instances in (1, 2) if parts != "storm" else (2,):
        async with world() as w, Publisher(w.broker.url, name="bench-fleet") as publisher:
            for _ in range(instances):
                await w.start_center()
            if parts != "storm":
                absorbed.append(await throughput(w, publisher, sizes, instances))
            if instances == 2:
                rows = _rate_rows(absorbed[0], absorbed[1], sizes) if absorbed else []
                if parts != "ratio":
                    rows += await _latencies(w, publisher, sizes)
    return rows


def write_artifacts(out_dir: Path) -> Iterator[Path]:
    """Every probe with its time (seconds since the idle run's or the storm's start)."""
    samples = out_dir / "central-samples.json"
    samples.write_text(json.dumps(SAMPLES) + "\n")
    yield samples


def run(quick: bool) -> list[dict[str, object]]:
    why = central_run_missing()
    if why is not None:
        return [_row("central", "not measured", "-", note=why)]
    parts = os.environ.get(PARTS_ENV, "")
    if parts not in ("", "ratio", "storm"):
        raise SystemExit(f"{PARTS_ENV}={parts}: ratio, storm or unset (both)")
    return asyncio.run(_suite(QUICK if quick else FULL, parts))
