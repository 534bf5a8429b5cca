"""The sites on the control room's map: every registered site with coordinates (from its
gateway's summary), in the officer's districts, with the state a duty officer reads first.

A site's state, worst first: ``emergency`` (an open emergency incident of its own), ``offline``
(its gateway is offline or has an open "gateway offline" incident: nothing is watching it, so
its real state is unknown), ``maintenance`` (an open maintenance incident), ``none``. A marker
links to the incident behind its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from psycopg import AsyncConnection

from central.users import Officer

__all__ = ["STATES", "MapSite", "sites"]

State = Literal["emergency", "offline", "maintenance", "none"]
STATES: Final[tuple[State, ...]] = ("emergency", "offline", "maintenance", "none")

# One open incident per site and category at most (central/grouping.py); the emergency one
# wins. The offline incident is at most one per gateway (incidents_one_offline).
_SQL: Final = """
SELECT s.site_id, s.name, s.address, s.district, s.lat, s.lon,
       e.incident_id AS emergency, m.incident_id AS maintenance, o.incident_id AS offline,
       g.online IS FALSE AS gateway_offline
FROM sites s
JOIN gateways g USING (gateway_id)
LEFT JOIN LATERAL (
    SELECT incident_id FROM incidents i WHERE i.gateway_id = s.gateway_id
    AND i.site_id = s.site_id AND i.category = 'emergency' AND i.state <> 'closed'
    ORDER BY i.opened_at LIMIT 1) e ON true
LEFT JOIN LATERAL (
    SELECT incident_id FROM incidents i WHERE i.gateway_id = s.gateway_id
    AND i.site_id = s.site_id AND i.category = 'maintenance' AND i.state <> 'closed'
    ORDER BY i.opened_at LIMIT 1) m ON true
LEFT JOIN incidents o ON o.gateway_id = s.gateway_id AND o.kind = 'gateway_offline'
    AND o.state <> 'closed'
WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL AND (%s::text[] IS NULL OR s.district = ANY(%s))
ORDER BY s.gateway_id, s.site_id
"""
_UNPLACED_SQL: Final = """
SELECT count(*) FROM sites s
WHERE (s.lat IS NULL OR s.lon IS NULL) AND (%s::text[] IS NULL OR s.district = ANY(%s))
"""


@dataclass(frozen=True, slots=True)
class MapSite:
    site_id: str
    name: str
    address: str
    district: str
    lat: float
    lon: float
    state: State
    incident_id: int | None  # the incident behind the state; None for "none"


async def sites(conn: AsyncConnection[Any], officer: Officer) -> tuple[list[MapSite], int]:
    """The placed sites the officer may see, and how many more have no coordinates."""
    districts = list(officer.districts) if officer.districts is not None else None
    cur = await conn.execute(_SQL, (districts, districts))
    placed = [_site(*row) for row in await cur.fetchall()]
    cur = await conn.execute(_UNPLACED_SQL, (districts, districts))
    row = await cur.fetchone()
    return placed, int(row[0]) if row else 0


def _site(  # noqa: PLR0917 - one row's columns
    site_id: str, name: str, address: str, district: str, lat: float, lon: float,
    emergency: int | None, maintenance: int | None, offline: int | None, gateway_offline: bool,
) -> MapSite:  # fmt: skip
    state: State
    incident: int | None
    if emergency is not None:
        state, incident = "emergency", emergency
    elif offline is not None or gateway_offline:
        state, incident = "offline", offline
    elif maintenance is not None:
        state, incident = "maintenance", maintenance
    else:
        state, incident = "none", None
    return MapSite(site_id, name, address, district, lat, lon, state, incident)
