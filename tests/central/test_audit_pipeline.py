"""The audit reads what the gateways send: site summaries built by the gateway's own builder
(gateway.escalation.payloads.site_summary, the edge audit's verdict inside), parsed by
central.inbound and stored by central.ingest, then counted by central.audit."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool

from central.audit import audit_report
from central.inbound import Inbound, parse
from central.ingest import Ingest
from gateway.audit import SiteCondition
from gateway.escalation.payloads import site_summary
from gateway.registry.model import ComponentType, Cylinder, ServiceFinding, Site, SiteType
from tests.central.audit_seed import NOW, create_schema

PREFIX = "gasco/v1"


def _summary(gateway: str, site_id: str, condition: SiteCondition, *, old: bool = False) -> Inbound:
    site = Site(site_id, f"饭店 {site_id}", SiteType.RESTAURANT, "four_piece", "梁溪区", "路 1 号")
    body: dict[str, Any] = site_summary(
        site,
        gateway_id=gateway,
        kit=None,
        devices={"total": 2, "online": 2, "offline": 0},
        open_alarms=[],
        condition=condition,
        at=NOW - timedelta(seconds=30),
    )
    if old:  # a gateway from before the verdict was in the summary
        del body["protected"], body["service"]
    topic = f"{PREFIX}/{gateway}/sites/{site_id}/summary"
    return parse(PREFIX, topic, json.dumps(body).encode())


def _condition(**changes: Any) -> SiteCondition:
    fields: dict[str, Any] = {
        "kit_complete": True,
        "missing": (),
        "devices": ("d1", "d2"),
        "offline": (),
        "past_service_life": (),
        "cylinders_overdue": (),
    } | changes
    return SiteCondition(**fields)


async def test_summaries_from_the_gateways_builder_are_counted(pg_dsn: str) -> None:
    create_schema(pg_dsn)
    hose = ServiceFinding(
        "r2", ComponentType.METAL_HOSE, None, "hose-1", date(2016, 1, 1), 96, date(2024, 1, 1)
    )
    cylinder = Cylinder("r1", "C-7", 15.0, date(2026, 6, 1))
    batch = [
        parse(PREFIX, f"{PREFIX}/gw-1/availability", b"online"),
        parse(PREFIX, f"{PREFIX}/gw-2/availability", b"offline"),
        _summary("gw-1", "r1", _condition(cylinders_overdue=(cylinder,))),
        _summary("gw-1", "r2", _condition(past_service_life=(hose,))),
        _summary("gw-1", "r3", _condition(), old=True),
        _summary("gw-2", "r4", _condition()),
    ]
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as pool:
        await Ingest(pool, "test", clock=lambda: NOW).apply(batch)
        report = await audit_report(
            pool, district=None, since=None, now=NOW, tz=ZoneInfo("Asia/Shanghai")
        )
    total = report.total
    assert (total.registered, total.protected, total.unprotected) == (4, 1, 1)
    assert (total.unknown_no_verdict, total.unknown_no_recent_report) == (1, 1)  # r3; r4 (gw-2 off)
    assert (total.parts_past_service_life, total.cylinders_overdue) == (1, 1)
    assert (total.gateways, total.gateways_unreachable) == (2, 1)
    assert [c.district for c in report.by_district()] == ["梁溪区"]
