"""The interlock process (``gasgate interlock``): a leak closes its linked valves, first.

Its only job: a linked detector's report that says gas (:func:`gateway.interlock.table.is_leak`)
→ ``close_valve`` to every linked valve at once, then verify (a live ``closed`` report), retry
(``TRIES`` commands, ``retry_s`` apart), and report (a journal line per action, and an event on
``gasgate/v1/{gateway_id}/interlock/events``). It writes nothing before it acts, waits on no disk
and no other room: the alarm, its durable record, the escalation and the telemetry follow in the
gateway process, on their own path, from the same report.

It is a process of its own so that a stall or crash of the gateway (a long collection, a slow
sink, a bug in a room, SIGKILL or SIGSTOP) does not stop valves from closing. It holds only the
link table (a file the gateway writes; re-read when it changes), one MQTT connection with its own
persistent session subscribed only to the linked detectors (and to a valve once it has
commanded it: its periodic reports would double what it reads), and a lock file in the data
dir so that one runs per gateway. It never sends anything but ``close_valve``: its
commands are built by :func:`gateway.linkage.command_message`, the one command builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import gmqtt  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTv311  # type: ignore[import-untyped]

from firmware_bridge.ksp import CommandCode
from gateway.alarms import new_id
from gateway.interlock.table import Entry, is_leak, loads
from gateway.linkage import TRIES, command_message
from gateway.mqtturl import MqttUrl, no_delay, parse_mqtt_url
from gateway.stream_client import StreamClient

__all__ = ["JOURNAL_FILE", "LOCK_FILE", "TABLE_FILE", "Interlock", "events_topic", "held_lock"]

log = logging.getLogger(__name__)

TABLE_FILE: Final = "interlock-table.json"
JOURNAL_FILE: Final = "interlock.jsonl"
LOCK_FILE: Final = "interlock.lock"
RELOAD_S: Final = 1.0  # the table file is checked this often
JOURNAL_MAX_BYTES: Final = 8 * 1024 * 1024  # then it is rotated to .1 (one generation kept)
_SUBSCRIBE_CHUNK: Final = 500  # topics per SUBSCRIBE packet
_BACKOFF_MAX_S: Final = 2.0
PRIORITY: Final = -10  # nice value: ahead of the gateway and everything else on the box
_LEVELS: Final = {"confirmed": logging.INFO, "failed": logging.ERROR}


def events_topic(gateway_id: str) -> str:
    return f"gasgate/v1/{gateway_id}/interlock/events"


@contextlib.contextmanager
def held_lock(data_dir: Path) -> Iterator[bool]:
    """Hold the data dir's interlock lock while inside; yields False if another process has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Closing:
    """One valve being closed for one detector's leak: the latest command and its try."""

    detector: str
    cmd_id: str
    tries: int
    timer: asyncio.TimerHandle | None = None


