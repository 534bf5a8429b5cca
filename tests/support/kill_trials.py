"""``kill -9`` timed against the leak path, many times: the harness behind
``tests/test_fault_kill_timed.py`` and ``./dev bench kill``.

One real ``gasgate run`` process on a private Mosquitto, a district of one-detector,
one-valve sites, and a trial after trial on the same data dir and broker session:

1. the gateway starts; ``ready`` is when its availability says ``online``;
2. a handful of fresh detectors report a leak, **once each** (QoS 1, never repeated: a
   detector that re-reports would hide a leak the gateway lost);
3. after a random delay of 0 to ``window_s`` (across ingest, the alarm's commit, the close
   command's store and send, the broker's answer, the retries and a jammed valve's failure) the
   process is killed with SIGKILL.

The valves answer a close command with a live ``closed`` report, except one jammed valve a
trial, which never closes. After the last trial the gateway runs once more and stops cleanly.
Then every leak must be an alarm in the store, every valve must have been commanded (and a
valve first commanded after a kill within ``1 s`` of the next ``ready``), every jammed valve
must have its ``valve_failed_to_close`` alarm, and no command may be anything but a close.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from gateway.mqtturl import parse_mqtt_url

__all__ = ["KillTrials", "Outcome"]

GASGATE = Path(sys.executable).parent / "gasgate"
LEAKS_PER_TRIAL = 5  # the last one's valve is jammed
RETRY_S = 0.3  # valve_retry_s: a jammed valve fails within a trial's window
COMMAND_AFTER_READY_S = 1.0  # the goal: an unanswered leak is commanded this soon after ready


def _site(n: int) -> str:
    return f"s{n:04d}"


def _write_registry(directory: Path, sites: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    head = "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang\n"
    rows = (
        f"{_site(n)},Shop {n},restaurant,four_piece,Futian,{n} Shennan Rd,Li,13800138000,zh"
        for n in range(sites)
    )
    (directory / "sites.csv").write_text(head + "\n".join(rows) + "\n", encoding="utf-8")
    components = ["site_id,component,device_id,model,installed_on,links,report_interval_s"]
    for n in range(sites):
        s = _site(n)
        components += [
            f"{s},leak_detector,det-{s},KD-210C,2025-03-01,,3600",
            f"{s},shutoff_valve,valve-{s},SV-25E,2025-03-01,det-{s},3600",
        ]
    (directory / "components.csv").write_text("\n".join(components) + "\n", encoding="utf-8")
    return directory


def _leak(seq: int) -> bytes:
    body = {"kind": "detector", "seq": seq, "event": "alarm", "detector": {"lel_pct": 55.0}}
    return json.dumps(body).encode()


def _closed(seq: int) -> bytes:
    body = {"kind": "valve", "seq": seq, "event": "state_change", "valve": {"state": "closed"}}
    return json.dumps(body).encode()


@dataclass
class Outcome:
    trials: int
    leaks: int
    lost: list[str]  # detectors whose leak never became an alarm
    uncommanded: list[str]  # valves never commanded
    late: dict[str, float]  # valve -> seconds from ready to its first command, over the goal
    failures_missing: list[str]  # jammed valves without valve_failed_to_close
    not_close: list[str]  # any command that is not close_valve
    after_ready_s: list[float] = field(default_factory=list)  # first commands after a restart

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.uncommanded or self.late or self.failures_missing or self.not_close
        )


@dataclass
class _Valves:
    """The valves' side on the broker: every command seen (when), and the answer."""

    jammed: set[str] = field(default_factory=set)
    first_command: dict[str, float] = field(default_factory=dict)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (valve, cmd)
    online: list[float] = field(default_factory=list)  # monotonic times of "online"

    async def run(self, url: str, ready: asyncio.Event) -> None:
        client_id = f"valves-{uuid.uuid4().hex[:8]}"
        async with parse_mqtt_url(url).client(identifier=client_id) as client:
            await client.subscribe("kit/v1/+/cmd", qos=1)
            await client.subscribe("gasgate/v1/+/availability", qos=1)
            ready.set()
            seq = 0
            async for message in client.messages:
                now = time.monotonic()
                topic = message.topic.value
                payload = message.payload
                assert isinstance(payload, bytes)
                if topic.startswith("gasgate/"):
                    if payload == b"online" and not message.retain:
                        self.online.append(now)
                    continue
                valve = topic.split("/")[2]
                self.commands.append((valve, json.loads(payload).get("cmd", "?")))
                self.first_command.setdefault(valve, now)
                if valve not in self.jammed:
                    seq += 1
                    await client.publish(f"kit/v1/{valve}/report", _closed(seq), qos=1)


