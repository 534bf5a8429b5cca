"""The city-wide coverage and response audit for regulators (issue 13 §5).

Three parts, all aggregated by PostgreSQL in one read-only snapshot so that the report stays fast
for 100,000 sites (about 0.6 s with 60,000 incidents, tests/central/test_audit_scale.py):

* **Coverage**, from the ``sites`` table (the gateways' latest summaries): protected ÷ registered by
  district and site type. A site is *unknown* — never protected — when its gateway said it is
  offline, when the center has heard nothing from the gateway for ``silent_after_s``, when the
  site's own summary was not renewed for as long (a site its gateway no longer reports keeps its
  last retained summary), or when its summary carries no ``protected`` verdict (a gateway older
  than that field). Parts past their
  service life and cylinders overdue for inspection are counted from the summary's ``service``
  lists (read defensively: a missing or wrongly typed field counts as none said).
* **Response**, from the ``incidents`` table: for each site incident (a gateway going offline is
  counted under coverage, and closes itself when the gateway returns), the seconds from the raise
  (``opened_at``, the center's clock) to acknowledged, dispatched, on site and resolved (officer
  times, the same clock), as p50 and p90, and the closed-loop rate — incidents resolved with a
  cause ÷ incidents — by local month (in the report's time zone), district and category.
* **Causes** of the closed-loop incidents, by category, most frequent first.

Rendering (JSON, CSV, HTML) is :mod:`central.audit_render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

__all__ = [
    "DEFAULT_SILENT_AFTER_S",
    "MILESTONES",
    "AuditReport",
    "CauseCount",
    "Coverage",
    "Percentiles",
    "Response",
    "audit_report",
]

# Three of the gateways' default summary intervals (300 s): one late summary is not silence.
DEFAULT_SILENT_AFTER_S: Final = 900.0
# The officer milestones, each measured from the raise, in the order an incident reaches them.
MILESTONES: Final = ("acknowledged", "dispatched", "on_site", "resolved")


@dataclass(frozen=True, slots=True)
class Coverage:
    """One row of coverage. ``district``/``site_type`` None: every district / every type."""

    district: str | None
    site_type: str | None
    registered: int
    protected: int
    unprotected: int
    unknown_no_recent_report: (
        int  # the gateway is offline or silent, or the site's summary is stale
    )
    unknown_no_verdict: int  # the summary says nothing about protection
    gateways: int
    gateways_unreachable: int
    sites_past_service_life: int
    parts_past_service_life: int
    sites_cylinders_overdue: int
    cylinders_overdue: int

    @property
    def unknown(self) -> int:
        return self.unknown_no_recent_report + self.unknown_no_verdict

    @property
    def protected_share(self) -> float | None:
        return self.protected / self.registered if self.registered else None

    @property
    def unknown_share(self) -> float | None:
        return self.unknown / self.registered if self.registered else None


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Seconds from the raise to one milestone, over the incidents that reached it (``n``)."""

    n: int
    p50_s: float | None
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class Response:
    """One row of response. ``month`` (the first day of a local month) / ``district`` None: the
    whole period / every district."""

    month: date | None
    district: str | None
    category: str
    incidents: int
    closed_loop: int  # resolved with a cause
    acknowledged: Percentiles
    dispatched: Percentiles
    on_site: Percentiles
    resolved: Percentiles

    @property
    def closed_loop_rate(self) -> float | None:
        return self.closed_loop / self.incidents if self.incidents else None

    def milestone(self, name: str) -> Percentiles:
        value: Percentiles = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class CauseCount:
    """How many closed-loop incidents of a category the officers put down to one cause."""

    category: str
    cause: str
    incidents: int


