"""The whole gateway against the limit of its own stack (issue 8): P1 throughput, P2 alarm
latency (serial and MQTT paths, idle and loaded), P3 notification latency, P5 scale, P6 restart;
and against a peer doing the same safety job (issue 16): a Node-RED flow, in the same run, with
the same load generator and the same leak → close_valve probes, side by side.

Every service is real and private to the run: Mosquitto (``set_tcp_nodelay``, the site
broker's queue limit), a second Mosquitto as the gas company broker, an HTTP receiver as the
SMS provider. The gateway runs in its own process (:mod:`bench.sut`), the serial bridge in
another (``gasgate bridge``), the background load in another (:mod:`bench.loadgen`); this
process only plays the devices (a KSP/1 receiver on a real pty, MQTT clients) and watches the
clock. Everything speaks the public contracts only. Timing goals live here, never in tests.

``write_artifacts`` plots the latency distributions (``system.png``, matplotlib), keeps
the raw samples (``system-samples.json``) next to the table's JSON, and prints and writes the
side-by-side table of gasgate and the peer (``system-vs-node-red.md``).
``GASGATE_BENCH_SYSTEM=versus`` runs that comparison alone (a couple of minutes), ``=p1`` P1 alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiomqtt

from bench.peer import node_red
from bench.sut import Counted, CpuMeter, WaitMeter, stop_process
from firmware_bridge import ksp
from gateway.app import GatewaySettings
from gateway.contract import report_topic
from gateway.interlock.process import LOCK_FILE, TABLE_FILE
from gateway.interlock.table import Entry, dumps
from gateway.mqtturl import parse_mqtt_url
from tests.support.escalation_kit import eventually, settings_for
from tests.support.ksp_peer import RawPeer
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto, VictoriaMetrics, free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Goal:
    """A latency goal: p50 and/or p99 at or below so many ms."""

    p50_ms: float | None = None
    p99_ms: float | None = None

    def text(self) -> str:
        parts = [f"{k} <= {v:g} ms" for k, v in (("p50", self.p50_ms), ("p99", self.p99_ms)) if v]
        return ", ".join(parts) or "-"

    def met(self, p50: float, p99: float) -> bool:
        return (self.p50_ms is None or p50 <= self.p50_ms) and (
            self.p99_ms is None or p99 <= self.p99_ms
        )


# Goals from the issues (8, then 16 for the leak -> close_valve paths).
GOAL_RATIO = 0.6
GOAL_RATIO_BEFORE_16 = 1.02  # P1 gateway / bare in the last full run before issue 16
GOAL_NOTIFY = Goal(p99_ms=100.0)
#: Background load of the latency steps (reports/s): idle, then loaded.
LATENCY_STEPS = (0, 1_000, 2_000)
GOALS_MQTT = {0: Goal(2.0, 5.0), 2_000: Goal(p99_ms=15.0)}  # and below the peer at every step
GOALS_SERIAL = {0: Goal(p99_ms=10.0), 2_000: Goal(p99_ms=25.0)}
GOAL_SCALE_SPREAD = 0.10
GOAL_RSS_100K_MB = 300.0
GOAL_RESTART_S = 2.0
LOADED_PER_S = 2_000
MAX_LAG_S = 1.0  # P1: a step is kept up with if the backlog is gone this soon after it
ACTIVE_SITES = 500  # P5: the sites that report, whatever the registry's size
# The site broker as deployed (deploy/mosquitto/mosquitto.conf) plus TCP_NODELAY.
BROKER_CONFIG = "set_tcp_nodelay true\nmax_queued_messages 10000\n"
RADIO_BASE = 0x10000000
PROBE_TIMEOUT_S = 10.0
GIVE_UP_AFTER = 3  # probes missed in a row: the rest of that phase is counted missed at once
LEAK_JSON = (
    b'{"kind":"detector","seq":1,"event":"alarm","detector":{"lel_pct":60,"flags":["alarm_high"]}}'
)

#: The run's VictoriaMetrics (InfluxDB write API): every gateway of the run writes telemetry.
TELEMETRY_URL: list[str] = []
#: Raw latency samples (ms) by series, filled by :func:`run`, written by :func:`write_artifacts`.
SAMPLES: dict[str, list[float]] = {}
#: Issue 16, by system ("gasgate", "node-red") and step (background reports/s): the MQTT path's
#: leak -> close_valve samples and the system's CPU in % of one core over that step (all of
#: it, and its child processes': the gateway's interlock).
SIDE: dict[str, dict[int, tuple[list[float | None], tuple[float, float]]]] = {}
NO_FIGURES: tuple[list[float | None], tuple[float, float]] = ([], (0.0, 0.0))
INTERLOCK_ALONE: Final = "interlock alone"  # gasgate's safety layer with no gateway beside it
#: Issue 16: P1 throughput by system, reports/s, or why it was not measured.
SIDE_RATE: dict[str, float | str] = {}
#: Issue 16, by system and step: run-queue wait per time on a core (ms) of the processes on the
#: MQTT path (the broker, the interlock or the peer, the gateway) over that step's probes.
WAITS: dict[str, dict[int, dict[str, float]]] = {}
#: ``GASGATE_BENCH_SYSTEM=versus``: issue 16's comparison alone (the MQTT path probes of gasgate,
#: of its interlock alone and of the peer at every step, P3 with them; no serial probes, P1,
#: P4-P6); ``=p1``: P1 alone (gasgate and the bare client); unset: everything.
MODE_ENV: Final = "GASGATE_BENCH_SYSTEM"


def _row(measure: str, case: str, **cells: Any) -> dict[str, object]:
    row: dict[str, object] = {"measure": measure, "case": case}
    for key in ("p50_ms", "p95_ms", "p99_ms", "value", "unit", "goal", "ok", "note"):
        value = cells.get(key, "-")
        row[key] = {True: "yes", False: "NO"}.get(value, value) if key == "ok" else value
    return row


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def _step_label(rate: int) -> str:
    return f"{rate:,} reports/s" if rate else "idle"


def _latency_row(
    measure: str, case: str, probes: list[float | None], goal: Goal | None
) -> dict[str, object]:
    samples = [x for x in probes if x is not None]
    missing = len(probes) - len(samples)
    SAMPLES[f"{measure} {case}"] = samples
    goal_text = goal.text() if goal else "-"
    if not samples:
        return _row(measure, case, goal=goal_text, ok=False, note="no samples")
    p50, p99 = round(statistics.median(samples), 2), _pct(samples, 0.99)
    note = f"{missing} of {len(probes)} not within {PROBE_TIMEOUT_S:g} s" if missing else "-"
    return _row(
        measure,
        case,
        p50_ms=p50,
        p95_ms=_pct(samples, 0.95),
        p99_ms=p99,
        value=len(samples),
        unit="samples",
        goal=goal_text,
        ok=(goal.met(p50, p99) and not missing) if goal else "-",
        note=note,
    )


# --- the world: registry files ----------------------------------------------------------------


def radio_id(n: int, valve: bool) -> str:
    return ksp.format_device_id(RADIO_BASE + 2 * n + int(valve))


def site_devices(groups: dict[str, int], radio_sites: int = 0) -> Iterator[tuple[str, str, str]]:
    """(site, detector, linked valve) of every site: ``{prefix}{n}`` with devices
    ``{prefix}d{n}`` and ``{prefix}v{n}`` per group, and ``radio_sites`` with 8-hex-digit ids."""
    for prefix, count in groups.items():
        for n in range(count):
            yield f"{prefix}{n}", f"{prefix}d{n}", f"{prefix}v{n}"
    for n in range(radio_sites):
        yield f"r{n}", radio_id(n, False), radio_id(n, True)


def write_registry(directory: Path, groups: dict[str, int], radio_sites: int = 0) -> Path:
    """Sites of one detector and one linked valve (:func:`site_devices`) as registry files."""
    directory.mkdir(parents=True, exist_ok=True)
    sites = ["site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang"]
    parts = ["site_id,component,device_id,model,installed_on,links,report_interval_s"]
    for site_id, detector, valve in site_devices(groups, radio_sites):
        # The name is in every alert text: "m12-site" finds this site's SMS among the others.
        sites.append(f"{site_id},{site_id}-site,restaurant,four_piece,Xuhui,A,C,13800000000,zh")
        parts.append(f"{site_id},leak_detector,{detector},KD,2025-01-01,,600")
        parts.append(f"{site_id},shutoff_valve,{valve},SV,2025-01-01,{detector},600")
    (directory / "sites.csv").write_text("\n".join(sites) + "\n")
    (directory / "components.csv").write_text("\n".join(parts) + "\n")
    return directory


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Sut(Counted):
    """The system under test in its own process (:mod:`bench.sut`), watched through stdout."""

    mode: str
    arg: str
    log_path: Path
    module: str = "bench.sut"  # a profiling or A/B variant may run its own
    proc: asyncio.subprocess.Process | None = None
    spawned: float = 0.0
    ready: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 120.0) -> None:
        self.spawned = time.monotonic()
        with self.log_path.open("ab") as log_file:  # the child keeps its own copy of the fd
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                self.mode,
                self.arg,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout_s):
            while not self._ready.is_set():
                if self._reader.done():
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"bench.sut {self.mode} exited before it was ready:\n{tail}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), 0.2)

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            message = json.loads(line)
            if message["kind"] == "ready":
                self.ready = message
            elif message["kind"] == "status":
                self.status = message
                if self.ready:
                    self._ready.set()  # ready, with a first status line to start from
            else:
                self.final = message

    @property
    def ready_s(self) -> float:
        """Process spawned → gateway started and connected, as this process saw it."""
        return float(self.ready["t"]) - self.spawned

    async def stop(self) -> dict[str, Any]:
        await stop_process(self.proc, 30)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return self.final


@contextlib.asynccontextmanager
async def running_sut(mode: str, arg: str, work: Path) -> AsyncIterator[Sut]:
    """The SUT started and ready; its stderr (logs) in ``work/sut-*.log``."""
    sut = Sut(mode, arg, work / f"sut-{mode}-{time.monotonic_ns()}.log")
    try:
        await sut.start()
        yield sut
    finally:
        await sut.stop()


def gateway_flags(url: str, data: Path, registry: Path | None, **extra: Any) -> str:
    """``GatewaySettings`` for :mod:`bench.sut` as JSON; the console on a free port."""
    if "http_port" in GatewaySettings.model_fields:
        extra.setdefault("http_port", free_port())
    if TELEMETRY_URL:
        extra.setdefault("influx_url", TELEMETRY_URL[0])
    flags = {
        "mqtt": url,
        "data_dir": str(data),
        "registry": str(registry) if registry else None,
        "gateway_id": "bench",
        "log_level": "ERROR",
        "valve_retry_s": 60,
        **extra,
    }
    return json.dumps({k: v for k, v in flags.items() if v is not None})


async def loadgen(
    url: str, rate: float, seconds: float, sites: int, prefix: str = "b"
) -> dict[str, Any]:
    """Run :mod:`bench.loadgen` to its end (stopped if cancelled); its summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        f"--rate={rate}",
        f"--seconds={seconds}",
        f"--sites={sites}",
        f"--prefix={prefix}",
        f"--client-id=loadgen-{prefix}-{time.monotonic_ns()}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.loadgen exited {proc.returncode}")
    summary: dict[str, Any] = json.loads(out)
    return summary