class Interlock:
    """Constructing it does nothing; :meth:`run` works until :meth:`stop`."""

    def __init__(self, url: str, data_dir: Path, gateway_id: str, *, retry_s: float = 10.0) -> None:
        self._url: MqttUrl = parse_mqtt_url(url)
        self._data_dir = data_dir
        self._gateway_id = gateway_id
        self._retry_s = retry_s
        self._table: dict[str, Entry] = {}
        # Valves whose reports it reads: those it has commanded (a valve's periodic reports
        # would double what it reads, for nothing until the valve is closed for a leak).
        self._watched: set[str] = set()
        self._table_mtime: float | None = None
        self._closing: dict[str, _Closing] = {}
        self._closed: dict[str, float] = {}  # valve -> when it last said closed, live
        self._client: Any = None
        self._stopped = asyncio.Event()
        self.counts: dict[str, int] = {}

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._reload()
        reload_task = asyncio.create_task(self._watch_table(), name="interlock-table")
        delay = 0.2
        try:
            while not self._stopped.is_set():
                try:
                    await self._session()
                    delay = 0.2
                except Exception as exc:  # noqa: BLE001 - any failure: reconnect, bounded
                    log.warning("interlock: broker %s: %r; again in %.1f s", self._url, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
        finally:
            reload_task.cancel()
            await asyncio.gather(reload_task, return_exceptions=True)
            for closing in self._closing.values():
                if closing.timer is not None:
                    closing.timer.cancel()

    def stop(self) -> None:
        self._stopped.set()

    async def _session(self) -> None:
        lost = asyncio.Event()
        # No reconnects of gmqtt's own (this loop makes a fresh client); each ack leaves before
        # its message is handled, so a leak's ack wakes the broker before the close reaches it.
        client = StreamClient(f"gasgate-{self._gateway_id}-interlock", None, clean_session=False)
        client.on_message = self._message
        client.on_subscribe = lambda *_: self._count("subscribed")
        client.on_disconnect = lambda *_: lost.set()
        if self._url.username is not None:
            client.set_auth_credentials(self._url.username, self._url.password)
        async with asyncio.timeout(10.0):
            await client.connect(
                self._url.host,
                self._url.port,
                ssl=self._url.tls_context() or False,
                keepalive=30,
                version=MQTTv311,
            )
        no_delay(client)
        self._client = client
        self._subscribe(sorted([*self._table, *self._watched]))
        log.info("interlock: watching %d linked detector(s) on %s", len(self._table), self._url)
        try:
            stop = asyncio.create_task(self._stopped.wait())
            gone = asyncio.create_task(lost.wait())
            await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stop, gone):
                task.cancel()
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.disconnect()
        if not self._stopped.is_set():
            raise ConnectionError("connection lost")

    def _subscribe(self, devices: list[str]) -> None:
        client = self._client
        for start in range(0, len(devices), _SUBSCRIBE_CHUNK):
            chunk = devices[start : start + _SUBSCRIBE_CHUNK]
            client.subscribe([gmqtt.Subscription(f"kit/v1/{d}/report", qos=1) for d in chunk])

    # --- the table ----------------------------------------------------------------------------

    async def _watch_table(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_S)
            self._reload()

    def _reload(self) -> None:
        """Take the table file if it changed; subscribe to what is new (nothing is dropped:
        an unlinked detector's reports are ignored by the lookup)."""
        path = self._data_dir / TABLE_FILE
        try:
            mtime = path.stat().st_mtime
            if mtime == self._table_mtime:
                return
            table = loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            if self._table_mtime is None:  # said once, not every second
                log.error("interlock: no usable link table at %s: %s", path, exc)
                self._table_mtime = -1.0
            return
        self._table_mtime = mtime
        new = sorted({*table} - {*self._table})
        self._table = table
        log.info("interlock: link table with %d detector(s)", len(table))
        if self._client is not None and new:
            self._subscribe(new)

    # --- reports ------------------------------------------------------------------------------

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        try:
            device = topic.split("/")[2]
            entry = self._table.get(device)
            if entry is not None:
                if is_leak(payload, entry):
                    self._leak(device, entry)
            elif device in self._watched and not props.get("retain"):
                self._valve_report(device, payload)  # a retained report is old news
        except Exception:  # a bug must not take the interlock down with it
            self._count("errors")
            log.exception("interlock: handling %s failed", topic)
        return 0

    def _leak(self, detector: str, entry: Entry) -> None:
        # A valve already being closed keeps its schedule (a detector reporting its leak every
        # second must not reset the tries), and one that said closed within the retry time is
        # left alone; an older "closed" is no proof (it may have been opened by hand since).
        now = time.monotonic()
        valves = [
            v
            for v in entry.valves
            if v not in self._closing and now - self._closed.get(v, -1e9) > self._retry_s
        ]
        if not valves:
            return
        self._count("leaks")
        sent = [self._command(v, detector, tries=1) for v in valves]
        self._record("closed", detector, valves, sent)

    def _command(self, valve: str, detector: str, tries: int) -> str:
        cmd_id = new_id("ilk", datetime.now(UTC))
        topic, payload = command_message(valve, cmd_id, CommandCode.CLOSE_VALVE)
        client = self._client
        if client is not None:
            client.publish(topic, payload, qos=1)
        if valve not in self._watched:  # after the command: the close goes out first
            self._watched.add(valve)
            if client is not None:
                self._subscribe([valve])
        self._count("close_commands")
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._retry_s, self._due, valve, cmd_id)
        old = self._closing.get(valve)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        self._closing[valve] = _Closing(detector, cmd_id, tries, timer)
        return cmd_id

    def _due(self, valve: str, cmd_id: str) -> None:
        closing = self._closing.get(valve)
        if closing is None or closing.cmd_id != cmd_id:
            return
        if closing.tries < TRIES:
            sent = self._command(valve, closing.detector, closing.tries + 1)
            self._record("retried", closing.detector, [valve], [sent])
            return
        del self._closing[valve]
        self._count("failed")
        self._record("failed", closing.detector, [valve], [cmd_id])

    def _valve_report(self, valve: str, payload: bytes) -> None:
        try:
            state = json.loads(payload)["valve"]["state"]
        except (ValueError, KeyError, TypeError):
            return
        if state != "closed":
            self._closed.pop(valve, None)  # opened by hand, moving, faulty: close it next time
            return
        self._closed[valve] = time.monotonic()
        closing = self._closing.pop(valve, None)
        if closing is None:
            return
        if closing.timer is not None:
            closing.timer.cancel()
        self._count("confirmed")
        self._record("confirmed", closing.detector, [valve], [closing.cmd_id])

    # --- reporting ------------------------------------------------------------------------

    def _record(self, event: str, detector: str, valves: list[str], cmd_ids: list[str]) -> None:
        """After the act: a journal line (the gateway reconciles it with its alarms) and an
        event on the broker."""
        line = {
            "at": datetime.now(UTC).isoformat(),
            "event": event,
            "detector": detector,
            "valves": valves,
            "cmd_ids": cmd_ids,
        }
        data = json.dumps(line).encode()
        client = self._client
        if client is not None:
            client.publish(events_topic(self._gateway_id), data, qos=1)
        level = _LEVELS.get(event, logging.WARNING)
        log.log(level, "interlock: %s %s for detector %s (%s)", event, valves, detector, cmd_ids)
        try:
            self._append(data + b"\n")
        except OSError as exc:  # a full disk must not stop the next close
            self._count("journal_failed")
            log.critical("interlock: journal line NOT written (%s): %s", exc, data.decode())

    def _append(self, data: bytes) -> None:
        path = self._data_dir / JOURNAL_FILE
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > JOURNAL_MAX_BYTES:
                path.replace(path.with_suffix(".jsonl.1"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)  # one write, O_APPEND: whole lines even if the reader races
        finally:
            os.close(fd)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


async def serve(url: str, data_dir: Path, gateway_id: str, retry_s: float, rt_priority: int) -> int:
    """Run one interlock for ``data_dir`` until SIGTERM/SIGINT; 0 also if one already runs."""
    with held_lock(data_dir) as mine:
        if not mine:
            log.info("interlock: another interlock holds %s; this one exits", data_dir / LOCK_FILE)
            return 0
        _ahead_of_the_gateway(rt_priority)
        interlock = Interlock(url, data_dir, gateway_id, retry_s=retry_s)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, interlock.stop)
        await interlock.run()
        log.info("interlock: stopped, %s", interlock.counts)
        return 0


