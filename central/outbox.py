"""The gateway commands an officer's step implies, queued in the ``commands`` outbox inside the
step's transaction (``central.commands`` sends them): by the officer's own step
(``central.incidents``), or by the ingest when an alarm of a resolved incident clears after the
resolve (``central.ingest``: the officer's resolve follows the alarm)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection, sql

from central.db import CMD_CHANNEL

__all__ = ["commandable", "queue"]

# The alarms each step asks the gateway to change: acknowledge those not yet acknowledged;
# resolve those whose condition cleared but that are not closed (a latched leak stays until
# someone resolves it). Alarms still active are left: the gateway would refuse them. An alarm
# with the same command still unanswered is left too: it is on its way.
_COMMANDED: Final[dict[str, str]] = {
    "acknowledge": "a.state IN ('unack_active', 'unack_cleared')",
    "resolve": "NOT a.active AND a.state <> 'normal'",
}


async def commandable(
    conn: AsyncConnection[Any], incident_id: int, action: str
) -> list[tuple[str, str]]:
    """(alarm_id, gateway_id) of the alarms ``action`` changes at the gateway."""
    which = _COMMANDED.get(action)
    if which is None:
        return []
    cur = await conn.execute(
        sql.SQL(
            "SELECT a.alarm_id, a.gateway_id FROM alarms a WHERE a.incident_id = %s AND {}"
            " AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.alarm_id = a.alarm_id"
            " AND c.action = %s AND c.replied_at IS NULL) ORDER BY a.raised_at, a.alarm_id"
        ).format(sql.SQL(which)),
        (incident_id, action),
    )
    return [(str(a), str(g)) for a, g in await cur.fetchall()]


async def queue(  # noqa: PLR0917 - one step's facts
    conn: AsyncConnection[Any], incident_id: int, officer: str, action: str, note: str | None,
    alarms: list[tuple[str, str]], now: datetime,
) -> list[str]:  # fmt: skip
    """One command per alarm, each on the incident's timeline; the senders are woken on commit.
    Returns the commands' ids."""
    ids = []
    for alarm_id, gateway_id in alarms:
        cmd_id = f"gc-{uuid.uuid4().hex}"  # fresh per command: the gateway applies an id once
        await conn.execute(
            "INSERT INTO commands (cmd_id, incident_id, gateway_id, alarm_id, officer, action,"
            " note, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (cmd_id, incident_id, gateway_id, alarm_id, officer, action, note, now),
        )
        said = {"cmd_id": cmd_id, "alarm_id": alarm_id, "action": action}
        await conn.execute(
            "INSERT INTO timeline (incident_id, at, kind, actor, detail)"
            " VALUES (%s, %s, 'command', %s, %s)",
            (incident_id, now, officer, json.dumps(said)),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (CMD_CHANNEL, cmd_id))
        ids.append(cmd_id)
    return ids