@contextlib.asynccontextmanager
async def background(url: str, rate: float, sites: int, limit_s: float) -> AsyncIterator[None]:
    """Load at ``rate`` while the body runs (at most ``limit_s``: the generator is bounded);
    none at rate 0 (idle)."""
    if not rate:
        yield
        return
    task = asyncio.create_task(loadgen(url, rate, limit_s, sites))
    await asyncio.sleep(1.0)  # let it connect and reach its rate
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def gasgate_process(*args: str, **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``gasgate ARGS...`` (this venv's), logging errors only, stopped at the end."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("gasgate")),
        *args,
        env=os.environ | {"GASGATE_LOG_LEVEL": "ERROR"} | env,
    )
    try:
        yield proc
    finally:
        await stop_process(proc, 15)


def bridge_process(port: Path, url: str) -> contextlib.AbstractAsyncContextManager[Any]:
    return gasgate_process("bridge", f"--port={port}", f"--mqtt={url}", "--bridge-id=bench")


def _client(url: str, name: str) -> aiomqtt.Client:
    return parse_mqtt_url(url).client(identifier=name)  # with TCP_NODELAY, as every gasgate client


# --- P1 throughput -----------------------------------------------------------------------------


async def warm_up(sut: Counted, url: str, sites: int) -> float:
    """Every background device reports once; the rate at which the SUT handled that. A
    device's first report after a start costs more (its per-device state is made and its
    first rows are due), which is not the steady state measured afterwards."""
    before = sut.reports()
    began = time.monotonic()
    summary = await loadgen(url, LOADED_PER_S, 2 * sites / LOADED_PER_S, sites)
    sent: int = summary["sent"]
    done = await sut.wait_reports(before + sent, within_s=120)
    return sent / ((done or time.monotonic()) - began)


async def _step(sut: Counted, url: str, rate: float, seconds: float, sites: int) -> dict[str, Any]:
    """One rate step: sent, handled, and how long after the last send the SUT caught up."""
    before = sut.reports()
    summary = await loadgen(url, rate, seconds, sites)
    ended = time.monotonic()
    caught_up = await sut.wait_reports(before + summary["sent"], within_s=5.0)
    lag = None if caught_up is None else max(0.0, caught_up - ended)
    return summary | {"handled": sut.reports() - before, "lag_s": lag}


async def _max_rate(sut: Counted, url: str, quick: bool, sites: int) -> tuple[float, list[Any]]:
    """Raise the rate by half each step until the SUT falls behind (its reports not all
    handled within ``MAX_LAG_S`` of the generator's end) or the generator cannot reach the
    rate, then (full run) halve the gap twice; the highest rate handled in full is the answer."""
    seconds = 1.0 if quick else 8.0
    rate, best, failed, steps = 2_000.0, 0.0, 0.0, []
    for _ in range(1 if quick else 10):
        step = await _step(sut, url, rate, seconds, sites)
        steps.append(step)
        if step["lag_s"] is None or step["lag_s"] > MAX_LAG_S:
            failed = rate
            break
        best = max(best, step["rate"])
        if step["rate"] < 0.9 * rate:
            return best, steps  # the generator's own limit
        rate *= 1.5
    for _ in range(0 if quick or not failed else 2):
        rate = (best + failed) / 2
        step = await _step(sut, url, rate, seconds, sites)
        steps.append(step)
        if step["lag_s"] is not None and step["lag_s"] <= MAX_LAG_S:
            best = max(best, step["rate"])
        else:
            failed = rate
    return best, steps


def _step_note(step: dict[str, Any]) -> str:
    lag = "not caught up" if step["lag_s"] is None else f"lag {step['lag_s']:.2f} s"
    return f"{step['rate']:.0f}/s {lag}"


async def p1_throughput(broker: Mosquitto, work: Path, quick: bool) -> list[dict[str, object]]:
    sites = 200 if quick else 5_000
    registry = write_registry(work / "p1-registry", {"b": sites})
    async with running_sut("bare", broker.url, work) as bare:
        bare_rate, bare_steps = await _max_rate(bare, broker.url, quick, sites)
    flags = gateway_flags(broker.url, work / "p1-data", registry)
    async with running_sut("gateway", flags, work) as gw:
        first_pass = await warm_up(gw, broker.url, sites)
        gw_rate, gw_steps = await _max_rate(gw, broker.url, quick, sites)
        telemetry = dict(gw.status)
    ratio = gw_rate / bare_rate if bare_rate else 0.0
    note = "bare: " + ", ".join(map(_step_note, bare_steps))
    gw_note = "gateway: " + ", ".join(map(_step_note, gw_steps))
    gw_note += (
        f"; telemetry points written {telemetry['points_written']:,}, lost "
        f"{telemetry['points_dropped']}, spooled {telemetry['points_spooled']}"
    )
    log.info("%s; %s", note, gw_note)
    SIDE_RATE["gasgate"] = gw_rate
    return [
        _row("P1 throughput", "bare aiomqtt", value=round(bare_rate), unit="reports/s", note=note),
        _row("P1 throughput", "gateway", value=round(gw_rate), unit="reports/s", note=gw_note),
        _row(
            "P1 throughput",
            "gateway, first report of each device",
            value=round(first_pass),
            unit="reports/s",
            note=f"{2 * sites:,} devices each reporting once after the start, offered at "
            f"{LOADED_PER_S:,}/s",
        ),
        *(
            _row("P1 throughput", case, value=round(ratio, 3), unit="ratio", **judged)
            for case, judged in (
                ("gateway / bare", {"goal": f">= {GOAL_RATIO}", "ok": ratio >= GOAL_RATIO}),
                (
                    "gateway / bare, not lower",
                    {
                        "goal": f">= {GOAL_RATIO_BEFORE_16}",
                        "ok": ratio >= GOAL_RATIO_BEFORE_16,
                        "note": "the last full run's ratio before issue 16 (docs/performance.md)",
                    },
                ),
            )
        ),
    ]


# --- P2 alarm latency, P3 notification latency -------------------------------------------------


def _is_close(payload: object) -> bool:
    """A ``kit/v1`` command body asking to close a valve (anything else, even junk: no)."""
    if not isinstance(payload, bytes | str):
        return False
    with contextlib.suppress(ValueError):
        body = json.loads(payload)
        return isinstance(body, dict) and body.get("cmd") == ksp.CommandCode.CLOSE_VALVE.value
    return False


@dataclass
class Watch:
    """Arrival times (monotonic) of commands on the site broker and events at the gas company."""

    commands: dict[str, float] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def commands_from(self, client: aiomqtt.Client) -> None:
        """The first ``close_valve`` for each valve, whoever sent it: the gateway's linkage,
        its interlock (ids ``ilk-...``) or a peer; the id's format is nobody's business here."""
        async for message in client.messages:
            at = time.monotonic()
            if _is_close(message.payload):
                self.commands.setdefault(message.topic.value.split("/")[2], at)
                self.changed.set()

    async def events_from(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            event = json.loads(message.payload)
            if event.get("transition") == "raised":
                self.events.setdefault(event["source"], time.monotonic())
                self.changed.set()

    async def until(self, table: dict[str, float], key: str, started: float) -> float | None:
        """Milliseconds from ``started`` until ``key`` arrived; None: not within the timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                while key not in table:
                    self.changed.clear()
                    await self.changed.wait()
        return (table[key] - started) * 1000 if key in table else None


def _closes(message: ksp.Message, valve: int) -> bool:
    return (
        isinstance(message, ksp.Command)
        and message.device_id == valve
        and message.command is ksp.CommandCode.CLOSE_VALVE
    )


@dataclass
class RadioReceiver:
    """This process playing the KSP/1 receiver on the pty: one SEQ counter for all its frames."""

    peer: RawPeer
    seq: int = 0

    def send(self, message: ksp.Message) -> None:
        self.seq = (self.seq + 1) & 0xFF
        self.peer.send(self.seq, message)

    async def leak(self, n: int) -> float | None:
        """Leak REPORT written on the line → close_valve COMMAND for its valve read back, in ms
        (None: not within ``PROBE_TIMEOUT_S``)."""
        valve = RADIO_BASE + 2 * n + 1
        body = ksp.DetectorBody(600, frozenset({ksp.DetectorFlag.ALARM_HIGH}), 25)
        started = time.monotonic()
        self.send(ksp.Report(RADIO_BASE + 2 * n, ksp.Event.ALARM, 0, -60, body))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                while True:
                    frame = await self.peer.next_frame(PROBE_TIMEOUT_S)
                    message = ksp.parse(frame)
                    latency = (time.monotonic() - started) * 1000
                    if isinstance(message, ksp.Command):  # every command is answered
                        self.send(ksp.CmdAck(frame.seq, message.device_id, ksp.CmdResult.OK))
                    if _closes(message, valve):
                        return latency
        return None

    def answer_late(self) -> None:
        """Answer any late command (a retry) and forget acks, so the next probe starts clean."""
        while not self.peer.frames.empty():
            frame = self.peer.frames.get_nowait()
            message = ksp.parse(frame)
            if isinstance(message, ksp.Command):
                self.send(ksp.CmdAck(frame.seq, message.device_id, ksp.CmdResult.OK))


def _gave_up(probes: list[float | None]) -> bool:
    """Missed ``GIVE_UP_AFTER`` in a row: overloaded, the rest is counted missed at once."""
    return probes[-GIVE_UP_AFTER:] == [None] * GIVE_UP_AFTER


async def _series(
    count: int,
    probe: Callable[[], Awaitable[float | None]],
    pause_s: float,
    after: Callable[[], None] = lambda: None,
) -> list[float | None]:
    """``count`` probes one after the other, ``pause_s`` apart, then ``after`` each."""
    out: list[float | None] = []
    for _ in range(count):
        if _gave_up(out):
            out.append(None)
            continue
        out.append(await probe())
        await asyncio.sleep(pause_s)
        after()
    return out


async def leak_to_close(site: aiomqtt.Client, watch: Watch, n: int) -> tuple[float, float | None]:
    """Site ``m{n}``'s detector reports a leak; (when it was published, ms until the first
    ``close_valve`` for its valve: None if not within ``PROBE_TIMEOUT_S``)."""
    started = time.monotonic()
    await site.publish(report_topic(f"md{n}"), LEAK_JSON, qos=1)
    return started, await watch.until(watch.commands, f"mv{n}", started)


@dataclass
class LatencyWorld:
    url: str
    radio: RadioReceiver
    site: aiomqtt.Client
    watch: Watch
    http: HttpReceiver
    next_radio: int = 0
    next_mqtt: int = 0
    pause_s: float = 0.05

    async def serial(self, count: int) -> list[float | None]:
        async def probe() -> float | None:
            self.next_radio += 1
            return await self.radio.leak(self.next_radio - 1)

        return await _series(count, probe, self.pause_s, after=self.radio.answer_late)

    async def _sms(self, token: bytes, before: int, started: float) -> float | None:
        """Milliseconds until the first SMS naming the site arrived; None: not in time."""

        def arrived() -> list[float]:
            return [r.at for r in self.http.received("/sms")[before:] if token in r.body]

        # The receiver stamps each request as it arrives: polling adds nothing to the time.
        with contextlib.suppress(AssertionError):
            await eventually(lambda: bool(arrived()), within=PROBE_TIMEOUT_S)
        return (arrived()[0] - started) * 1000 if arrived() else None

    async def mqtt(
        self, count: int
    ) -> tuple[list[float | None], list[float | None], list[float | None]]:
        """(leak → cmd, leak → gas company event, leak → SMS webhook) in ms; None: timed out."""
        cmd: list[float | None] = []
        event: list[float | None] = []
        sms: list[float | None] = []
        for _ in range(count):
            if _gave_up(cmd):
                cmd.append(None)
                continue
            n = self.next_mqtt
            self.next_mqtt += 1
            before = len(self.http.received("/sms"))
            started, close = await leak_to_close(self.site, self.watch, n)
            cmd.append(close)
            event.append(await self.watch.until(self.watch.events, f"md{n}", started))
            sms.append(await self._sms(f"m{n}-site".encode(), before, started))
            await asyncio.sleep(self.pause_s)
        return cmd, event, sms


async def p2_p3_latency(
    broker: Mosquitto, gasco: Mosquitto, work: Path, quick: bool, serial: bool = True
) -> list[dict[str, object]]:
    """P2 (serial path if ``serial``, MQTT path) and P3 at every step of ``LATENCY_STEPS``; the
    bridge runs either way, so the MQTT path's figures come from the same system."""
    samples, sites = _latency_sizes(quick)
    probe_sites = len(LATENCY_STEPS) * samples + 10
    registry = write_registry(
        work / "p2-registry", {"b": sites, "m": probe_sites}, radio_sites=probe_sites
    )
    rows: list[dict[str, object]] = []
    with HttpReceiver().running() as http, SmtpReceiver().running() as smtp:
        escalation = settings_for(http.url, smtp.port, gasco.url)
        flags = gateway_flags(
            broker.url, work / "p2-data", registry, escalation=escalation, gasco_mqtt=gasco.url
        )
        peer = RawPeer(work / "ttyKIT")
        peer.plug()
        watch = Watch()
        async with (
            running_sut("gateway", flags, work) as sut,
            bridge_process(peer.path, broker.url),
            _client(broker.url, "bench-site") as site,
            _client(gasco.url, "bench-gasco") as gasco_client,
        ):
            await site.subscribe("kit/v1/+/cmd", qos=1)
            await gasco_client.subscribe("gasco/v1/+/alarms/events", qos=1)
            tasks = [
                asyncio.create_task(watch.commands_from(site)),
                asyncio.create_task(watch.events_from(gasco_client)),
            ]
            world = LatencyWorld(broker.url, RadioReceiver(peer), site, watch, http)
            try:
                await asyncio.sleep(2.0)  # the bridge opened the pty and connected
                await warm_up(sut, broker.url, sites)
                if serial:
                    await world.serial(3)  # warm-up: first imports, first connections
                await world.mqtt(3)
                assert sut.proc is not None
                assert broker.proc is not None
                interlock = sut.ready.get("interlock", "absent")
                rows.append(_row("P2 MQTT", "interlock", note=f"gateway interlock: {interlock}"))
                # the interlock the gateway spawned (if it did) wrote its pid into the lock file
                lock = work / "p2-data" / LOCK_FILE
                pid = lock.read_text().split() if lock.exists() else []
                pids = {"interlock": int(pid[0])} if pid else {}
                pids |= {"gateway": sut.proc.pid, "broker": broker.proc.pid}
                for rate in LATENCY_STEPS:
                    rows += await _latency_step(world, pids, rate, (sites, samples), serial)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                peer.unplug()
    order = {"P2 serial": 0, "P2 MQTT": 1, "P3 gas company": 2, "P3 SMS webhook": 3}
    steps = {"interlock": -1} | {_step_label(rate): i for i, rate in enumerate(LATENCY_STEPS)}
    return sorted(rows, key=lambda r: (order[str(r["measure"])], steps[str(r["case"])]))


def _latency_sizes(quick: bool) -> tuple[int, int]:
    """(probes per path and step, background sites), the same for gasgate and the peer."""
    return (5, 200) if quick else (200, 5_000)


async def _latency_step(
    world: LatencyWorld, pids: dict[str, int], rate: int, sizes: tuple[int, int], serial: bool
) -> list[dict[str, object]]:
    """One step of background load (0: idle): the serial path (if ``serial``), then the MQTT
    path, its CPU and its processes' run-queue waits. ``pids``: the interlock's, the gateway's,
    the broker's."""
    sites, samples = sizes
    rows = []
    label = _step_label(rate)
    async with background(world.url, rate, sites, limit_s=60 + samples * 0.5):
        if serial:
            probes = await world.serial(samples)
            rows.append(_latency_row("P2 serial", label, probes, GOALS_SERIAL.get(rate)))
        cpu = CpuMeter(pids["gateway"])
        waits = WaitMeter(pids)
        cmd, event, sms = await world.mqtt(samples)
        SIDE.setdefault("gasgate", {})[rate] = (cmd, cpu.pct())
        WAITS.setdefault("gasgate", {})[rate] = waits.per_run_ms()
    return [
        *rows,
        _latency_row("P2 MQTT", label, cmd, GOALS_MQTT.get(rate)),
        _latency_row("P3 gas company", label, event, GOAL_NOTIFY),
        _latency_row("P3 SMS webhook", label, sms, GOAL_NOTIFY),
    ]


# --- issue 16: the Node-RED peer, side by side ------------------------------------------------


async def interlock_alone(work: Path, quick: bool) -> list[dict[str, object]]:
    """The interlock process (``gasgate interlock``) with no gateway beside it, at every latency
    step: its own leak -> close_valve path, with the same background load and probes as the
    gateway's and the peer's, and none of the gateway's work on the same cores. The background
    sites' detectors are linked too, as a restaurant's are: it reads all of their reports."""
    samples, sites = _latency_sizes(quick)
    probe_sites = len(LATENCY_STEPS) * samples + 10  # a fresh site for every probe
    pairs = [(d, v) for _, d, v in site_devices({"m": probe_sites, "b": sites})]
    data = work / "interlock-alone"
    data.mkdir(parents=True, exist_ok=True)
    table = {detector: Entry((valve,), 20.0) for detector, valve in pairs}
    (data / TABLE_FILE).write_bytes(dumps(table))  # as the gateway writes it
    watch = Watch()
    rows = []
    with Mosquitto(work, extra_config=BROKER_CONFIG).running() as broker:
        flags = (f"--mqtt={broker.url}", f"--data-dir={data}", "--gateway-id=bench")
        async with (
            gasgate_process("interlock", *flags, GASGATE_VALVE_RETRY_S="60") as interlock,
            _client(broker.url, "bench-site") as site,
        ):
            await site.subscribe("kit/v1/+/cmd", qos=1)
            commands = asyncio.create_task(watch.commands_from(site))
            try:
                await asyncio.sleep(2.0)  # connected and subscribed
                assert broker.proc is not None
                probes = _PeerProbes(site, watch, broker.url, interlock.pid, sites, samples)
                probes.system, probes.broker_pid = INTERLOCK_ALONE, broker.proc.pid
                await probes.run(3)
                for rate in LATENCY_STEPS:
                    rows.append(await probes.step(rate, GOALS_MQTT.get(rate)))
            finally:
                commands.cancel()
                await asyncio.gather(commands, return_exceptions=True)
    return rows


async def node_red_peer(
    victoria: VictoriaMetrics, work: Path, quick: bool, throughput: bool = True
) -> list[dict[str, object]]:
    """The peer flow (:mod:`bench.peer.node_red`) through its own Mosquitto, configured as the
    gateway's: the same warm-up, latency steps and probes as gasgate's MQTT path, then P1 (if
    ``throughput``)."""
    why = node_red.missing()
    if why:
        SIDE_RATE["node-red"] = why
        return [_row("node-red", "peer skipped", note=why)]
    samples, sites = _latency_sizes(quick)
    groups = {"b": sites, "m": len(LATENCY_STEPS) * samples + 10}
    pairs = ((detector, valve) for _, detector, valve in site_devices(groups))
    links = node_red.write_links(work / "node-red-links.json", pairs)
    try:
        return await _node_red_run(victoria, work, (quick, throughput), links)
    except (RuntimeError, OSError) as exc:  # the peer's failure is reported, gasgate's rows kept
        SIDE_RATE["node-red"] = f"node-red failed: {exc}"[:300]
        return [_row("node-red", "peer failed", note=SIDE_RATE["node-red"])]


async def _node_red_run(
    victoria: VictoriaMetrics, work: Path, sizes: tuple[bool, bool], links: Path
) -> list[dict[str, object]]:
    quick, throughput = sizes
    samples, sites = _latency_sizes(quick)
    rows: list[dict[str, object]] = []
    watch = Watch()
    with Mosquitto(work, extra_config=BROKER_CONFIG).running() as broker:
        async with (
            node_red.running(work / "node-red", broker.url, victoria.url, links, free_port()) as nr,
            _client(broker.url, "bench-site") as site,
        ):
            await site.subscribe("kit/v1/+/cmd", qos=1)
            commands = asyncio.create_task(watch.commands_from(site))
            try:
                await warm_up(nr, broker.url, sites)
                assert broker.proc is not None
                probes = _PeerProbes(site, watch, broker.url, nr.pid, sites, samples)
                probes.broker_pid = broker.proc.pid
                await probes.run(3)  # warm-up: first connections, as for gasgate
                for rate in LATENCY_STEPS:
                    rows.append(await probes.step(rate))
                if not throughput:
                    return rows
                best, steps = await _max_rate(nr, broker.url, quick, sites)
            finally:
                commands.cancel()
                await asyncio.gather(commands, return_exceptions=True)
    SIDE_RATE["node-red"] = best
    note = "node-red: " + ", ".join(map(_step_note, steps))
    note += f"; writes failed {nr.status.get('failed', 0)}"
    throughput = _row("P1 throughput", "node-red", value=round(best), unit="reports/s", note=note)
    return [throughput, *rows]


@dataclass
class _PeerProbes:
    """The peer's leak → close_valve probes: sites ``m{n}`` in turn, as :class:`LatencyWorld`."""

    site: aiomqtt.Client
    watch: Watch
    url: str
    pid: int
    sites: int
    samples: int
    next_mqtt: int = 0
    pause_s: float = 0.05
    broker_pid: int = 0  # its run-queue wait is measured beside the peer's
    system: str = "node-red"  # or the interlock alone, probed the same way

    async def run(self, count: int) -> list[float | None]:
        async def probe() -> float | None:
            self.next_mqtt += 1
            return (await leak_to_close(self.site, self.watch, self.next_mqtt - 1))[1]

        return await _series(count, probe, self.pause_s)

    async def step(self, rate: int, goal: Goal | None = None) -> dict[str, object]:
        async with background(self.url, rate, self.sites, limit_s=60 + self.samples * 0.5):
            cpu = CpuMeter(self.pid)
            waits = WaitMeter({self.system: self.pid, "broker": self.broker_pid})
            cmd = await self.run(self.samples)
            SIDE.setdefault(self.system, {})[rate] = (cmd, cpu.pct())
            WAITS.setdefault(self.system, {})[rate] = waits.per_run_ms()
        return _latency_row(f"P2 MQTT {self.system}", _step_label(rate), cmd, goal)


def _p50_p99(probes: list[float | None]) -> tuple[float, float] | None:
    """(p50, p99) in ms when every probe answered, else None (a miss is worse than any time)."""
    samples = [x for x in probes if x is not None]
    if not samples or len(samples) < len(probes):
        return None
    return round(statistics.median(samples), 2), _pct(samples, 0.99)


def versus_rows() -> list[dict[str, object]]:
    """Issue 16's comparison: gasgate's MQTT path below the peer's p50 and p99 at every step."""
    rows = []
    for rate in LATENCY_STEPS:
        ours, (ours_cpu, interlock_cpu) = SIDE.get("gasgate", {}).get(rate, NO_FIGURES)
        theirs, (theirs_cpu, _) = SIDE.get("node-red", {}).get(rate, NO_FIGURES)
        mine, peer = _p50_p99(ours), _p50_p99(theirs)
        cells: dict[str, Any] = {"goal": "below node-red p50 and p99", "ok": False}
        if mine:
            cells |= {"p50_ms": mine[0], "p99_ms": mine[1]}
        if peer is None:
            why = SIDE_RATE.get("node-red")
            note = why if isinstance(why, str) else "node-red: a probe missed"
            cells |= {"ok": "-", "note": note}
        else:
            cells["ok"] = bool(mine) and mine[0] < peer[0] and mine[1] < peer[1]
            cells["note"] = (
                f"node-red p50 {peer[0]:g} / p99 {peer[1]:g} ms; CPU gasgate {ours_cpu:.0f} % "
                f"(interlock {interlock_cpu:.0f} %), node-red {theirs_cpu:.0f} % of a core; "
                f"run-queue wait per run, ms: {_waits('gasgate', rate)}; {_waits('node-red', rate)}"
            )
        rows.append(_row("P2 MQTT vs node-red", _step_label(rate), **cells))
    return rows


def _waits(system: str, rate: int) -> str:
    waits = WAITS.get(system, {}).get(rate, {})
    return f"{system} " + ", ".join(f"{name} {ms:.3f}" for name, ms in waits.items())


def side_by_side() -> list[str]:
    """The comparison as a Markdown table: gasgate and node-red in adjacent columns."""
    lines = [
        "| leak -> close_valve, MQTT path | gasgate p50 / p99 ms | node-red p50 / p99 ms "
        "| gasgate CPU | node-red CPU | goal | ok | the interlock alone p50 / p99 ms, CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rate, versus in zip(LATENCY_STEPS, versus_rows(), strict=True):
        cells = []
        for system in ("gasgate", "node-red"):
            probes, (cpu, children) = SIDE.get(system, {}).get(rate, NO_FIGURES)
            figures = _p50_p99(probes)
            cells.append(f"{figures[0]:g} / {figures[1]:g}" if figures else "-")
            interlock = f" (interlock {children:.0f} %)" if system == "gasgate" else ""
            cells.append(f"{cpu:.0f} %{interlock}" if probes else "-")
        goal = GOALS_MQTT.get(rate)
        ours = _p50_p99(SIDE.get("gasgate", {}).get(rate, NO_FIGURES)[0])
        met = ours is not None and (goal is None or goal.met(*ours))
        ok = "NO" if not met else versus["ok"]  # "-" when the peer was not measured
        goal_text = f"{goal.text()}; " if goal else ""
        lines.append(
            f"| {_step_label(rate)} | {cells[0]} | {cells[2]} | {cells[1]} | {cells[3]} "
            f"| {goal_text}below node-red | {ok} | {_alone(rate)} |"
        )
    rates = [
        f"{v:,.0f} reports/s" if isinstance(v, float | int) else str(v)
        for v in (SIDE_RATE.get("gasgate", "-"), SIDE_RATE.get("node-red", "-"))
    ]
    lines.append(f"| P1 throughput | {rates[0]} | {rates[1]} | | | - | - | |")
    return lines


def _alone(rate: int) -> str:
    probes, (cpu, _) = SIDE.get(INTERLOCK_ALONE, {}).get(rate, NO_FIGURES)
    figures = _p50_p99(probes)
    return f"{figures[0]:g} / {figures[1]:g}, {cpu:.0f} %" if figures else "-"


# --- P4 telemetry outage ----------------------------------------------------------------------


async def p4_outage(
    broker: Mosquitto, victoria: VictoriaMetrics, work: Path, quick: bool
) -> list[dict[str, object]]:
    """VictoriaMetrics (standing in for InfluxDB) stopped for ``down_s`` while 1,000 reports/s
    flow: points lost, and how fast the spool drains once it is back."""
    rate, sites = 1_000, (200 if quick else 1_000)
    flowing_s, down_s, seconds = (1.0, 1.0, 3.0) if quick else (2.0, 20.0, 40.0)
    registry = write_registry(work / "p4-registry", {"b": sites})
    flags = gateway_flags(broker.url, work / "p4-data", registry)
    async with running_sut("gateway", flags, work) as gw:
        await warm_up(gw, broker.url, sites)
        lost_before = int(gw.status["points_dropped"])
        load = asyncio.create_task(loadgen(broker.url, rate, seconds, sites))
        await asyncio.sleep(flowing_s)
        victoria.stop()
        await asyncio.sleep(down_s)
        spooled = int(gw.status["points_spooled"])
        victoria.start()
        back = time.monotonic()
        # Drain time runs from the last status line that still showed the full spool: the
        # status ticks every 0.1 s, so a fast drain is understated, never overstated.
        first_drop, peak, at_peak = None, spooled, back
        async with asyncio.timeout(120):
            while True:
                now = int(gw.status["points_spooled"])
                if now >= peak:
                    peak, at_peak = now, float(gw.status["t"])
                if first_drop is None and now < peak:
                    first_drop = (at_peak, peak)
                if now == 0 and (first_drop is not None or peak == 0):
                    break
                await asyncio.sleep(0.05)
        emptied = time.monotonic()
        await load
        lost = int(gw.status["points_dropped"]) - lost_before
    if first_drop is None:  # nothing reached the spool: the outage fit in the memory queue
        first_drop = (back, 0)
    resumed_s = first_drop[0] - back
    drain = first_drop[1] / max(emptied - first_drop[0], 1e-3)
    return [
        _row(
            "P4 outage",
            f"{down_s:g} s down at {rate:,} reports/s",
            value=lost,
            unit="points lost",
            goal="0",
            ok=lost == 0,
            note=f"{spooled:,} points spooled",
        ),
        _row(
            "P4 outage",
            "drain after",
            value=round(drain),
            unit="points/s",
            goal=f">= {10 * rate:,}/s",
            ok=drain >= 10 * rate,
            note=f"writes resumed {resumed_s:.1f} s after it came back; {first_drop[1]:,} "
            f"spooled points gone in {emptied - first_drop[0]:.2f} s while ingest went on",
        ),
    ]


# --- P5 scale, P6 restart ----------------------------------------------------------------------


async def p5_scale(broker: Mosquitto, work: Path, quick: bool) -> list[dict[str, object]]:
    """The same traffic (``ACTIVE_SITES`` sites reporting, 100 in a quick run) with more and more
    devices registered: what the registry's size costs per report and in memory."""
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    rate, seconds = LOADED_PER_S, (0.5 if quick else 10.0)
    active = 100 if quick else ACTIVE_SITES
    measured = []
    for devices in sizes:
        registry = write_registry(work / f"p5-registry-{devices}", {"b": devices // 2})
        flags = gateway_flags(broker.url, work / f"p5-data-{devices}", registry)
        async with running_sut("gateway", flags, work) as gw:
            await warm_up(gw, broker.url, active)
            before = dict(gw.status)
            summary = await loadgen(broker.url, rate, seconds, active)
            await gw.wait_reports(gw.reports() + 1, 0)  # one fresh status
            await gw.wait_reports(int(before["reports"]) + summary["sent"], 10)
            after = dict(gw.status)
        handled = int(after["reports"]) - int(before["reports"])
        cpu_us = (after["cpu"] - before["cpu"]) / max(handled, 1) * 1e6
        measured.append((devices, cpu_us, after["rss_mb"], gw.ready_s, handled))
    base = measured[0][1]
    rows = []
    for devices, cpu_us, rss, ready_s, handled in measured:
        spread = cpu_us / base - 1
        rows.append(
            _row(
                "P5 scale",
                f"{devices:,} devices",
                value=round(cpu_us, 1),
                unit="CPU us/report",
                goal=f"within {GOAL_SCALE_SPREAD:.0%} of 1k",
                ok=abs(spread) <= GOAL_SCALE_SPREAD,
                note=f"{spread:+.1%} vs 1k; {handled:,} reports; ready in {ready_s:.2f} s",
            )
        )
        rows.append(
            _row(
                "P5 scale",
                f"{devices:,} devices",
                value=round(rss, 1),
                unit="RSS MB",
                goal=f"<= {GOAL_RSS_100K_MB:g} MB at 100k" if devices == 100_000 else "-",
                ok=rss <= GOAL_RSS_100K_MB if devices == 100_000 else "-",
            )
        )
    return rows


async def p6_restart(broker: Mosquitto, work: Path, quick: bool) -> list[dict[str, object]]:
    devices, alarms = (1_000, 10) if quick else (10_000, 100)
    registry = write_registry(work / "p6-registry", {"b": devices // 2})
    data = work / "p6-data"
    async with (
        running_sut("gateway", gateway_flags(broker.url, data, registry), work) as gw,
        _client(broker.url, "bench-p6") as client,
    ):
        for n in range(alarms):
            await client.publish(report_topic(f"bd{n}"), LEAK_JSON, qos=1)
        await gw.wait_reports(alarms, 30)
        await asyncio.sleep(1.0)  # the alarm commits
    before = gw.final.get("open_alarms")
    # Restart from the store alone (no registry import): what a crash or reboot sees.
    async with running_sut("gateway", gateway_flags(broker.url, data, None), work) as again:
        ready_s, start_s = again.ready_s, float(again.ready["start_s"])
        after = again.ready["open_alarms"]
        intact = after == before and before >= alarms and again.ready["devices"] == devices
    return [
        _row(
            "P6 restart",
            f"{devices:,} devices, {alarms} open alarms",
            value=round(ready_s, 2),
            unit="s spawn -> ready",
            goal=f"<= {GOAL_RESTART_S:g} s",
            ok=ready_s <= GOAL_RESTART_S,
            note=f"Gateway.start {start_s:.2f} s; open alarms {before} -> {after}; "
            f"devices {again.ready['devices']:,}; state intact: {intact}",
        )
    ]


# --- the suite ---------------------------------------------------------------------------------


def _load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cpu(s)"


async def _all(work: Path, quick: bool, mode: str) -> list[dict[str, object]]:
    rows = [_row("machine", "at start", note=_load_note())]
    with (
        Mosquitto(work, extra_config=BROKER_CONFIG).running() as broker,
        Mosquitto(work, extra_config="set_tcp_nodelay true\n").running() as gasco,
        VictoriaMetrics(work).running() as victoria,
    ):
        TELEMETRY_URL[:] = [victoria.url]
        if mode == "p1":
            rows += await p1_throughput(broker, work, quick)
            return [*rows, _row("machine", "at end", note=_load_note())]
        if mode == "versus":
            rows += await p2_p3_latency(broker, gasco, work, quick, serial=False)
            rows += await interlock_alone(work, quick)
            rows += await node_red_peer(victoria, work, quick, throughput=False)
            return [*rows, *versus_rows(), _row("machine", "at end", note=_load_note())]
        rows += await p1_throughput(broker, work, quick)
        rows += await p2_p3_latency(broker, gasco, work, quick)
        rows += await interlock_alone(work, quick)
        rows += await node_red_peer(victoria, work, quick)
        rows += versus_rows()
        rows += await p4_outage(broker, victoria, work, quick)
        rows += await p5_scale(broker, work, quick)
        rows += await p6_restart(broker, work, quick)
    rows.append(_row("machine", "at end", note=_load_note()))
    return rows


def run(quick: bool) -> list[dict[str, object]]:
    mode = os.environ.get(MODE_ENV, "")
    if mode not in ("", "versus", "p1"):
        raise SystemExit(f"{MODE_ENV}={mode}: versus, p1 or unset (everything)")
    for figures in (SAMPLES, SIDE, SIDE_RATE, WAITS):
        figures.clear()
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_all(Path(tmp), quick, mode))


def write_artifacts(out_dir: Path) -> Iterator[Path]:
    """The raw samples as JSON and, when matplotlib is installed, their plot as PNG."""
    samples = out_dir / "system-samples.json"
    samples.write_text(json.dumps(SAMPLES) + "\n")
    yield samples
    table = side_by_side()
    print("\ngasgate and node-red side by side (issue 16: same run, load generator and probes)")
    print("\n".join(table))
    versus = out_dir / "system-vs-node-red.md"
    versus.write_text("\n".join(table) + "\n")
    yield versus
    try:
        from bench.plot import plot_latencies  # noqa: PLC0415  (matplotlib is optional)
    except ImportError:
        print("no PNG: matplotlib is not installed (pip install -e '.[bench]', or ./dev bench)")
        return
    yield plot_latencies(out_dir / "system.png", SAMPLES)
