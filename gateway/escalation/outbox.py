"""The durable outbox: every gas company event and every notification leaves through here.

Rows are written by the room that decides to send (in the same transaction as its decision),
then delivered by one lane per channel, oldest first: a lane's head is retried with backoff
until it is delivered or, for a notification to a person, given up (recorded). A channel down
for minutes therefore delivers everything, in order, once it is back.

Each row carries a ``delivery_key`` (alarm, step, recipient, channel): it is unique in the table,
so a step that is replayed after a restart cannot queue the same notification twice, and it is
sent with the message so a receiver can drop the duplicate a crash mid-send can cause.

A *cancellable* row (a notification to a person) is cancelled when the escalation it belongs to
stops; the lane re-reads the row's status right before each send, so an acknowledgement also
stops notifications already queued. Gas company events are never cancellable: they are the
record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.clock import Clock, Timer
from gateway.errors import GasgateError
from gateway.escalation import audit
from gateway.escalation.config import OutboxSettings
from gateway.store import Store

__all__ = [
    "MIGRATIONS",
    "ROOM",
    "Channel",
    "DeliveryFailed",
    "NewItem",
    "Outbox",
    "OutboxItem",
    "cancel_pending",
    "enqueue",
]

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # how long a clean stop lets deliveries in flight finish
ROOM = "outbox"
MIGRATIONS = (
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_key TEXT NOT NULL UNIQUE,
        lane TEXT NOT NULL,
        alarm_id TEXT,
        cancellable INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        done_at TEXT
    );
    CREATE INDEX outbox_lane ON outbox (lane, status, id);
    CREATE INDEX outbox_alarm ON outbox (alarm_id, status);
    """,
)
PENDING, SENT, FAILED, CANCELLED = "pending", "sent", "failed", "cancelled"


class DeliveryFailed(GasgateError):
    """A send did not succeed. ``permanent``: retrying cannot help (a 4xx, a refused address)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class NewItem:
    delivery_key: str
    lane: str
    alarm_id: str | None
    recipient: str  # for the record: a name and address, or a topic
    payload: Mapping[str, Any]
    cancellable: bool


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    delivery_key: str
    lane: str
    alarm_id: str | None
    recipient: str
    payload: Mapping[str, Any]
    attempts: int


class Channel(Protocol):
    @property
    def name(self) -> str:
        """The lane this channel drains (its configured name)."""

    @property
    def gives_up(self) -> bool:
        """False for a channel whose rows are retried without limit (the gas company record)."""

    async def send(self, item: OutboxItem) -> str:
        """Deliver or raise :class:`DeliveryFailed`; returns a short result for the audit."""


def enqueue(db: sqlite3.Connection, items: Sequence[NewItem], at: datetime) -> list[NewItem]:
    """Queue ``items`` inside the caller's transaction; returns those not already queued."""
    added = []
    for item in items:
        cursor = db.execute(
            "INSERT OR IGNORE INTO outbox"
            " (delivery_key, lane, alarm_id, cancellable, recipient, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                item.delivery_key,
                item.lane,
                item.alarm_id,
                int(item.cancellable),
                item.recipient,
                json.dumps(item.payload, ensure_ascii=False, sort_keys=True),
                at.isoformat(),
            ),
        )
        if cursor.rowcount:
            added.append(item)
    return added


def cancel_pending(db: sqlite3.Connection, alarm_id: str, at: datetime, why: str) -> int:
    """Cancel an alarm's queued notifications (inside the caller's transaction); recorded."""
    rows = db.execute(
        "SELECT id, lane, recipient FROM outbox"
        " WHERE alarm_id = ? AND cancellable = 1 AND status = ?",
        (alarm_id, PENDING),
    ).fetchall()
    for row in rows:
        db.execute(
            "UPDATE outbox SET status = ?, done_at = ?, last_error = ? WHERE id = ?",
            (CANCELLED, at.isoformat(), why, row[0]),
        )
        audit.record(
            db, audit.AuditEntry(alarm_id, at, "notification", row[1], row[2], CANCELLED, why)
        )
    return len(rows)


