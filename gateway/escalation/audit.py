"""The audit trail per alarm: every escalation step, notification attempt result, command and
acknowledgement, with times. Written in the same transaction as the thing it records; read by
the console and the regulator audit through :func:`trail`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.store import Store

__all__ = ["MIGRATIONS", "ROOM", "AuditEntry", "between", "note", "record", "trail"]

ROOM = "escalation_audit"
MIGRATIONS = (
    """
    CREATE TABLE escalation_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alarm_id TEXT NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL DEFAULT '',
        recipient TEXT NOT NULL DEFAULT '',
        result TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX escalation_audit_alarm ON escalation_audit (alarm_id, id);
    """,
    "CREATE INDEX escalation_audit_at ON escalation_audit (at);",
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    alarm_id: str
    at: datetime
    kind: str  # alarm_changed, step, notification, event, command, stopped
    channel: str = ""
    recipient: str = ""
    result: str = ""  # queued, sent, failed, cancelled, skipped, accepted, refused
    detail: str = ""


def record(db: sqlite3.Connection, entry: AuditEntry) -> None:
    db.execute(
        "INSERT INTO escalation_audit (alarm_id, at, kind, channel, recipient, result, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            entry.alarm_id,
            _stamp(entry.at),
            entry.kind,
            entry.channel,
            entry.recipient,
            entry.result,
            entry.detail,
        ),
    )


def note(
    db: sqlite3.Connection,
    alarm_id: str,
    kind: str,
    result: str,
    detail: str = "",
    *,
    at: datetime,
    channel: str = "",
    recipient: str = "",
) -> None:
    """:func:`record` with the usual fields first."""
    record(db, AuditEntry(alarm_id, at, kind, channel, recipient, result, detail))


_SELECT = "SELECT alarm_id, at, kind, channel, recipient, result, detail FROM escalation_audit"


def trail(store: Store, alarm_id: str) -> list[AuditEntry]:
    """Everything recorded about one alarm, oldest first."""
    rows = store.db.execute(f"{_SELECT} WHERE alarm_id = ? ORDER BY id", (alarm_id,))
    return [_entry(r) for r in rows]


def between(store: Store, start: datetime, end: datetime) -> list[AuditEntry]:
    """Everything recorded in ``[start, end)`` (UTC), oldest first: the regulator's export."""
    rows = store.db.execute(
        f"{_SELECT} WHERE at >= ? AND at < ? ORDER BY at, id",
        (_stamp(start), _stamp(end)),
    )
    return [_entry(r) for r in rows]


def _stamp(at: datetime) -> str:
    """UTC, fixed width: stored stamps compare in time order as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _entry(r: sqlite3.Row) -> AuditEntry:
    return AuditEntry(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], r[6])