@dataclass(frozen=True, slots=True)
class AuditReport:
    at: datetime  # when the report was made (aware)
    tz: str  # the zone its months and times are shown in (IANA key)
    district: str | None  # None: every district
    since: date | None  # incidents opened from this local day on; None: all
    silent_after_s: float
    coverage: tuple[Coverage, ...]
    responses: tuple[Response, ...]
    causes: tuple[CauseCount, ...]  # most frequent first within each category

    @property
    def total(self) -> Coverage:
        """The coverage of every site in the report's scope."""
        return next(c for c in self.coverage if c.district is None and c.site_type is None)

    def by_district(self) -> tuple[Coverage, ...]:
        return tuple(c for c in self.coverage if c.district is not None and c.site_type is None)

    def by_site_type(self) -> tuple[Coverage, ...]:
        return tuple(c for c in self.coverage if c.district is None and c.site_type is not None)

    def by_district_and_site_type(self) -> tuple[Coverage, ...]:
        return tuple(c for c in self.coverage if c.district is not None and c.site_type is not None)

    def months(self) -> tuple[date, ...]:
        """Every local month from ``since`` (else the first incident's) to the report's, so a
        month without incidents shows as such rather than vanishing."""
        seen = [r.month for r in self.responses if r.month is not None]
        last = self.at.astimezone(ZoneInfo(self.tz)).date().replace(day=1)
        first = self.since.replace(day=1) if self.since else min(seen, default=last)
        months = []
        while first <= last:
            months.append(first)
            first = (first + timedelta(days=32)).replace(day=1)
        return tuple(months)

    def response(self, category: str, month: date | None, district: str | None) -> Response | None:
        for r in self.responses:
            if (r.category, r.month, r.district) == (category, month, district):
                return r
        return None


async def audit_report(
    pool: AsyncConnectionPool[Any],
    *,
    district: str | None,
    since: date | None,
    now: datetime,
    tz: ZoneInfo,
    silent_after_s: float = DEFAULT_SILENT_AFTER_S,
) -> AuditReport:
    """The audit at ``now`` (aware) of every district or one, incidents opened from local day
    ``since`` on. Every part reads one snapshot."""
    if now.tzinfo is None:
        raise ValueError("now must be aware: the report compares it with the center's times")
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        coverage = await _coverage(conn, district, now - timedelta(seconds=silent_after_s))
        start = datetime.combine(since, time(), tzinfo=tz) if since else None
        responses = await _responses(conn, district, start, now, tz)
        causes = await _causes(conn, district, start, now)
    return AuditReport(now, tz.key, district, since, silent_after_s, coverage, responses, causes)


# A site's verdict: the ingest's column, else the summary's own field when it is a boolean.
# Status 'unreachable' comes first: a verdict nobody renewed within silent_after_s is stale.
_COVERAGE_SQL: Final = """
WITH s AS (
    SELECT s.gateway_id, s.district, s.site_type, gw.down,
           CASE WHEN gw.down OR s.received_at < %(silent_before)s THEN 'unreachable'
                WHEN v.verdict IS NULL THEN 'no_verdict'
                WHEN v.verdict THEN 'protected'
                ELSE 'unprotected' END AS status,
           CASE WHEN jsonb_typeof(x.parts) = 'array' THEN jsonb_array_length(x.parts) ELSE 0 END
               AS parts,
           CASE WHEN jsonb_typeof(x.cylinders) = 'array' THEN jsonb_array_length(x.cylinders)
                ELSE 0 END AS cylinders
    FROM sites s
    JOIN gateways g USING (gateway_id)
    CROSS JOIN LATERAL (
        SELECT g.online IS FALSE OR g.last_seen < %(silent_before)s AS down
    ) gw
    CROSS JOIN LATERAL (
        SELECT coalesce(s.protected,
                        CASE WHEN jsonb_typeof(s.summary -> 'protected') = 'boolean'
                             THEN (s.summary -> 'protected')::boolean END) AS verdict
    ) v
    CROSS JOIN LATERAL (
        SELECT coalesce(s.summary -> 'service' -> 'past_service_life',
                        s.summary -> 'past_service_life') AS parts,
               coalesce(s.summary -> 'service' -> 'cylinders_overdue',
                        s.summary -> 'cylinders_overdue') AS cylinders
    ) x
    WHERE %(district)s::text IS NULL OR s.district = %(district)s::text
)
SELECT GROUPING(district), GROUPING(site_type), district, site_type,
       count(*),
       count(*) FILTER (WHERE status = 'protected'),
       count(*) FILTER (WHERE status = 'unprotected'),
       count(*) FILTER (WHERE status = 'unreachable'),
       count(*) FILTER (WHERE status = 'no_verdict'),
       count(DISTINCT gateway_id),
       count(DISTINCT gateway_id) FILTER (WHERE down),
       count(*) FILTER (WHERE parts > 0),
       coalesce(sum(parts), 0),
       count(*) FILTER (WHERE cylinders > 0),
       coalesce(sum(cylinders), 0)
FROM s
GROUP BY GROUPING SETS ((district, site_type), (district), (site_type), ())
ORDER BY 1 DESC, 2 DESC, district, site_type
"""


