"""The gateway's side of the interlock: the link table, the process, and what it did.

* **The table.** Written (atomically) to the data dir at start and whenever the registry's
  generation moves (an import through the API or ``gasgate registry import``): the interlock
  re-reads it within a second.
* **The process.** With ``interlock: spawn`` (the default) the gateway starts ``gasgate
  interlock`` for its data dir unless one already holds the data dir's lock, in a session of
  its own: a ``kill -9`` or SIGSTOP of the gateway leaves it running, and the next start finds
  it. A clean stop of the gateway stops the one it started. ``external``: a unit of its own
  runs it (systemd, docs/deployment.md); ``off``: none (the linkage alone closes valves).
* **What it did.** Every ``GRACE_S`` the interlock's journal is read past the last line
  reconciled: a close for a detector with no leak alarm covering that time (the gateway never
  saw the report, or lost it) raises ``interlock_closed_unrecorded`` for the detector (critical,
  latched): never silently forgotten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from gateway.alarm_types import AlarmType
from gateway.bus import Bus
from gateway.clock import Clock, Timer
from gateway.events import ConditionChanged, Severity
from gateway.interlock.process import JOURNAL_FILE, TABLE_FILE, held_lock
from gateway.interlock.table import build, dumps
from gateway.model import Alarm
from gateway.registry import Registry
from gateway.store import Store
from rules.schema import RuleSet

__all__ = ["GRACE_S", "InterlockMode", "InterlockRoom"]

log = logging.getLogger(__name__)

InterlockMode = Literal["spawn", "external", "off"]
GRACE_S: Final = 10.0  # the gateway's own path has this long to record a leak the interlock saw
TABLE_CHECK_S: Final = 2.0
_LEAKS: Final = (AlarmType.LEAK_LOW.value, AlarmType.LEAK_HIGH.value)
RULE_ID: Final = "interlock.unrecorded"

_MIGRATIONS: Final = (
    """
    -- How far the interlock's journal has been reconciled with the alarms.
    CREATE TABLE interlock_journal (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        inode INTEGER NOT NULL,
        offset INTEGER NOT NULL
    );
    """,
)


class InterlockRoom:
    def __init__(
        self,
        mode: InterlockMode,
        data_dir: Path,
        *,
        registry: Registry,
        rules: RuleSet,
        bus: Bus,
        store: Store,
        clock: Clock,
        child_env: dict[str, str],
    ) -> None:
        self._mode = mode
        self._data_dir = data_dir
        self._registry = registry
        self._rules = rules
        self._bus = bus
        self._store = store
        self._clock = clock
        self._child_env = child_env
        self._generation = -1  # the registry generation the table file holds
        self._table_failing = False
        self._child: subprocess.Popen[bytes] | None = None
        self._timers: list[Timer] = []
        self.raised = 0  # interlock closes found without an alarm

    async def start(self) -> None:
        self._store.migrate("interlock", _MIGRATIONS)
        try:
            self._write_table()
            if self._mode == "spawn":
                self._spawn()
        except OSError as exc:
            # A full or read-only data dir must not stop the gateway's own protection: it
            # starts without the interlock (which keeps the table it has, if it runs) and
            # writes the table again as soon as it can.
            log.critical("interlock: cannot use %s (%s); the gateway starts without it",
                         self._data_dir, exc)  # fmt: skip
        self._every(TABLE_CHECK_S, self._refresh_table)
        self._every(GRACE_S, self.reconcile)

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(3.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(3.0)

    def _every(self, interval_s: float, job: Callable[[], None]) -> None:
        def tick() -> None:
            self._timers.remove(timer)
            try:
                job()
            except Exception:  # a failing pass is logged and tried again next time
                log.exception("interlock room: %s failed", getattr(job, "__name__", job))
            self._every(interval_s, job)

        timer = self._clock.call_later(interval_s, tick)
        self._timers.append(timer)

    # --- the table ----------------------------------------------------------------------------

    def _write_table(self) -> None:
        """The table for the registry's generation (and again after a write failed)."""
        generation = self._registry.generation
        if generation == self._generation:
            return
        table = build(self._registry, self._rules)
        path = self._data_dir / TABLE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(dumps(table))
            tmp.replace(path)  # the interlock never reads half a table
        except OSError as exc:
            if not self._table_failing:  # said once, tried again every TABLE_CHECK_S
                log.critical("interlock: link table NOT written to %s: %s", path, exc)
            self._table_failing = True
            raise
        self._generation, self._table_failing = generation, False
        log.info("interlock: link table written, %d linked detector(s)", len(table))

    def _refresh_table(self) -> None:
        with contextlib.suppress(OSError):  # said by _write_table, tried again next time
            self._write_table()

    # --- the process --------------------------------------------------------------------------

    def _spawn(self) -> None:
        with held_lock(self._data_dir) as free:
            if not free:
                log.info("interlock: already running for %s; keeping it", self._data_dir)
                return
        # The URL and its password travel in the environment, not on the command line (ps).
        self._child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway.interlock", "--data-dir", str(self._data_dir)],
            env={**os.environ, **self._child_env},
            start_new_session=True,  # not the gateway's signals, nor its death
        )
        log.info("interlock: started (pid %d)", self._child.pid)

    # --- reconciling ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Raise ``interlock_closed_unrecorded`` for every journal close older than the grace
        that no leak alarm covers; remember how far the journal was read."""
        path = self._data_dir / JOURNAL_FILE
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            return
        row = self._store.db.execute("SELECT inode, offset FROM interlock_journal").fetchone()
        offset = row["offset"] if row is not None and row["inode"] == inode else 0
        cutoff = self._clock.now() - timedelta(seconds=GRACE_S)
        with path.open("rb") as journal:
            journal.seek(offset)
            for line in journal:
                if not line.endswith(b"\n"):
                    break  # a line being written: next time
                entry = _entry(line)
                if entry is not None and entry[0] > cutoff:
                    break  # the gateway's own path may still be recording it
                if entry is not None and entry[1] is not None:
                    self._check(entry[0], entry[1], entry[2])
                offset += len(line)
        with self._store.transaction(durable=False) as db:
            db.execute(
                "INSERT INTO interlock_journal (id, inode, offset) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET inode = excluded.inode, offset = excluded.offset",
                (inode, offset),
            )

    def _check(self, at: datetime, detector: str, valves: list[str]) -> None:
        if self._covered(detector, at):
            return
        self.raised += 1
        device = self._registry.device(detector)
        site_id = device.site_id if device is not None else None
        message = (
            f"shut-off valve(s) {', '.join(valves)} closed by the interlock at "
            f"{at.isoformat(timespec='seconds')} on a leak at detector {detector}; "
            "no alarm recorded"
        )
        log.critical("interlock: %s", message)
        for active in (True, False):  # an event: latched until a person acknowledges it
            self._bus.publish(
                ConditionChanged(
                    alarm_type=AlarmType.INTERLOCK_CLOSED_UNRECORDED.value,
                    source=detector,
                    site_id=site_id,
                    device_id=detector,
                    active=active,
                    severity=Severity.CRITICAL,
                    rule_id=RULE_ID,
                    message=message,
                    at=self._clock.now(),
                    readings={"valves": ", ".join(valves), "closed_at": at.isoformat()},
                )
            )

    def _covered(self, detector: str, at: datetime) -> bool:
        """A leak alarm of the detector open at ``at`` (or raised within the grace after)."""
        rows = self._store.db.execute(
            "SELECT snapshot FROM alarms WHERE source = ? AND alarm_type IN (?, ?)",
            (detector, *_LEAKS),
        )
        late = at + timedelta(seconds=GRACE_S)
        for row in rows:
            alarm = Alarm.from_json(row["snapshot"])
            if alarm.raised_at <= late and (alarm.closed_at is None or alarm.closed_at >= at):
                return True
        return False


def _entry(line: bytes) -> tuple[datetime, str | None, list[str]] | None:
    """(at, detector, valves) of a journal line; detector None for lines that closed nothing
    (retries, confirmations, failures); None for an unreadable line."""
    try:
        doc = json.loads(line)
        at = datetime.fromisoformat(doc["at"])
        if doc.get("event") != "closed":
            return at, None, []
        return at, str(doc["detector"]), [str(v) for v in doc["valves"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("interlock journal: unreadable line skipped: %r", line[:200])
        return None
