"""Every Grafana panel's InfluxQL against a real InfluxDB 1.6.7 holding the gateway's own lines.

The data is a half hour at three sites, encoded by gateway.telemetry's schema and line protocol
and loaded through InfluxDB's v1 /write. Each dashboard query is expanded the way Grafana does
($timeFilter, $__interval, template variables regex-escaped) and run; an InfluxDB error, or a
panel without an expectation here, fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.contract import KitReport
from gateway.telemetry import AlarmTransitionPoint, DeviceTags, Point, SiteTags, encode
from gateway.telemetry.schema import alarm_point, gateway_point, report_point, site_summary_point
from tests.support.services import InfluxDB1

DB = "gasgate"
DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards" / "gasgate"
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
MINUTES = 30

S1 = SiteTags("site-1", "chaoyang", "restaurant")
S2 = SiteTags("site 2,=x/(é)", "海淀", "household")  # separators and regex specials on purpose
S3 = SiteTags("s3", "chaoyang", "household")
D1 = DeviceTags(S1, "detector", "1a2b3c4d")
V1 = DeviceTags(S1, "valve", "00c0ffee")
R1 = DeviceTags(S1, "regulator", "0badf00d")
D2 = DeviceTags(S2, "detector", "2b3c4d5e")
V2 = DeviceTags(S2, "valve", "00beef00")
D3 = DeviceTags(S3, "detector", "3c4d5e6f")
DEVICES = [D1, V1, R1, D2, V2, D3]
BATTERY = {D1: 2950, V1: 3600, R1: 3100, D2: 3000, V2: 3500, D3: 2400}
RSSI = {D1: -70, V1: -60, R1: -75, D2: -95, V2: -88, D3: -80}


def lel(device: DeviceTags, minute: int) -> float:
    if device is D1:
        return 31.5 if 10 <= minute < 13 else 2.0
    return 1.0 if device is D2 else 0.5


def body(device: DeviceTags, minute: int) -> dict[str, Any]:
    if device.kind == "detector":
        flags = ["alarm_low"] * (lel(device, minute) > 20) + ["low_battery"] * (device is D3)
        return {"lel_pct": lel(device, minute), "flags": flags}
    if device.kind == "valve":
        closed = device is V1 and minute >= 10
        return {
            "state": "closed" if closed else "open",
            "cause": "linked_alarm" if closed else "none",
        }
    tripped = minute >= 20
    return {
        "pressure_pa": 0 if tripped else 2800,
        "flags": ["overflow_tripped", "self_closed"] if tripped else [],
    }


def transition(
    n: int, site: SiteTags, device: str, kind: str, severity: str, states: str, minute: int
) -> AlarmTransitionPoint:
    before, after = states.split(">")
    return AlarmTransitionPoint(
        f"gw1-{n}", site, device, kind, severity, before, after, T0 + timedelta(minutes=minute)
    )


def points() -> list[Point]:
    out: list[Point] = []
    for minute in range(MINUTES):
        for k, device in enumerate(DEVICES):
            report = KitReport.model_validate(
                {
                    "kind": device.kind,
                    "seq": minute,
                    "event": "periodic",
                    "ts": (T0 + timedelta(minutes=minute, seconds=k - 3)).isoformat(),
                    "battery_mv": BATTERY[device],
                    "rssi_dbm": RSSI[device],
                    device.kind: body(device, minute),
                }
            )
            out.append(report_point(report, T0 + timedelta(minutes=minute, seconds=k), device))
        out.append(
            gateway_point(
                "gw1",
                T0 + timedelta(minutes=minute, seconds=30),
                {
                    "devices_online": 5,
                    "devices_offline": 1,
                    "telemetry_spooled": minute * 10,
                    "telemetry_dropped": 0,
                },
            )
        )
    for minute in range(0, MINUTES, 5):
        at = T0 + timedelta(minutes=minute, seconds=40)
        open_s1 = (minute >= 10) + (minute >= 20)
        out.append(
            site_summary_point(
                S1, at, kit_complete=True, devices_online=3, devices_offline=0, open_alarms=open_s1
            )
        )
        out.append(
            site_summary_point(
                S2, at, kit_complete=False, devices_online=1, devices_offline=1, open_alarms=0
            )
        )
        out.append(
            site_summary_point(
                S3,
                at,
                kit_complete=True,
                devices_online=1,
                devices_offline=0,
                open_alarms=int(minute >= 5),
            )
        )
    out += [
        alarm_point(
            transition(1, S1, D1.device_id, "gas_leak", "critical", "normal>unack_active", 10)
        ),
        alarm_point(
            transition(1, S1, D1.device_id, "gas_leak", "critical", "unack_active>ack_active", 12)
        ),
        alarm_point(
            transition(2, S3, D3.device_id, "low_battery", "low", "normal>unack_active", 5)
        ),
        alarm_point(transition(3, S1, R1.device_id, "overflow", "high", "normal>unack_active", 20)),
    ]
    return out


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path_factory.mktemp("influxdb")).running() as server:
        server.query(f'CREATE DATABASE "{DB}"')
        server.write(DB, "\n".join(encode(p) for p in points()))
        yield server


# --- Grafana's expansion -----------------------------------------------------------------------

FROM_MS = int(T0.timestamp() * 1000)
TO_MS = FROM_MS + MINUTES * 60_000 - 1
INTERVAL = "1m"
MINUTE_VALUES = range(MINUTES)


def grafana_regex(values: list[str]) -> str:
    """Grafana's InfluxDB formatting of a multi/all variable inside ``=~ /^$var$/``."""
    escaped = [re.sub(r"[\\^$*+?.()|\[\]{}/]", r"\\\g<0>", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(query: str, variables: dict[str, list[str]]) -> str:
    text = query.replace("$timeFilter", f"time >= {FROM_MS}ms and time <= {TO_MS}ms")
    text = text.replace("$__interval", INTERVAL)
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${name}", grafana_regex(variables[name]))
    assert not re.search(r"\$[A-Za-z_]", text), f"unexpanded macro in {text}"
    return text


def run(influxdb: InfluxDB1, query: str) -> list[dict[str, Any]]:
    answer = influxdb.query(query, db=DB)
    results: list[dict[str, Any]] = answer["results"]  # type: ignore[assignment]
    assert len(results) == 1
    assert "error" not in results[0], f"InfluxDB refused {query}: {results[0]['error']}"
    series: list[dict[str, Any]] = results[0].get("series", [])
    return series


def by_tags(series: list[dict[str, Any]], column: int = 1) -> dict[tuple[str, ...], list[Any]]:
    """Tag values (sorted by key) → one column's values, for comparisons."""
    return {
        tuple(v for _, v in sorted(s.get("tags", {}).items())): [row[column] for row in s["values"]]
        for s in series
    }


def rows(series: list[dict[str, Any]]) -> list[list[Any]]:
    """All rows without the time column (a single untagged series)."""
    assert len(series) <= 1
    return [row[1:] for s in series for row in s["values"]]


def tagged_rows(series: list[dict[str, Any]]) -> dict[tuple[str, ...], list[list[Any]]]:
    """Tag values (sorted by key) → rows without the time column."""
    return {
        tuple(v for _, v in sorted(s.get("tags", {}).items())): [list(r[1:]) for r in s["values"]]
        for s in series
    }


def minutes(value: Callable[[int], float]) -> list[float]:
    return [value(m) for m in MINUTE_VALUES]


def load(name: str) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return dashboard


def resolve(
    influxdb: InfluxDB1, dashboard: dict[str, Any], pick: dict[str, str]
) -> dict[str, list[str]]:
    """Run each template variable's query in order; a variable not picked is "All"."""
    chosen: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        series = run(influxdb, expand(var["query"], chosen))
        options = [row[1] for s in series for row in s["values"]]
        assert options, f"variable {var['name']} has no values"
        if var["name"] in pick:
            assert pick[var["name"]] in options
            chosen[var["name"]] = [pick[var["name"]]]
        else:
            assert var["includeAll"], f"{var['name']} must be picked"
            chosen[var["name"]] = options
    return chosen


Check = Callable[[list[dict[str, Any]]], None]


def equals(expected: object, view: Callable[[list[dict[str, Any]]], object] = by_tags) -> Check:
    def check(series: list[dict[str, Any]]) -> None:
        assert view(series) == expected

    return check


def d(tags: DeviceTags) -> tuple[str]:
    return (tags.device_id,)


SITE_1: dict[str, Check] = {
    "Gas per detector": equals({d(D1): minutes(lambda m: lel(D1, m))}),
    "Valve state": equals({d(V1): minutes(lambda m: int(m >= 10))}),
    "Valves now": equals({d(V1): [["closed", "linked_alarm"]]}, tagged_rows),
    "Regulator outlet pressure": equals({d(R1): minutes(lambda m: 0 if m >= 20 else 2800)}),
    "Regulator trips": equals({d(R1): minutes(lambda m: [int(m >= 20)] * 2)}, tagged_rows),
    "Battery": equals({d(t): minutes(lambda m, t=t: BATTERY[t]) for t in (D1, V1, R1)}),
    "Radio signal (RSSI)": equals({d(t): minutes(lambda m, t=t: RSSI[t]) for t in (D1, V1, R1)}),
    "annotation: Alarm transitions": equals(
        [
            ["unack_active", "gw1-1", "gas_leak", "critical"],
            ["ack_active", "gw1-1", "gas_leak", "critical"],
            ["unack_active", "gw1-3", "overflow", "high"],
        ],
        rows,
    ),
}
SITE_2: dict[str, Check] = {
    "Gas per detector": equals({d(D2): minutes(lambda m: 1.0)}),
    "Valve state": equals({d(V2): minutes(lambda m: 0)}),
    "Valves now": equals({d(V2): [["open", "none"]]}, tagged_rows),
    "Regulator outlet pressure": equals({}),
    "Regulator trips": equals({}),
    "Battery": equals({d(t): minutes(lambda m, t=t: BATTERY[t]) for t in (D2, V2)}),
    "Radio signal (RSSI)": equals({d(t): minutes(lambda m, t=t: RSSI[t]) for t in (D2, V2)}),
    "annotation: Alarm transitions": equals([], rows),
}
FLEET_ALL: dict[str, Check] = {
    "Devices online": equals([[5]], rows),
    "Devices offline": equals([[1]], rows),
    "Devices online / offline": equals(
        {("gw1",): minutes(lambda m: [5, 1])},
        tagged_rows,
    ),
    "Low batteries": equals({("3c4d5e6f", "detector", "s3"): [2400]}),
    "Weakest links": equals(
        sorted((RSSI[t], t.device_id) for t in DEVICES)[:10],
        lambda s: sorted(tuple(r) for r in rows(s)),
    ),
    "Alarms raised per district": equals({("chaoyang",): [3]}),
    "Telemetry spool": equals(
        {("gw1",): minutes(lambda m: [m * 10, 0])},
        tagged_rows,
    ),
}
FLEET_HAIDIAN: dict[str, Check] = {
    "Devices online": equals([[1]], rows),
    "Devices offline": equals([[1]], rows),
    "Devices online / offline": equals(
        {("gw1",): minutes(lambda m: [5, 1])},  # the gateway's own counts: all districts
        tagged_rows,
    ),
    "Low batteries": equals({}),
    "Weakest links": equals(
        [(-95, "2b3c4d5e"), (-88, "00beef00")], lambda s: sorted(tuple(r) for r in rows(s))
    ),
    "Alarms raised per district": equals({}),
    "Telemetry spool": equals(
        {("gw1",): minutes(lambda m: [m * 10, 0])},
        tagged_rows,
    ),
}
COVERAGE_ALL: dict[str, Check] = {
    "Sites with a complete kit": equals([[pytest.approx(200 / 3)]], rows),
    "Sites fully online": equals([[2]], rows),
    "Open alarms": equals([[3]], rows),
    "Coverage by district": equals(
        {("chaoyang",): [[2, 2]], ("海淀",): [[0, 1]]},
        tagged_rows,
    ),
    "Coverage by site type": equals(
        {("household",): [[1, 2]], ("restaurant",): [[1, 1]]},
        tagged_rows,
    ),
    "Sites with gaps": equals({("海淀", S2.site_id, "household"): [[0, 1, 0]]}, tagged_rows),
}
COVERAGE_RESTAURANTS: dict[str, Check] = {
    "Sites with a complete kit": equals([[100]], rows),
    "Sites fully online": equals([[1]], rows),
    "Open alarms": equals([[2]], rows),
    "Coverage by district": equals(
        {("chaoyang",): [[1, 1]]},
        tagged_rows,
    ),
    "Coverage by site type": equals(
        {("restaurant",): [[1, 1]]},
        tagged_rows,
    ),
    "Sites with gaps": equals({}),
}

CASES = [
    ("site", {"site": S1.site_id}, SITE_1),
    ("site", {"district": S2.district, "site": S2.site_id}, SITE_2),
    ("fleet", {}, FLEET_ALL),
    ("fleet", {"district": S2.district}, FLEET_HAIDIAN),
    ("coverage", {}, COVERAGE_ALL),
    ("coverage", {"site_type": "restaurant"}, COVERAGE_RESTAURANTS),
]


@pytest.mark.parametrize(
    ("name", "pick", "checks"), CASES, ids=lambda x: x if isinstance(x, str) else None
)
def test_every_panel_returns_the_expected_series(influxdb, name, pick, checks):
    dashboard = load(name)
    variables = resolve(influxdb, dashboard, pick)
    queries = {p["title"]: t["query"] for p in dashboard["panels"] for t in p["targets"]}
    queries |= {f"annotation: {a['name']}": a["query"] for a in dashboard["annotations"]["list"]}
    assert set(queries) == set(checks), "every panel needs an expectation here"
    for title, query in queries.items():
        series = run(influxdb, expand(query, variables))
        try:
            checks[title](series)
        except AssertionError as exc:
            raise AssertionError(f"{name} / {title}: {series}") from exc


def test_the_variables_offer_every_site_district_and_type(influxdb):
    assert resolve(influxdb, load("site"), {"site": "s3"})["district"] == ["chaoyang", "海淀"]
    assert resolve(influxdb, load("coverage"), {})["site_type"] == ["household", "restaurant"]
    site_options = run(
        influxdb, expand(load("site")["templating"]["list"][1]["query"], {"district": ["海淀"]})
    )
    assert [row[1] for s in site_options for row in s["values"]] == [S2.site_id]


NASTY = [
    "a\\b",
    "ends\\",
    'q"uote',
    "x,y=z w",
    "new\nline",
    "#hash",
    "é中",
    "/^(re|gex)$/",
    "'quote'",
]


def test_any_name_reads_back_from_a_real_influxdb(influxdb):
    influxdb.query('CREATE DATABASE "nasty"')
    lines = [
        encode(Point("kit_report", {"site_id": v}, {"note": v, "n": i}, i))
        for i, v in enumerate(NASTY)
    ]
    influxdb.write("nasty", "\n".join(lines))
    answer = influxdb.query('SELECT "n", "note", "site_id" FROM "kit_report"', db="nasty")
    got = [row[1:] for row in answer["results"][0]["series"][0]["values"]]  # type: ignore[index]
    clean = [v.replace("\\", "\uff3c").replace("\n", "\ufffd") for v in NASTY]
    assert got == [[i, v.replace("\n", "\ufffd"), clean[i]] for i, v in enumerate(NASTY)]


def test_the_deployment_provisions_these_dashboards_and_their_datasource():
    """docker-compose.yml and deploy/grafana provision Grafana; the dashboards must match them."""
    repo = DASHBOARDS.parents[1]
    grafana = repo / "deploy" / "grafana" / "provisioning"
    [source] = yaml.safe_load((grafana / "datasources/gasgate.yaml").read_text())["datasources"]
    assert source["type"] == "influxdb"
    [provider] = yaml.safe_load((grafana / "dashboards/gasgate.yaml").read_text())["providers"]
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    assert (
        f"./dashboards:{provider['options']['path']}:ro"
        in compose["services"]["grafana"]["volumes"]
    )
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        used = [p["datasource"] for p in dashboard["panels"]]
        used += [t["datasource"] for p in dashboard["panels"] for t in p["targets"]]
        used += [v["datasource"] for v in dashboard["templating"]["list"]]
        used += [a["datasource"] for a in dashboard["annotations"]["list"]]
        assert {u["uid"] for u in used} == {source["uid"]}, path.name
        assert all(t["rawQuery"] for p in dashboard["panels"] for t in p["targets"])
    assert len(uids) == len(list(DASHBOARDS.glob("*.json"))) == 3
