"""The coverage audit against a registry built for the test (tests/support/api_world.py): known
missing parts, expired parts, an overdue cylinder, devices heard and not heard, and alarms
with known times to acknowledge and resolve; the real store, bus, alarms room and CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from firmware_bridge.ksp import DeviceKind, Event
from gateway.alarms import Alarms
from gateway.api.devices import DeviceStates
from gateway.audit import run_audit
from gateway.bus import Bus
from gateway.cli import main
from gateway.clock import ManualClock
from gateway.contract import KitReport
from gateway.escalation import room as escalation_room
from gateway.escalation.coverage import Coverage
from gateway.events import ConditionChanged, ReportReceived, Severity
from gateway.model import Alarm
from gateway.registry import Registry, import_dir, save
from gateway.registry.model import RegistryData, Site, SiteType
from gateway.store import Store
from tests.support.api_world import (
    HOUSE,
    HOUSE_DETECTOR,
    HOUSE_VALVE,
    PARTIAL,
    PARTIAL_DETECTOR,
    write_world,
)
from tests.support.kit_site import DETECTOR, REGULATOR, REGULATOR_VALVE, SITE, VALVES

START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
SCHEMAS = Path(__file__).parents[1] / "docs" / "schemas"


def _leak(source: str, site: str, active: bool, at: datetime) -> ConditionChanged:
    return ConditionChanged(
        "leak_high", source, site, source, active, Severity.CRITICAL, "leak.high", "gas", at
    )


def _report(device: str, at: datetime) -> ReportReceived:
    report = KitReport(
        kind=DeviceKind.DETECTOR, seq=1, event=Event.PERIODIC, detector={"lel_pct": 0.0},
        battery_mv=3000, rssi_dbm=-70,
    )  # fmt: skip
    return ReportReceived(device, report, at, 0.0)


@pytest.fixture
async def audited(tmp_path: Path) -> tuple[Store, Registry, datetime]:
    """Two days of history: the restaurant's devices all report (its detector twice: once
    two days ago, once an hour ago); the household's detector only two days ago; a leak at
    the restaurant acknowledged after 30 s and resolved after 90 s; one at the partial site
    acknowledged after 120 s and still open."""
    store = Store(tmp_path / "data" / "gasgate.db")
    store.open()
    result = import_dir(write_world(tmp_path / "registry"))
    assert result.ok, result.errors
    save(store, result, who="test")
    registry = Registry.load(store)
    clock = ManualClock(START)
    bus = Bus()
    devices = DeviceStates(bus, store, clock, lambda _valve: None)
    alarms = Alarms(bus, store, clock, "gw-audit")
    await devices.start()
    await alarms.start()

    bus.publish(_report(DETECTOR, clock.now()))
    bus.publish(_report(HOUSE_DETECTOR, clock.now()))
    bus.publish(_leak(DETECTOR, SITE, True, clock.now()))
    bus.publish(_leak(PARTIAL_DETECTOR, PARTIAL, True, clock.now()))
    await bus.join()
    rest, partial = (_open(alarms, DETECTOR), _open(alarms, PARTIAL_DETECTOR))
    clock.advance(30)
    assert isinstance(alarms.acknowledge(rest.alarm_id, "officer"), Alarm)
    bus.publish(_leak(DETECTOR, SITE, False, clock.now()))
    await bus.join()
    clock.advance(60)
    assert isinstance(alarms.resolve(rest.alarm_id, "officer"), Alarm)
    clock.advance(30)
    assert isinstance(alarms.acknowledge(partial.alarm_id, "officer"), Alarm)

    clock.jump_wall(2 * 86400)
    for device in (DETECTOR, *VALVES, REGULATOR_VALVE, REGULATOR):
        clock.advance(1000)  # past PERSIST_S: each report is stored
        bus.publish(_report(device, clock.now()))
    await bus.join()
    await devices.stop()
    await alarms.stop()
    await bus.stop()
    return store, registry, clock.now()


def _open(alarms: Alarms, source: str) -> Alarm:
    return next(a for a in alarms.open_alarms() if a.source == source)


def test_audit_figures(audited: tuple[Store, Registry, datetime]) -> None:
    store, registry, now = audited
    audit = run_audit(registry, store, now, since=START - timedelta(days=1))
    by_site = {s.site_id: s for s in audit.sites}

    rest = by_site[SITE]
    assert (rest.kit_complete, rest.missing) == (True, ())
    assert (rest.devices, rest.devices_online_24h, rest.offline_devices) == (5, 5, ())
    assert rest.past_service_life == ()
    assert (rest.alarms, rest.acknowledged, rest.resolved) == (1, 1, 1)
    assert (rest.median_ack_s, rest.median_resolve_s) == (30.0, 90.0)
    assert rest.protected

    house = by_site[HOUSE]
    assert not house.kit_complete
    assert house.missing == ("self_closing_regulator", "metal_hose")
    assert (house.devices, house.devices_online_24h) == (2, 0)  # heard 2 days ago, valve never
    assert [p.split(" ")[0] for p in house.past_service_life] == ["leak_detector", "shutoff_valve"]
    assert "2020-01-10" in house.past_service_life[0]
    assert house.cylinders_overdue == ("CYL-OLD (due 2020-01-01)",)
    assert house.alarms == 0
    assert not house.protected

    partial = by_site[PARTIAL]
    assert partial.missing == ("metal_hose", "overflow_regulator or smart_regulator")
    assert partial.offline_devices == (PARTIAL_DETECTOR, "valve-p")
    assert (partial.alarms, partial.acknowledged, partial.resolved) == (1, 1, 0)
    assert (partial.median_ack_s, partial.median_resolve_s) == (120.0, None)

    assert (audit.total.registered, audit.total.protected) == (3, 1)
    assert {k: (t.registered, t.protected) for k, t in audit.by_district.items()} == {
        "Futian": (2, 1),
        "Nanshan": (1, 0),
    }
    assert {k: (t.registered, t.protected) for k, t in audit.by_site_type.items()} == {
        "household": (1, 0),
        "restaurant": (2, 1),
    }

    nanshan = run_audit(registry, store, now, district="Nanshan")
    assert [s.site_id for s in nanshan.sites] == [PARTIAL]
    later = run_audit(registry, store, now, since=now - timedelta(days=1))
    assert sum(s.alarms for s in later.sites) == 0  # both leaks were raised two days before


def test_audit_formats(audited: tuple[Store, Registry, datetime]) -> None:
    store, registry, now = audited
    audit = run_audit(registry, store, now, since=START - timedelta(days=1))
    data = json.loads(audit.render("json"))
    assert data["total"] == {"registered": 3, "protected": 1, "ratio": pytest.approx(1 / 3)}
    rows = list(csv.DictReader(io.StringIO(audit.render("csv"))))
    assert [(r["site_id"], r["protected"]) for r in rows] == [
        (SITE, "yes"), (HOUSE, "no"), (PARTIAL, "no"),
    ]  # fmt: skip
    assert rows[1]["cylinders_overdue"] == "CYL-OLD (due 2020-01-01)"
    html = audit.render("html")
    assert "1 of 3 sites protected (33%)" in html
    assert "@media print" in html
    assert html.count("<tr>") == 1 + 4 + 1 + 3  # summary head, 2 districts + 2 types, head, sites


def test_audit_cli(audited: tuple[Store, Registry, datetime], tmp_path: Path) -> None:
    store, _, _ = audited
    store.close()
    data_dir = str(tmp_path / "data")
    answer = CliRunner().invoke(
        main, ["audit", "--data-dir", data_dir, "--format", "csv", "--district", "Futian"]
    )
    assert answer.exit_code == 0, answer.output
    rows = list(csv.DictReader(io.StringIO(answer.output)))
    assert [r["site_id"] for r in rows] == [SITE, HOUSE]
    # Run now, not at the fixture's clock: the restaurant's reports are weeks old by then.
    assert all(r["protected"] == "no" for r in rows)
    bad = CliRunner().invoke(main, ["audit", "--data-dir", data_dir, "--since", "yesterday"])
    assert bad.exit_code == 2
    assert "--since" in bad.output


def _summaries(store: Store, registry: Registry, now: datetime) -> dict[str, dict[str, Any]]:
    """The gas company's site summaries (gasco/v1) as the escalation room publishes them."""
    store.migrate(escalation_room.ROOM, escalation_room.MIGRATIONS)
    coverage = Coverage(Bus(), store, ManualClock(now), registry, valves=None, gateway_id="gw1")
    return {s["site_id"]: s for s in coverage.summaries()}


