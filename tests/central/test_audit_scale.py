"""The audit of a city: 100,000 sites behind 1,000 gateways and 60,000 incidents in a year stay a
report of a few seconds at most, since PostgreSQL aggregates and Python only formats."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from psycopg_pool import AsyncConnectionPool

from central.audit import audit_report
from central.audit_render import render_csv, render_html
from tests.central.audit_seed import NOW, create_schema

# mod() rather than %: the statements take parameters, where % starts a placeholder.
_CITY = (
    """INSERT INTO gateways (gateway_id, online, last_seen, first_seen)
    SELECT 'gw' || g, mod(g, 50) <> 0,
           %(now)s - make_interval(secs => CASE WHEN mod(g, 70) = 0 THEN 5000 ELSE 30 END),
           %(now)s - interval '1 year'
    FROM generate_series(1, 1000) g""",
    """INSERT INTO sites (gateway_id, site_id, district, site_type, protected, summary,
                       summary_at, received_at)
    SELECT 'gw' || (mod(s, 1000) + 1), 's' || s, 'district ' || mod(mod(s, 1000), 12),
           (ARRAY['restaurant', 'household', 'other'])[mod(s, 3) + 1],
           CASE WHEN mod(s, 17) = 0 THEN NULL ELSE mod(s, 5) <> 0 END,
           jsonb_build_object('service', jsonb_build_object(
               'past_service_life', CASE WHEN mod(s, 9) = 0
                                         THEN '[{"component": "metal_hose"}]'::jsonb
                                         ELSE '[]'::jsonb END,
               'cylinders_overdue', '[]'::jsonb)),
           %(now)s, %(now)s
    FROM generate_series(1, 100000) s""",
    """INSERT INTO incidents (kind, category, gateway_id, site_id, district, severity, title,
                           opened_at, acknowledged_at, dispatched_at, on_site_at, resolved_at,
                           cause, updated_at)
    SELECT 'site', CASE WHEN mod(i, 4) = 0 THEN 'maintenance' ELSE 'emergency' END, 'gw1', 's1',
           'district ' || mod(i, 12), 'critical', '{}', o,
           o + make_interval(secs => 20 + mod(i, 300)),
           o + make_interval(secs => 200 + mod(i, 900)),
           o + make_interval(secs => 900 + mod(i, 1800)),
           o + make_interval(secs => 2000 + mod(i, 3600)),
           CASE WHEN mod(i, 3) = 0 THEN NULL ELSE 'other' END, %(now)s
    FROM generate_series(1, 60000) i,
         LATERAL (SELECT %(now)s - make_interval(mins => i * 8) AS o) t""",
)


async def test_a_city_of_100000_sites(pg_dsn: str, tmp_path: Path) -> None:
    create_schema(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        for statement in _CITY:
            conn.execute(statement, {"now": NOW})
        conn.commit()
        conn.execute("ANALYZE")
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=1, open=False) as pool:
        started = time.perf_counter()
        report = await audit_report(
            pool, district=None, since=date(2025, 12, 1), now=NOW, tz=ZoneInfo("Asia/Shanghai")
        )
        took = time.perf_counter() - started
        html, csv = render_html(report, "zh-CN"), render_csv(report)
        rendered = time.perf_counter() - started - took
    (tmp_path / "audit-city.html").write_text(html)  # to look at
    assert report.total.registered == 100_000
    assert len(report.by_district()) == 12
    assert len(report.months()) == 13
    print(f"100,000 sites, 60,000 incidents: report {took:.2f} s, HTML + CSV {rendered:.2f} s")
    # A shared 2-core box: generous bounds that still catch a per-site query or a Python loop.
    assert took < 10
    assert rendered < 5
    assert len(html) < 1_000_000
    assert csv.count("\n") < 2_000