def _ahead_of_the_gateway(rt_priority: int) -> None:
    """Run ahead of the gateway and everything else on the same cores, so that a busy gateway
    (taking the same leak down its alarm path at the same moment) does not delay a close:
    ``SCHED_FIFO`` at ``rt_priority`` (0: not asked), else nice ``PRIORITY``. Either needs
    CAP_SYS_NICE or an RLIMIT_RTPRIO (compose's ``ulimits``); a policy it was started with (the
    unit's ``CPUSchedulingPolicy=fifo``) is kept without a system call, which the unit's filter
    would refuse. Says in one line how it runs. docs/interlock.md argues why a real-time
    priority is safe here."""
    if os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR):
        given = os.sched_getparam(0).sched_priority
        log.info("interlock: runs at real-time priority %d, as started", given)
        return
    if rt_priority == 0:
        _nice("no real-time priority asked", logging.INFO)
        return
    try:  # RESET_ON_FORK: no child of it (there is none today) would inherit the priority
        policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, policy, os.sched_param(rt_priority))
    except PermissionError:
        _nice(f"no permission for SCHED_FIFO priority {rt_priority}", logging.WARNING)
    else:
        log.info("interlock: runs at SCHED_FIFO priority %d", rt_priority)


def _nice(why: str, level: int) -> None:
    """Nice ``PRIORITY`` instead of a real-time priority, unless started at least that nice."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > PRIORITY:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
        except PermissionError:
            log.warning("interlock: %s, nor for nice %d: runs at nice %d", why, PRIORITY, nice)
            return
        nice = PRIORITY
    log.log(level, "interlock: %s: runs at nice %d", why, nice)