class Outbox:
    """One delivery lane per channel. Constructing it does nothing; :meth:`start` migrates the
    table and starts the lanes, which pick up whatever a previous run left pending."""

    def __init__(
        self, store: Store, clock: Clock, channels: Sequence[Channel], settings: OutboxSettings
    ) -> None:
        self._store = store
        self._clock = clock
        self._channels = {c.name: c for c in channels}
        self._settings = settings
        self._wakes: dict[str, asyncio.Event] = {}
        self._retries: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._prune_timer: Timer | None = None
        self._stopping = False
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._store.migrate(audit.ROOM, audit.MIGRATIONS)
        self._store.migrate(ROOM, MIGRATIONS)
        self._stopping = False
        self._prune_daily()
        for lane, count in self._store.db.execute(
            "SELECT lane, COUNT(*) FROM outbox WHERE status = ? GROUP BY lane", (PENDING,)
        ):
            if lane not in self._channels:
                log.warning(
                    "outbox: %d row(s) wait for channel %r, which is not configured", count, lane
                )
        loop = asyncio.get_running_loop()
        for name, channel in self._channels.items():
            self._wakes[name] = asyncio.Event()
            self._retries[name] = asyncio.Event()
            self._tasks.append(loop.create_task(self._lane(channel), name=f"outbox:{name}"))

    def prune(self) -> int:
        """Remove finished rows older than ``keep_days``; how many."""
        cutoff = self._clock.now() - timedelta(days=self._settings.keep_days)
        with self._store.transaction() as db:
            removed = db.execute(
                "DELETE FROM outbox WHERE status != ? AND done_at < ?",
                (PENDING, cutoff.isoformat()),
            ).rowcount
        if removed:
            log.info("outbox: removed %d row(s) finished before %s", removed, cutoff)
        return removed

    def _prune_daily(self) -> None:
        try:
            self.prune()
        except (GasgateError, sqlite3.Error):  # only housekeeping: tomorrow again
            log.exception("outbox: pruning failed")
        self._prune_timer = self._clock.call_later(86400.0, self._prune_daily)

    async def stop(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        # A delivery in flight finishes and is recorded first (bounded): cancelled after the
        # peer accepted it, its row would stay pending and a person would get it again at the
        # next start. Lanes end at their next turn; idle and backing-off ones at once.
        self._stopping = True
        for event in (*self._wakes.values(), *self._retries.values()):
            event.set()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        # Then cancel until every lane has ended: on Python 3.11 a cancel that races with a
        # finishing asyncio.wait_for (aiosmtplib, httpx use it) can be swallowed, and the lane
        # would go back to waiting for work, holding the gateway's stop for ever.
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()

    def has_lane(self, name: str) -> bool:
        return name in self._channels

    def wake(self, lanes: Sequence[str] | None = None) -> None:
        """Tell lanes that rows were committed for them (all lanes if None)."""
        for name in self._wakes if lanes is None else lanes:
            event = self._wakes.get(name)
            if event is not None:
                event.set()

    def retry_now(self, lane: str) -> None:
        """End a lane's backoff: its peer is back (the gas company link reconnected)."""
        event = self._retries.get(lane)
        if event is not None:
            event.set()

    def pending(self, lane: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM outbox WHERE status = ?"
        args: tuple[str, ...] = (PENDING,)
        if lane is not None:
            sql, args = sql + " AND lane = ?", (PENDING, lane)
        count: int = self._store.db.execute(sql, args).fetchone()[0]
        return count

    def depth(self) -> dict[str, int]:
        """Rows waiting, by lane (every configured lane, 0 when empty): the /metrics gauge."""
        waiting = dict.fromkeys(self._channels, 0)
        for lane, count in self._store.db.execute(
            "SELECT lane, COUNT(*) FROM outbox WHERE status = ? GROUP BY lane", (PENDING,)
        ):
            waiting[lane] = count
        return waiting

    async def _lane(self, channel: Channel) -> None:
        wake = self._wakes[channel.name]
        while not self._stopping:
            try:
                item = self._head(channel.name)
                if item is None:
                    wake.clear()  # no await since _head: a commit cannot have slipped in
                    await wake.wait()
                    continue
                delay = await self._deliver(channel, item)
            except (GasgateError, sqlite3.Error):  # the store failed: the row is retried
                log.exception("outbox lane %s: the store failed", channel.name)
                delay = self._settings.backoff_max_s
            if delay:
                await self._backoff(delay, self._retries[channel.name])

    def _head(self, lane: str) -> OutboxItem | None:
        row = self._store.db.execute(
            "SELECT id, delivery_key, lane, alarm_id, recipient, payload, attempts FROM outbox"
            " WHERE lane = ? AND status = ? ORDER BY id LIMIT 1",
            (lane, PENDING),
        ).fetchone()
        if row is None:
            return None
        return OutboxItem(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])

    async def _deliver(self, channel: Channel, item: OutboxItem) -> float:
        """One attempt at the lane's head; the backoff to wait before the next (0: none)."""
        attempts = item.attempts + 1
        try:
            result = await channel.send(item)
        except DeliveryFailed as exc:
            return self._failed(channel, item, attempts, exc.reason, permanent=exc.permanent)
        except Exception as exc:  # a channel bug must not stop the lane: counted, retried
            log.exception("channel %s failed on outbox row %d", channel.name, item.id)
            return self._failed(
                channel, item, attempts, f"internal error: {exc!r}", permanent=False
            )
        self._finish(item, attempts, SENT, result)
        self.counts[f"sent.{channel.name}"] += 1
        return 0.0

    def _failed(
        self, channel: Channel, item: OutboxItem, attempts: int, reason: str, *, permanent: bool
    ) -> float:
        self.counts[f"error.{channel.name}"] += 1
        give_up = channel.gives_up and (permanent or attempts >= self._settings.max_attempts)
        if give_up:
            log.error(
                "gave up %s to %s after %d attempt(s): %s",
                item.delivery_key,
                item.recipient,
                attempts,
                reason,
            )
            self._finish(item, attempts, FAILED, reason)
            return 0.0
        log.warning(
            "%s to %s: attempt %d failed: %s", item.delivery_key, item.recipient, attempts, reason
        )
        now = self._clock.now()
        with self._store.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = ?, last_error = ? WHERE id = ?",
                (attempts, reason, item.id),
            )
            if item.alarm_id is not None:
                entry = audit.AuditEntry(
                    item.alarm_id,
                    now,
                    _kind(item),
                    item.lane,
                    item.recipient,
                    "error",
                    f"attempt {attempts}: {reason}",
                )
                audit.record(db, entry)
        backoff = self._settings.backoff_initial_s * 2 ** min(attempts - 1, 20)
        return float(min(backoff, self._settings.backoff_max_s))

    def _finish(self, item: OutboxItem, attempts: int, status: str, detail: str) -> None:
        now = self._clock.now()
        with self._store.transaction() as db:
            db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, done_at = ?, last_error = ?"
                " WHERE id = ?",
                (status, attempts, now.isoformat(), "" if status == SENT else detail, item.id),
            )
            if item.alarm_id is not None:
                entry = audit.AuditEntry(
                    item.alarm_id, now, _kind(item), item.lane, item.recipient, status, detail
                )
                audit.record(db, entry)

    async def _backoff(self, seconds: float, retry: asyncio.Event) -> None:
        """Wait ``seconds`` on the room's clock, or until :meth:`retry_now` or a stop."""
        if self._stopping:
            return
        retry.clear()
        timer = self._clock.call_later(seconds, retry.set)
        try:
            await retry.wait()
        finally:
            timer.cancel()


def _kind(item: OutboxItem) -> str:
    return str(item.payload.get("kind", "notification"))