async def _coverage(
    conn: AsyncConnection[Any], district: str | None, silent_before: datetime
) -> tuple[Coverage, ...]:
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(_COVERAGE_SQL, {"district": district, "silent_before": silent_before})
    rows = [
        Coverage(
            None if row[0] else row[2],
            None if row[1] else row[3],
            *(int(n) for n in row[4:]),
        )
        for row in await cur.fetchall()
    ]
    if not any(c.district is None and c.site_type is None for c in rows):
        # No site at all: GROUPING SETS () yields no row over an empty input.
        rows.insert(0, Coverage(None, None, *([0] * 11)))
    return tuple(rows)


# The columns after closed_loop: (n, [p50, p90]) for each of MILESTONES, in that order.
_RESPONSE_SQL: Final = """
WITH i AS (
    SELECT date_trunc('month', opened_at AT TIME ZONE %(tz)s)::date AS month,
           district, category,
           extract(epoch FROM acknowledged_at - opened_at) AS acknowledged_s,
           extract(epoch FROM dispatched_at - opened_at) AS dispatched_s,
           extract(epoch FROM on_site_at - opened_at) AS on_site_s,
           extract(epoch FROM resolved_at - opened_at) AS resolved_s,
           resolved_at IS NOT NULL AND coalesce(cause, '') <> '' AS closed_loop
    FROM incidents
    WHERE kind = 'site'
      AND opened_at < %(now)s
      AND (%(start)s::timestamptz IS NULL OR opened_at >= %(start)s::timestamptz)
      AND (%(district)s::text IS NULL OR district = %(district)s::text)
)
SELECT GROUPING(month), GROUPING(district), month, district, category,
       count(*), count(*) FILTER (WHERE closed_loop),
       count(acknowledged_s),
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY acknowledged_s),
       count(dispatched_s), percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY dispatched_s),
       count(on_site_s), percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY on_site_s),
       count(resolved_s), percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY resolved_s)
FROM i
GROUP BY GROUPING SETS ((category, month, district), (category, month), (category, district),
                        (category))
ORDER BY category, 1 DESC, 2 DESC, month, district
"""


async def _responses(
    conn: AsyncConnection[Any],
    district: str | None,
    start: datetime | None,
    now: datetime,
    tz: ZoneInfo,
) -> tuple[Response, ...]:
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        _RESPONSE_SQL, {"tz": tz.key, "now": now, "start": start, "district": district}
    )
    out = []
    for row in await cur.fetchall():
        stats = row[7:]
        milestones = [_percentiles(stats[k], stats[k + 1]) for k in range(0, len(stats), 2)]
        out.append(
            Response(
                None if row[0] else row[2],
                None if row[1] else row[3],
                row[4],
                int(row[5]),
                int(row[6]),
                *milestones,
            )
        )
    return tuple(out)


def _percentiles(n: int, values: list[float] | None) -> Percentiles:
    """percentile_cont over no value (nobody reached the milestone) is NULL, not an array."""
    p50, p90 = values if values is not None else (None, None)
    return Percentiles(int(n), p50, p90)


_CAUSES_SQL: Final = """
SELECT category, cause, count(*)
FROM incidents
WHERE kind = 'site'
  AND resolved_at IS NOT NULL AND coalesce(cause, '') <> ''
  AND opened_at < %(now)s
  AND (%(start)s::timestamptz IS NULL OR opened_at >= %(start)s::timestamptz)
  AND (%(district)s::text IS NULL OR district = %(district)s::text)
GROUP BY category, cause
ORDER BY category, count(*) DESC, cause
"""


async def _causes(
    conn: AsyncConnection[Any], district: str | None, start: datetime | None, now: datetime
) -> tuple[CauseCount, ...]:
    """The causes behind the closed loop: with it a regulator sees what to act on (aged hoses,
    loose connections) rather than only how fast incidents were closed."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(_CAUSES_SQL, {"now": now, "start": start, "district": district})
    return tuple(CauseCount(c, cause, int(n)) for c, cause, n in await cur.fetchall())
