"""Gateways that went offline or silent: one critical ``gateway_offline`` incident each.

A gateway is down when its retained availability says ``offline`` (its last will) or when nothing
from it arrived for ``silent_after_s``. Ingest opens the incident at once on ``offline``; the
sweep, run by every instance every few seconds, catches silence and closes the incident of a
gateway heard again. The partial unique index ``incidents_one_offline`` and a per-gateway
advisory lock keep it to one incident however many instances notice at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from central import grouping
from central.db import notify

__all__ = ["close_offline", "lock_keys", "open_offline", "sweep"]

_BACK: Final = {"zh": "网关恢复在线", "en": "gateway back online"}
_STATE: Final = """
SELECT g.gateway_id, g.online, g.last_seen, i.incident_id
FROM gateways g
LEFT JOIN incidents i
  ON i.gateway_id = g.gateway_id AND i.kind = 'gateway_offline' AND i.state <> 'closed'
"""


async def lock_keys(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Take the transaction advisory locks of some group keys, in one global order (of their
    hashes, which is what is locked), so that two instances never wait on each other in a
    circle."""
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM"
            " (SELECT DISTINCT hashtext(t) AS k FROM unnest(%b::text[]) AS t) AS q ORDER BY k",
            (list(keys),),
        )


async def open_offline(
    conn: AsyncConnection, why: Mapping[str, dict[str, Any]], now: datetime
) -> list[int]:
    """Open the offline incident of each gateway in ``why`` (gateway id → what was noticed) that
    has none open; returns the new incidents. Call inside a transaction."""
    if not why:
        return []
    ids = sorted(why)
    await lock_keys(conn, [grouping.offline_key(g) for g in ids])
    sites = await _sites(conn, ids)
    titles: dict[str, str] = {}
    districts: list[str] = []
    for gateway_id in ids:
        names = [d for _, d in sites.get(gateway_id, [])]
        titles[gateway_id] = json.dumps(grouping.offline_title(gateway_id, len(names), names))
        districts.append(next(iter(grouping.districts_by_size(names)), ""))
    cur = await conn.execute(
        "INSERT INTO incidents (kind, category, gateway_id, district, severity, title,"
        " opened_at, updated_at)"
        " SELECT 'gateway_offline', 'emergency', g, d, 'critical', t::jsonb, %s, %s"
        " FROM unnest(%b::text[], %b::text[], %b::text[]) AS u(g, d, t) ORDER BY g"
        " ON CONFLICT (gateway_id) WHERE kind = 'gateway_offline' AND state <> 'closed'"
        " DO NOTHING RETURNING incident_id, gateway_id",
        (now, now, ids, districts, [titles[g] for g in ids]),
    )
    opened = [(int(i), str(g)) for i, g in await cur.fetchall()]
    entries = [(i, _offline_entry(why[g], sites.get(g, []), titles[g])) for i, g in opened]
    await _timeline(conn, now, entries)
    await notify(conn, incidents=[i for i, _ in opened], gateways=[g for _, g in opened])
    return [i for i, _ in opened]


def _offline_entry(why: dict[str, Any], sites: list[tuple[str, str]], title: str) -> dict[str, Any]:
    return {
        "event": "offline",
        **why,
        "sites": [s for s, _ in sites],
        "districts": grouping.districts_by_size([d for _, d in sites]),
        "text": json.loads(title),
    }


async def close_offline(
    conn: AsyncConnection, gateway_ids: Sequence[str], now: datetime
) -> list[int]:
    """Close the open offline incident of each gateway heard again; returns those closed."""
    if not gateway_ids:
        return []
    ids = sorted(set(gateway_ids))
    await lock_keys(conn, [grouping.offline_key(g) for g in ids])
    cur = await conn.execute(
        "UPDATE incidents i SET state = 'closed', closed_at = %s, updated_at = %s"
        " FROM (SELECT incident_id, state FROM incidents WHERE kind = 'gateway_offline'"
        "       AND state <> 'closed' AND gateway_id = ANY(%s)"
        "       ORDER BY incident_id FOR NO KEY UPDATE) AS old"
        " WHERE i.incident_id = old.incident_id RETURNING i.incident_id, i.gateway_id, old.state",
        (now, now, ids),
    )
    closed = [(int(i), str(g), str(s)) for i, g, s in await cur.fetchall()]
    entries: list[tuple[int, dict[str, Any]]] = []
    for incident_id, _, state in closed:
        entries.append((incident_id, {"event": "online", "text": _BACK}))
        entries.append((incident_id, {"from": state, "to": "closed", "why": "gateway back online"}))
    await _timeline(conn, now, entries)
    await notify(conn, incidents=[i for i, _, _ in closed], gateways=[g for _, g, _ in closed])
    return [i for i, _, _ in closed]


async def _sites(conn: AsyncConnection, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    cur = await conn.execute(
        "SELECT gateway_id, site_id, district FROM sites WHERE gateway_id = ANY(%s)"
        " ORDER BY gateway_id, site_id",
        (ids,),
    )
    found: dict[str, list[tuple[str, str]]] = {}
    for gateway_id, site_id, district in await cur.fetchall():
        found.setdefault(gateway_id, []).append((site_id, district))
    return found


async def _timeline(
    conn: AsyncConnection, now: datetime, entries: list[tuple[int, dict[str, Any]]]
) -> None:
    """Timeline rows: kind ``gateway`` for what the gateway did, ``transition`` for a close."""
    if entries:
        await conn.execute(
            "INSERT INTO timeline (incident_id, at, kind, detail)"
            " SELECT i, %s, CASE WHEN d::jsonb ? 'to' THEN 'transition' ELSE 'gateway' END,"
            " d::jsonb FROM unnest(%b::bigint[], %b::text[]) WITH ORDINALITY AS u(i, d, n)"
            " ORDER BY n",
            (now, [i for i, _ in entries], [json.dumps(d) for _, d in entries]),
        )


async def sweep(pool: AsyncConnectionPool, now: datetime, silent_after_s: float) -> list[int]:
    """One pass over every gateway: open the offline incident of those down, close the one of
    those back; returns the incidents opened."""
    cutoff = now - timedelta(seconds=silent_after_s)
    async with pool.connection() as conn:
        rows = await (await conn.execute(_STATE)).fetchall()
    suspects = [
        g for g, online, seen, open_ in rows if _down(online, seen, cutoff) != (open_ is not None)
    ]
    if not suspects:
        return []
    async with pool.connection() as conn, conn.transaction():
        # under the gateways' locks, what another instance may have done meanwhile is seen
        await lock_keys(conn, [grouping.offline_key(g) for g in suspects])
        cur = await conn.execute(_STATE + " WHERE g.gateway_id = ANY(%s)", (suspects,))
        down: dict[str, dict[str, Any]] = {}
        back: list[str] = []
        for gateway_id, online, seen, open_ in await cur.fetchall():
            if _down(online, seen, cutoff) and open_ is None:
                down[gateway_id] = _why(online, seen)
            elif not _down(online, seen, cutoff) and open_ is not None:
                back.append(gateway_id)
        opened = await open_offline(conn, down, now)
        await close_offline(conn, back, now)
    return opened


def _down(online: bool | None, last_seen: datetime, cutoff: datetime) -> bool:
    return online is False or last_seen < cutoff


def _why(online: bool | None, last_seen: datetime) -> dict[str, Any]:
    said = "said offline" if online is False else "silent"
    return {"why": said, "last_seen": last_seen.isoformat()}
