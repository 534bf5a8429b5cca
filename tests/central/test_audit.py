"""The audit's numbers against hand-computed values (audit_seed.py describes the city)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg_pool import AsyncConnectionPool

from central.audit import AuditReport, CauseCount, Coverage, Percentiles, audit_report
from tests.central.audit_seed import BINHU, LIANGXI, NOW, create_schema, seed_city

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    create_schema(pg_dsn)
    seed_city(pg_dsn)
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as pool:
        yield pool


async def _report(
    pool: AsyncConnectionPool[Any], district: str | None = None, since: date | None = None
) -> AuditReport:
    return await audit_report(pool, district=district, since=since, now=NOW, tz=SHANGHAI)


def _cov(report: AuditReport, district: str | None, site_type: str | None) -> Coverage:
    return next(c for c in report.coverage if (c.district, c.site_type) == (district, site_type))


async def test_coverage_counts_offline_silent_and_unsaid_as_unknown(
    pool: AsyncConnectionPool[Any],
) -> None:
    report = await _report(pool)
    total = report.total
    assert (total.registered, total.protected, total.unprotected) == (8, 3, 1)
    assert (total.unknown_no_recent_report, total.unknown_no_verdict, total.unknown) == (2, 2, 4)
    assert total.protected_share == 3 / 8
    assert (total.gateways, total.gateways_unreachable) == (4, 2)
    liangxi = _cov(report, LIANGXI, None)
    assert (liangxi.registered, liangxi.protected, liangxi.unprotected, liangxi.unknown) == (
        4,
        2,
        1,
        1,
    )
    assert (liangxi.sites_past_service_life, liangxi.parts_past_service_life) == (1, 2)
    assert (liangxi.sites_cylinders_overdue, liangxi.cylinders_overdue) == (1, 1)
    binhu = _cov(report, BINHU, None)
    assert (binhu.registered, binhu.protected, binhu.unknown_no_recent_report) == (4, 1, 2)
    assert (binhu.unknown_no_verdict, binhu.gateways, binhu.gateways_unreachable) == (1, 3, 2)
    assert (binhu.sites_past_service_life, binhu.parts_past_service_life) == (1, 1)
    restaurant = _cov(report, None, "restaurant")
    assert (restaurant.registered, restaurant.protected, restaurant.unprotected) == (4, 2, 1)
    assert restaurant.unknown_no_recent_report == 1
    household = _cov(report, BINHU, "household")
    assert (
        household.registered,
        household.unknown_no_recent_report,
        household.unknown_no_verdict,
    ) == (
        2,
        1,
        1,
    )
    assert [c.district for c in report.by_district()] == sorted([LIANGXI, BINHU])


async def test_a_gateway_heard_again_makes_its_sites_count(pool: AsyncConnectionPool[Any]) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE gateways SET last_seen = %s WHERE gateway_id = 'gw3'", (NOW,))
    total = (await _report(pool)).total
    assert (total.protected, total.unknown_no_recent_report) == (4, 1)


async def test_a_summary_nobody_renewed_is_unknown(pool: AsyncConnectionPool[Any]) -> None:
    """s1's gateway is heard, but s1's own summary is 1,000 s old: a site the gateway no longer
    reports (its retained summary lingers) is not counted as protected."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE sites SET received_at = %s WHERE site_id = 's1'",
            (NOW - timedelta(seconds=1000),),
        )
    total = (await _report(pool)).total
    assert (total.protected, total.unknown_no_recent_report) == (2, 3)
    assert total.gateways_unreachable == 2  # gw1 itself is heard


async def test_district_filter(pool: AsyncConnectionPool[Any]) -> None:
    report = await _report(pool, district=LIANGXI)
    assert report.total == replace(_cov(await _report(pool), LIANGXI, None), district=None)
    assert [c.district for c in report.by_district()] == [LIANGXI]
    assert {r.district for r in report.responses} <= {LIANGXI, None}
    assert report.causes == (CauseCount("emergency", "loose_connection", 1),)
    city = report.response("emergency", None, None)
    assert city is not None
    assert city.incidents == 5


async def test_response_percentiles_by_local_month(pool: AsyncConnectionPool[Any]) -> None:
    report = await _report(pool)
    nov, oct_ = date(2026, 11, 1), date(2026, 10, 1)
    liangxi = report.response("emergency", nov, LIANGXI)
    assert liangxi is not None
    assert (liangxi.incidents, liangxi.closed_loop, liangxi.closed_loop_rate) == (4, 1, 0.25)
    # percentile_cont interpolates: p50 of 30, 60, 90, 300 is 75; p90 at rank 2.7 is 90 + 0.7 * 210.
    assert liangxi.acknowledged == Percentiles(4, 75.0, pytest.approx(237.0))
    assert liangxi.dispatched == Percentiles(3, 240.0, pytest.approx(336.0))
    assert liangxi.on_site == Percentiles(2, 900.0, pytest.approx(1140.0))
    assert liangxi.resolved == Percentiles(2, 2700.0, pytest.approx(3420.0))
    city = report.response("emergency", nov, None)
    assert city is not None
    assert (city.incidents, city.closed_loop) == (5, 2)
    assert city.acknowledged == Percentiles(5, 90.0, pytest.approx(220.0))
    october = report.response("emergency", oct_, LIANGXI)
    assert october is not None
    assert (october.incidents, october.acknowledged) == (1, Percentiles(0, None, None))
    maintenance = report.response("maintenance", date(2026, 12, 1), LIANGXI)
    assert maintenance is not None
    assert maintenance.incidents == 1
    # The gateway_offline incident and the one opened after the report are not counted.
    whole = report.response("emergency", None, None)
    assert whole is not None
    assert whole.incidents == 6
    assert report.response("emergency", date(2026, 12, 1), None) is None
    assert report.months() == (oct_, nov, date(2026, 12, 1))
    # b was resolved without a cause: not in the closed loop, so not among the causes.
    assert report.causes == (
        CauseCount("emergency", "aged_or_damaged_hose", 1),
        CauseCount("emergency", "loose_connection", 1),
    )


async def test_since_is_a_local_day(pool: AsyncConnectionPool[Any]) -> None:
    report = await _report(pool, since=date(2026, 11, 1))
    whole = report.response("emergency", None, None)
    assert whole is not None
    assert whole.incidents == 5
    assert report.response("emergency", date(2026, 10, 1), None) is None
    assert report.months() == (date(2026, 11, 1), date(2026, 12, 1))


async def test_now_must_be_aware(pool: AsyncConnectionPool[Any]) -> None:
    with pytest.raises(ValueError, match="aware"):
        await audit_report(
            pool, district=None, since=None, now=NOW.replace(tzinfo=None), tz=SHANGHAI
        )


async def test_an_empty_city(pg_dsn: str) -> None:
    create_schema(pg_dsn)
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=1, open=False) as pool:
        report = await _report(pool)
    assert (report.total.registered, report.total.protected_share, report.responses) == (
        0,
        None,
        (),
    )