def test_the_gas_company_summary_carries_the_audit_verdict(
    audited: tuple[Store, Registry, datetime],
) -> None:
    store, registry, now = audited
    summaries = _summaries(store, registry, now)
    schema = json.loads((SCHEMAS / "gasco-site-summary.schema.json").read_text())
    for summary in summaries.values():
        jsonschema.validate(summary, schema)
    audit = run_audit(registry, store, now)
    assert {s.site_id: s.protected for s in audit.sites} == {
        k: v["protected"] for k, v in summaries.items()
    }
    assert summaries[SITE]["protected"] is True
    house = summaries[HOUSE]
    assert house["address"] == "3-401 Xili Garden"
    assert (house["lat"], house["lon"]) == (None, None)
    assert house["service"] == {
        "past_service_life": [
            {
                "component": "leak_detector",
                "device_id": HOUSE_DETECTOR,
                "model": "KD-210C",
                "expired_on": "2020-01-10",
            },
            {
                "component": "shutoff_valve",
                "device_id": HOUSE_VALVE,
                "model": "SV-25E",
                "expired_on": "2025-01-10",
            },
        ],
        "cylinders_overdue": [{"cylinder_id": "CYL-OLD", "next_inspection_due": "2020-01-01"}],
    }
    assert summaries[PARTIAL]["service"] == {"past_service_life": [], "cylinders_overdue": []}


def test_the_summary_places_a_site_the_registry_locates(tmp_path: Path) -> None:
    site = Site(
        "r-1", "Noodles", SiteType.RESTAURANT, "four_piece", "Xuhui", "1 Road", 31.19, 121.44
    )
    store = Store(tmp_path / "gasgate.db")
    store.open()
    (summary,) = _summaries(store, Registry(RegistryData(sites=(site,))), START).values()
    assert (summary["lat"], summary["lon"], summary["protected"]) == (31.19, 121.44, False)
    store.close()