class KillTrials:
    def __init__(self, workdir: Path, url: str, trials: int, *, window_s: float = 1.2) -> None:
        self.workdir = workdir
        self.url = url
        self.trials = trials
        self.window_s = window_s
        self.seed = int(os.environ.get("GASGATE_KILL_SEED", random.randrange(2**32)))
        self.rng = random.Random(self.seed)
        self.data_dir = workdir / "data"
        self.registry = _write_registry(workdir / "registry", trials * LEAKS_PER_TRIAL)
        self.log = workdir / "gateway.log"
        self.gateway_id = f"gw-{uuid.uuid4().hex[:10]}"
        self.valves = _Valves()
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self, first: bool) -> None:
        args = [
            str(GASGATE), "run", "--mqtt", self.url,
            "--data-dir", str(self.data_dir), "--gateway-id", self.gateway_id,
        ]  # fmt: skip
        if first or not (self.data_dir / "gasgate.db").exists():  # later: the stored one
            args += ["--registry", str(self.registry)]
        env = {
            **os.environ,
            "GASGATE_LOG_FORMAT": "text",
            "GASGATE_VALVE_RETRY_S": str(RETRY_S),
            "GASGATE_HTTP_PORT": "0",  # a free port: the console is not under test
            "GASGATE_INTERLOCK": "off",  # the gateway's own path is under test here
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)

    async def _started(self, lives: int, timeout_s: float = 60.0) -> float:
        """Start the gateway and wait until it says online: its ``ready`` time."""
        self._start(first=lives == 1)
        async with asyncio.timeout(timeout_s):
            while len(self.valves.online) < lives:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.01)
        return self.valves.online[lives - 1]

    def _kill(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.monotonic()

    async def run(self, progress: Callable[[int], None] | None = None) -> Outcome:
        ready_event = asyncio.Event()
        task = asyncio.create_task(self.valves.run(self.url, ready_event))
        await asyncio.wait_for(ready_event.wait(), 10)
        killed: dict[str, float] = {}  # valve -> when its trial's process was killed
        lives: list[tuple[float, float]] = []  # (ready, killed) of every process
        try:
            async with parse_mqtt_url(self.url).client(identifier="detectors") as detectors:
                for trial in range(self.trials):
                    ready = await self._started(trial + 1)
                    valves = await self._leak(detectors, trial)
                    await asyncio.sleep(self.rng.uniform(0.0, self.window_s))
                    at = self._kill()
                    lives.append((ready, at))
                    killed |= dict.fromkeys(valves, at)
                    if progress is not None:
                        progress(trial + 1)
            lives.append((await self._started(self.trials + 1), float("inf")))
            await asyncio.sleep(RETRY_S * 4 + 2.0)  # the jammed valves' last tries and failures
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self._kill()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self._outcome(killed, lives)

    async def _leak(self, detectors: aiomqtt.Client, trial: int) -> list[str]:
        first = trial * LEAKS_PER_TRIAL
        sites = [_site(n) for n in range(first, first + LEAKS_PER_TRIAL)]
        self.valves.jammed.add(f"valve-{sites[-1]}")
        for s in sites:
            await detectors.publish(f"kit/v1/det-{s}/report", _leak(trial + 1), qos=1)
        return [f"valve-{s}" for s in sites]

    def _outcome(self, killed: dict[str, float], lives: list[tuple[float, float]]) -> Outcome:
        sites = [_site(n) for n in range(self.trials * LEAKS_PER_TRIAL)]
        alarms = self._query("SELECT DISTINCT source, alarm_type FROM alarms")
        leaks = {str(s) for s, t in alarms if t == "leak_high"}
        failed = {str(s) for s, t in alarms if t == "valve_failed_to_close"}
        first = self.valves.first_command
        late: dict[str, float] = {}
        after_ready: list[float] = []
        for valve, at in killed.items():
            commanded = first.get(valve, float("inf"))
            if commanded < at:
                continue  # commanded before the kill
            # The first later process that lived the goal's time after its ready must have
            # commanded the valve within it (one killed sooner may not have had the chance).
            judge = next(
                (r for r, end in lives if r > at and end - r >= COMMAND_AFTER_READY_S), None
            )
            if judge is not None and commanded - judge > COMMAND_AFTER_READY_S:
                late[valve] = round(commanded - judge, 3)
            elif commanded != float("inf"):
                after_ready.append(commanded - max(r for r, _ in lives if r <= commanded))
        return Outcome(
            trials=self.trials,
            leaks=len(sites),
            lost=[f"det-{s}" for s in sites if f"det-{s}" not in leaks],
            uncommanded=[f"valve-{s}" for s in sites if f"valve-{s}" not in first],
            late=late,
            failures_missing=sorted(self.valves.jammed - failed),
            not_close=[f"{v}: {c}" for v, c in self.valves.commands if c != "close_valve"],
            after_ready_s=after_ready,
        )

    def _query(self, sql: str) -> list[tuple[object, ...]]:
        db = sqlite3.connect(f"file:{self.data_dir / 'gasgate.db'}?mode=ro", uri=True)
        try:
            return [tuple(row) for row in db.execute(sql)]
        finally:
            db.close()
