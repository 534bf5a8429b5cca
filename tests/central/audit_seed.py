"""A small city for the audit tests, written with plain SQL, and the schema it needs.

Gateways (now = 2026-12-04 06:00 UTC, silent after 900 s): gw1 online, gw2 offline (its last
will), gw3 silent for 2,000 s, gw4 never said its availability but heard 10 s ago.

Sites (梁溪区 / 滨湖区):

=====  ====  ==========  ==========  ======================================  ============
site   gw    district    type        verdict                                 counted as
=====  ====  ==========  ==========  ======================================  ============
s1     gw1   梁溪区      restaurant  column true; 2 parts past life, 1 cyl.  protected
s2     gw1   梁溪区      restaurant  column false                            unprotected
s3     gw1   梁溪区      household   none                                    no verdict
s4     gw1   梁溪区      household   summary true only                       protected
s5     gw2   滨湖区      restaurant  true                                    unreachable
s6     gw3   滨湖区      household   true                                    unreachable
s7     gw4   滨湖区      restaurant  true; "service" not an object           protected
s8     gw4   滨湖区      household   summary "yes" (a string); 1 part (top)  no verdict
=====  ====  ==========  ==========  ======================================  ============

Incidents (Asia/Shanghai, UTC+8), seconds after the raise (ack, dispatched, on site, resolved):

* 梁溪区 emergency, November (local): a (30, 120, 600, 1800, cause), b (60, 240, 1200, 3600, no
  cause), c (90, 360, -, -), d (300, -, -, -) — d opened 2026-10-31 17:00 UTC, 1 am on 1 November
  in Shanghai.
* 滨湖区 emergency, November: e (100, -, -, 1000, cause).
* 梁溪区 emergency, October (local): f, opened 2026-10-31 15:00 UTC (11 pm local), nothing else.
* 梁溪区 maintenance, December: g, nothing done yet.
* 滨湖区 gateway_offline in December (not a site incident: not counted), one incident opened
  after ``NOW`` (not counted).
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["NOW", "create_schema", "seed_city"]

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
LIANGXI = "梁溪区"
BINHU = "滨湖区"


def create_schema(dsn: str) -> None:
    """Schema 1, by ``central.db.upgrade`` once helper A's module is there, else from the file."""
    try:
        db = importlib.import_module("central.db")
    except ImportError:
        sql = Path(__file__).parents[2] / "central" / "migrations" / "0001_init.sql"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.read_bytes())
        return
    db.upgrade(dsn)


def _gateway(conn: psycopg.Connection[Any], gid: str, online: bool | None, age_s: float) -> None:
    conn.execute(
        "INSERT INTO gateways (gateway_id, online, last_seen, first_seen) VALUES (%s, %s, %s, %s)",
        (gid, online, NOW - timedelta(seconds=age_s), NOW - timedelta(days=100)),
    )


def _site(
    conn: psycopg.Connection[Any],
    gid: str,
    sid: str,
    district: str,
    site_type: str,
    column: bool | None,
    summary: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO sites (gateway_id, site_id, district, site_type, protected, summary,"
        " summary_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (gid, sid, district, site_type, column, json.dumps(summary), NOW, NOW),
    )


def _incident(
    conn: psycopg.Connection[Any],
    district: str,
    opened: datetime,
    steps: tuple[float | None, float | None, float | None, float | None],
    *,
    cause: str | None = None,
    category: str = "emergency",
    kind: str = "site",
) -> None:
    ack, dispatched, on_site, resolved = (
        None if s is None else opened + timedelta(seconds=s) for s in steps
    )
    conn.execute(
        "INSERT INTO incidents (kind, category, gateway_id, site_id, district, severity, state,"
        " title, opened_at, acknowledged_at, dispatched_at, on_site_at, resolved_at, cause,"
        " updated_at) VALUES (%s, %s, 'gw1', 's1', %s, 'critical', 'new', '{}', %s, %s, %s, %s,"
        " %s, %s, %s)",
        (kind, category, district, opened, ack, dispatched, on_site, resolved, cause, NOW),
    )


def seed_city(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        _gateway(conn, "gw1", True, 60)
        _gateway(conn, "gw2", False, 60)
        _gateway(conn, "gw3", True, 2000)
        _gateway(conn, "gw4", None, 10)
        service = {
            "past_service_life": [{"component": "metal_hose"}, {"component": "leak_detector"}],
            "cylinders_overdue": [{"cylinder_id": "C1"}],
        }
        _site(conn, "gw1", "s1", LIANGXI, "restaurant", True, {"service": service})
        _site(conn, "gw1", "s2", LIANGXI, "restaurant", False, {"protected": False})
        _site(conn, "gw1", "s3", LIANGXI, "household", None, {})
        _site(conn, "gw1", "s4", LIANGXI, "household", None, {"protected": True})
        _site(conn, "gw2", "s5", BINHU, "restaurant", True, {"protected": True})
        _site(conn, "gw3", "s6", BINHU, "household", True, {"protected": True})
        _site(conn, "gw4", "s7", BINHU, "restaurant", True, {"service": "bad"})
        _site(
            conn,
            "gw4",
            "s8",
            BINHU,
            "household",
            None,
            {"protected": "yes", "past_service_life": [{"component": "metal_hose"}]},
        )
        nov = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
        _incident(conn, LIANGXI, nov, (30, 120, 600, 1800), cause="loose_connection")
        _incident(conn, LIANGXI, nov, (60, 240, 1200, 3600))
        _incident(conn, LIANGXI, nov, (90, 360, None, None))
        _incident(conn, LIANGXI, datetime(2026, 10, 31, 17, tzinfo=UTC), (300, None, None, None))
        _incident(conn, BINHU, nov, (100, None, None, 1000), cause="aged_or_damaged_hose")
        _incident(conn, LIANGXI, datetime(2026, 10, 31, 15, tzinfo=UTC), (None,) * 4)
        _incident(conn, LIANGXI, NOW - timedelta(days=1), (None,) * 4, category="maintenance")
        _incident(conn, BINHU, NOW - timedelta(hours=1), (None,) * 4, kind="gateway_offline")
        _incident(conn, LIANGXI, NOW + timedelta(hours=1), (None,) * 4)
