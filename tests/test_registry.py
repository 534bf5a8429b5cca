from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from firmware_bridge.ksp import DeviceKind
from firmware_bridge.simulator.district import District
from gateway.registry import (
    ComponentType,
    KitStatus,
    Lang,
    Power,
    Registry,
    Severity,
    import_dir,
)
from gateway.registry.validate import parse_files

DATA = Path(__file__).parent / "data" / "registry"
GOOD = DATA / "good"
TODAY = date(2026, 11, 28)


def good_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in GOOD.iterdir()}


def edited(name: str, old: str = "", new: str = "", append: str = "") -> dict[str, bytes]:
    """The good fixture with one edit: ``old`` replaced once by ``new``, or a line appended."""
    files = good_files()
    text = files[name].decode()
    if old:
        assert old in text, old
        text = text.replace(old, new, 1)
    files[name] = (text + append + "\n" if append else text).encode()
    return files


def errors(files: dict[str, bytes]) -> list[str]:
    parsed = parse_files(files, TODAY)
    return [f"{p.file}:{p.line}:{p.column} {p.code}" for p in parsed.errors]


@pytest.fixture(scope="module")
def registry() -> Registry:
    result = import_dir(GOOD, TODAY)
    assert result.ok, result.errors
    return Registry(result.data)


def test_good_dir_imports_with_exact_counts() -> None:
    result = import_dir(GOOD, TODAY)
    assert result.ok
    assert result.counts == {
        "sites": 5,
        "contacts": 7,
        "components": 15,
        "devices": 9,
        "cylinders": 4,
        "kits": 1,
        "models": 5,
    }
    # The sheet's own "notes" column is allowed, and said so.
    assert [str(p) for p in result.warnings] == [
        "sites.csv:1:12: warning: extra column 'notes' ignored (extra_column)"
    ]
    assert set(result.files) == {
        "sites.csv",
        "components.csv",
        "cylinders.csv",
        "contacts.csv",
        "models.csv",
        "kits.yaml",
    }
    assert all(len(digest) == 64 for digest in result.files.values())


def test_device_lookup_resolves_model_and_interval(registry: Registry) -> None:
    regulator = registry.device("1a2b3c4f")
    assert regulator is not None
    assert (regulator.site_id, regulator.component, regulator.kind) == (
        "r-001",
        ComponentType.SMART_REGULATOR,
        DeviceKind.REGULATOR,
    )
    # The row's report_interval_s (120) wins over the model's (300).
    assert (regulator.model, regulator.report_interval_s, regulator.power) == (
        "SR-5",
        120,
        Power.BATTERY,
    )
    assert regulator.installed_on == date(2025, 3, 1)
    detector = registry.device("h001-det")  # MQTT-native id
    assert detector is not None
    # GD-200B is a battery model with no interval given: the battery default.
    assert (detector.report_interval_s, detector.power) == (600, Power.BATTERY)
    assert registry.device("00000000") is None
    assert len(registry.devices()) == 9


def test_links_both_ways(registry: Registry) -> None:
    assert registry.valves_for_detector("1a2b3c4d") == ("1a2b3c4e",)
    # One valve closing for two detectors.
    assert registry.valves_for_detector("2b3c4d5e") == ("2b3c4d60",)
    assert registry.valves_for_detector("2b3c4d5f") == ("2b3c4d60",)
    assert registry.valves_for_detector("h001-det") == ()
    assert registry.valve_for_regulator("1a2b3c4f") == "1a2b3c4e"
    assert registry.valve_for_regulator("1a2b3c4d") is None


def test_sites_contacts_cylinders_tags(registry: Registry) -> None:
    site = registry.site("r-001")
    assert site is not None
    assert (site.name, site.district, site.latitude, site.longitude) == (
        "Golden Wok",
        "Futian",
        22.5431,
        114.0579,
    )
    assert [s.site_id for s in registry.sites()] == ["r-001", "h-001", "r-002", "h-002", "r-003"]
    contacts = registry.contacts("r-001")
    assert [(c.name, c.lang, c.role) for c in contacts] == [
        ("Li Wei", Lang.ZH, "primary"),
        ("Li Na", Lang.EN, "manager"),
        ("Night shift", Lang.ZH, "staff"),  # empty lang: Simplified Chinese
    ]
    assert [c.cylinder_id for c in registry.cylinders("r-001")] == ["CYL-0001", "CYL-0002"]
    assert len(registry.components("r-002")) == 5
    assert registry.components("nope") == ()
    assert registry.tags("h001-det") == {
        "site_id": "h-001",
        "district": "Nanshan",
        "site_type": "household",
        "kind": "detector",
    }
    assert registry.tags("00000000") is None


def test_kit_completeness(registry: Registry) -> None:
    assert registry.kit_status("r-001") == KitStatus(True, ())
    assert registry.kit_status("h-001") == KitStatus(True, ())
    # The custom kit: a flame-failure cooker stands in for the regulator.
    assert registry.kit_status("r-002") == KitStatus(True, ())
    assert registry.kit_status("h-002") == KitStatus(False, (ComponentType.SELF_CLOSING_REGULATOR,))
    assert registry.kit_status("r-003") == KitStatus(
        False, (ComponentType.METAL_HOSE, "overflow_regulator or smart_regulator")
    )
    assert [site for site, _ in registry.incomplete_kits()] == ["h-002", "r-003"]
    assert registry.kit_status("nope") is None


def test_past_service_life_and_overdue_cylinders(registry: Registry) -> None:
    findings = registry.past_service_life(TODAY)
    # A commercial detector fitted in January 2020 ended its 3 years in January 2023; a
    # household hose of 2017 its 8 years in 2025. The household detector of 2024 is fine.
    assert [(f.site_id, f.component, f.device_id, f.expired_on) for f in findings] == [
        ("h-001", ComponentType.METAL_HOSE, None, date(2025, 6, 15)),
        ("r-003", ComponentType.LEAK_DETECTOR, "3c4d5e6f", date(2023, 1, 10)),
    ]
    assert registry.past_service_life(date(2023, 1, 9)) == ()
    assert [c.cylinder_id for c in registry.inspection_overdue(TODAY)] == ["CYL-0002"]
    # Due today is not yet overdue; the day after it is.
    assert [c.cylinder_id for c in registry.inspection_overdue(date(2026, 11, 29))] == [
        "CYL-0002",
        "CYL-0004",
    ]


def test_household_detector_lives_five_years_commercial_three() -> None:
    files = edited("components.csv", append="h-002,leak_detector,5e6f7a8b,GD-100,2022-01-01,,")
    files = {**files, "components.csv": files["components.csv"]}
    parsed = parse_files(files, TODAY)
    assert parsed.ok
    registry = Registry(parsed.data)
    household = [f for f in registry.past_service_life(date(2026, 12, 31)) if f.site_id == "h-002"]
    assert household == []
    [finding] = [f for f in registry.past_service_life(date(2027, 1, 1)) if f.site_id == "h-002"]
    assert (finding.service_life_months, finding.expired_on) == (60, date(2027, 1, 1))


def test_model_service_life_shortens_the_rule() -> None:
    # GD-200B declares 48 months, shorter than a household detector's 60.
    registry = Registry(parse_files(good_files(), TODAY).data)
    [finding] = [
        f
        for f in registry.past_service_life(date(2028, 6, 15))
        if f.site_id == "h-001" and f.component is ComponentType.LEAK_DETECTOR
    ]
    assert finding.service_life_months == 48


def test_yaml_form_is_equivalent() -> None:
    from_csv = import_dir(GOOD, TODAY)
    from_yaml = import_dir(DATA / "good_yaml", TODAY)
    assert from_yaml.ok, from_yaml.problems
    assert from_yaml.problems == ()
    assert from_yaml.data == from_csv.data


def test_unknown_model_warns_once_and_uses_the_kind_default() -> None:
    files = edited(
        "components.csv",
        append="h-002,leak_detector,5e6f7a8b,ACME-9,2025-01-01,,\n"
        "r-003,leak_detector,5e6f7a8c,ACME-9,2025-01-01,,",
    )
    parsed = parse_files(files, TODAY)
    assert parsed.ok
    [warning] = [p for p in parsed.problems if p.code == "unknown_model"]
    assert str(warning) == (
        "components.csv:17:4: warning: unknown leak_detector model 'ACME-9' (2 devices;"
        " first here): assumed mains, reporting every 60 s where the row gives no"
        " report_interval_s (unknown_model)"
    )
    device = Registry(parsed.data).device("5e6f7a8b")
    assert device is not None
    assert (device.power, device.report_interval_s) == (Power.MAINS, 60)


# --- every error kind, located -----------------------------------------------------------

APPEND = "components.csv"
CASES = {
    "unknown_kit": (
        edited("sites.csv", "household,two_piece,Luohu", "household,three_piece,Luohu"),
        ["sites.csv:5:4 unknown_kit"],
    ),
    "unknown_site_type": (
        edited("sites.csv", "Chen household,household", "Chen household,home"),
        ["sites.csv:5:3 unknown_site_type"],
    ),
    "duplicate_site": (
        edited("sites.csv", append="r-001,Again,restaurant,four_piece,X,Y,Z,13800138000,zh,,,"),
        ["sites.csv:7:1 duplicate_site"],
    ),
    "empty_site_id": (
        edited("sites.csv", append=",Nameless,restaurant,four_piece,X,Y,Z,13800138000,zh,,,"),
        ["sites.csv:7:1 empty_field"],
    ),
    "bad_site_id": (
        edited("sites.csv", append="r 9,Spaced,restaurant,four_piece,X,Y,Z,13800138000,zh,,,"),
        ["sites.csv:7:1 bad_id"],
    ),
    "bad_lang": (
        edited("sites.csv", "13900139000,,", "13900139000,fr,"),
        ["sites.csv:3:9 bad_lang"],
    ),
    "bad_phone": (
        edited("sites.csv", "13700137000", "call me"),
        ["sites.csv:5:8 bad_phone"],
    ),
    "short_phone": (
        edited("sites.csv", "13700137000", "110"),
        ["sites.csv:5:8 bad_phone"],
    ),
    "empty_address": (
        edited("sites.csv", "17 Dongmen St", ""),
        ["sites.csv:5:6 empty_field"],
    ),
    "bad_text": (
        edited("sites.csv", "17 Dongmen St", '"17 Dongmen St\nback door"'),
        ["sites.csv:5:6 bad_text"],
    ),
    "bad_location": (
        edited("sites.csv", "22.5431,114.0579", "122.5,114.0579"),
        ["sites.csv:2:10 bad_location"],
    ),
    "missing_column": (
        edited("cylinders.csv", "capacity_kg,", "capacity,"),
        ["cylinders.csv:1:5 missing_column"],
    ),
    "extra_field": (
        edited("cylinders.csv", append="h-001,CYL-0009,15,2028-01-01,surplus"),
        ["cylinders.csv:6:5 extra_field"],
    ),
    "unknown_component": (
        edited("components.csv", "h-002,metal_hose", "h-002,rubber_hose"),
        ["components.csv:14:2 unknown_component"],
    ),
    "bad_device_id": (
        edited(APPEND, append="h-002,leak_detector,bad id!,GD-100,2025-01-01,,"),
        ["components.csv:17:3 bad_device_id"],
    ),
    "missing_device_id": (
        edited(APPEND, append="h-002,leak_detector,,GD-100,2025-01-01,,"),
        ["components.csv:17:3 missing_device_id"],
    ),
    "unexpected_device_id": (
        edited(APPEND, append="h-002,self_closing_regulator,5e6f7a8b,,2025-01-01,,"),
        ["components.csv:17:3 unexpected_device_id"],
    ),
    "duplicate_device": (
        edited(APPEND, append="h-002,leak_detector,1a2b3c4d,GD-100,2025-01-01,,"),
        ["components.csv:17:3 duplicate_device"],
    ),
    "bad_date": (
        edited(
            "components.csv",
            "h-002,metal_hose,,MH-2,2025-09-01",
            "h-002,metal_hose,,MH-2,2025-02-30",
        ),
        ["components.csv:14:5 bad_date"],
    ),
    "bad_date_format": (
        edited("cylinders.csv", "2028-01-01", "01/01/2028"),
        ["cylinders.csv:4:4 bad_date"],
    ),
    "future_date": (
        edited(APPEND, append="h-002,self_closing_regulator,,,2026-11-29,,"),
        ["components.csv:17:5 future_date"],
    ),
    "unknown_site_in_components": (
        edited(APPEND, append="x-999,metal_hose,,MH-2,2025-01-01,,"),
        ["components.csv:17:1 unknown_site"],
    ),
    "unknown_site_in_cylinders": (
        edited("cylinders.csv", append="x-999,CYL-0009,15,2028-01-01"),
        ["cylinders.csv:6:1 unknown_site"],
    ),
    "unknown_site_in_contacts": (
        edited("contacts.csv", append="x-999,Nobody,13800138000,zh,owner"),
        ["contacts.csv:4:1 unknown_site"],
    ),
    "unknown_link": (
        edited(APPEND, append="h-002,shutoff_valve,5e6f7a8b,SV-20,2025-01-01,deadbeef,"),
        ["components.csv:17:6 unknown_link"],
    ),
    "cross_site_link": (
        edited(APPEND, append="h-002,shutoff_valve,5e6f7a8b,SV-20,2025-01-01,1a2b3c4d,"),
        ["components.csv:17:6 cross_site_link"],
    ),
    "valve_linked_to_a_valve": (
        edited(APPEND, append="r-001,shutoff_valve,5e6f7a8b,SV-20,2025-01-01,1a2b3c4e,"),
        ["components.csv:17:6 bad_link_target"],
    ),
    "link_not_allowed": (
        edited(APPEND, append="r-001,leak_detector,5e6f7a8b,GD-100,2025-01-01,1a2b3c4e,"),
        ["components.csv:17:6 link_not_allowed"],
    ),
    "regulator_linked_to_a_detector": (
        edited("components.csv", "SR-5,2025-03-01,1a2b3c4e", "SR-5,2025-03-01,1a2b3c4d"),
        ["components.csv:5:6 bad_link_target"],
    ),
    "regulator_with_two_valves": (
        edited("components.csv", "SR-5,2025-03-01,1a2b3c4e", "SR-5,2025-03-01,1a2b3c4e 3c4d5e70"),
        ["components.csv:5:6 too_many_links", "components.csv:5:6 cross_site_link"],
    ),
    "model_mismatch": (
        edited(APPEND, append="r-001,leak_detector,5e6f7a8b,SV-20,2025-01-01,,"),
        ["components.csv:17:4 model_mismatch"],
    ),
    "bad_interval": (
        edited("components.csv", "1a2b3c4e,120", "1a2b3c4e,0"),
        ["components.csv:5:7 bad_interval"],
    ),
    "negative_capacity": (
        edited("cylinders.csv", "h-001,CYL-0003,15", "h-001,CYL-0003,-15"),
        ["cylinders.csv:4:3 bad_capacity"],
    ),
    "duplicate_cylinder": (
        edited("cylinders.csv", append="h-001,CYL-0001,15,2028-01-01"),
        ["cylinders.csv:6:2 duplicate_cylinder"],
    ),
    "bad_power": (
        edited("models.csv", "GD-100,leak_detector,mains", "GD-100,leak_detector,solar"),
        ["models.csv:2:3 bad_power"],
    ),
    "not_utf8": (
        {
            **good_files(),
            "contacts.csv": "site_id,name,phone\nr-001,李娜,13900139000\n".encode("gbk"),
        },
        ["contacts.csv:2:7 bad_encoding"],
    ),
    "bad_csv": (
        edited("contacts.csv", append='r-001,"Li "Na",13900139000,zh,'),
        ["contacts.csv:4:1 bad_csv"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_error_is_located(case: str) -> None:
    files, expected = CASES[case]
    assert errors(files) == expected


def test_problem_prints_as_file_line_column() -> None:
    parsed = parse_files(
        edited("sites.csv", "household,two_piece,Luohu", "household,three_piece,Luohu"), TODAY
    )
    assert [str(p) for p in parsed.errors] == [
        "sites.csv:5:4: unknown kit 'three_piece' (known: four_piece, two_piece,"
        " city_restaurant) (unknown_kit)"
    ]
    assert not parsed.ok


def test_bad_site_row_does_not_cascade() -> None:
    # Its components and cylinders are not reported again as "unknown site".
    files = edited("sites.csv", "restaurant,four_piece,Futian", "restaurant,three_piece,Futian")
    assert errors(files) == ["sites.csv:2:4 unknown_kit"]


def test_every_problem_reported_at_once() -> None:
    files = edited("sites.csv", "13700137000", "call me")
    files["cylinders.csv"] = edited("cylinders.csv", "15,", "-15,")["cylinders.csv"]
    assert errors(files) == ["cylinders.csv:4:3 bad_capacity", "sites.csv:5:8 bad_phone"]


def test_missing_sites_file() -> None:
    files = good_files()
    del files["sites.csv"]
    assert errors(files)[0] == "sites.csv:1:1 missing_file"


def test_csv_and_yaml_together_are_ambiguous() -> None:
    files = {**good_files(), "registry.yaml": (DATA / "good_yaml" / "registry.yaml").read_bytes()}
    assert errors(files) == ["registry.yaml:1:1 ambiguous_source"]


def test_yaml_errors_are_located_at_the_node() -> None:
    text = (DATA / "good_yaml" / "registry.yaml").read_text()
    lines = text.splitlines()
    line = lines.index("  - site_id: h-002") + 4  # its kit: line, 1-based
    assert lines[line - 1] == "    kit: two_piece"
    lines[line - 1] = "    kit: three_piece"
    bad = "\n".join(lines)
    files = {"registry.yaml": bad.encode(), "kits.yaml": (GOOD / "kits.yaml").read_bytes()}
    assert errors(files) == [f"registry.yaml:{line}:10 unknown_kit"]


def test_yaml_syntax_error_is_located() -> None:
    files = {"registry.yaml": b"sites:\n  - site_id: a\n    name: [unclosed\n"}
    [problem] = parse_files(files, TODAY).errors
    assert (problem.file, problem.code, problem.line) == ("registry.yaml", "bad_yaml", 4)


@pytest.mark.parametrize("name", ["registry.yaml", "kits.yaml"])
def test_deeply_nested_yaml_is_a_problem_not_a_crash(name: str) -> None:
    files = {"sites.csv": (GOOD / "sites.csv").read_bytes(), name: b"[" * 1_500}
    if name == "registry.yaml":
        del files["sites.csv"]
    assert f"{name}:1:1 bad_yaml" in errors(files)


def test_custom_kit_file_errors() -> None:
    kits = (
        b"kits:\n"
        b"  four_piece:\n"
        b"    components: [leak_detector]\n"
        b"  city_b:\n"
        b"    components:\n"
        b"      - leak_detector\n"
        b"      - [gas_meter, metal_hose]\n"
    )
    files = {**good_files(), "kits.yaml": kits}
    found = errors(files)
    # The built-in cannot be redefined; an unknown component is located; and since the
    # file's kits are unusable, the sites using city_restaurant name an unknown kit.
    assert found == [
        "kits.yaml:2:3 builtin_kit",
        "kits.yaml:7:10 unknown_component",
        "sites.csv:4:4 unknown_kit",
    ]


def test_warnings_do_not_block() -> None:
    files = edited(APPEND, append="h-002,shutoff_valve,5E6F7A8B,SV-20,2025-01-01,,")
    parsed = parse_files(files, TODAY)
    assert parsed.ok
    assert sorted(p.code for p in parsed.problems if p.severity is Severity.WARNING) == [
        "extra_column",
        "unlinked_valve",
        "uppercase_radio_id",
    ]


def test_the_simulators_district_imports(tmp_path: Path) -> None:
    district = District.generate(restaurants=12, households=20, seed=5)
    district.write_registry(tmp_path)
    result = import_dir(tmp_path, TODAY)
    assert result.ok, result.errors
    registry = Registry(result.data)
    assert [s.site_id for s in registry.sites()] == [s.site_id for s in district.sites]
    for site in district.sites:
        for device_id in site.devices:
            info = registry.device(device_id)
            assert info is not None, device_id
            assert info.site_id == site.site_id


def test_spreadsheet_exports_crlf_and_bom_import_the_same() -> None:
    files = {
        name: b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n") if name.endswith(".csv") else data
        for name, data in good_files().items()
    }
    parsed = parse_files(files, TODAY)
    assert parsed.ok, parsed.errors
    assert parsed.data == parse_files(good_files(), TODAY).data


def test_line_numbers_are_physical_after_a_multi_line_field() -> None:
    # A quoted line break in the (ignored) notes column: the next record starts two lines on.
    files = edited("sites.csv", "22.5431,114.0579,back kitchen", '22.5431,114.0579,"back\nkitchen"')
    files = {**files, "sites.csv": files["sites.csv"].replace(b"13900139000,,", b"13900139000,fr,")}
    assert errors(files) == ["sites.csv:4:9 bad_lang"]


def test_an_unreadable_sites_file_does_not_cascade() -> None:
    files = edited(
        "sites.csv", "site_id,name,site_type,kit,district,", "site_id,name,site_type,kit,area,"
    )
    assert errors(files) == ["sites.csv:1:13 missing_column"]
    files = edited("sites.csv", "Chen household", '"Chen household')  # never closed
    assert errors(files) == ["sites.csv:5:1 bad_csv"]


def test_a_trailing_comma_on_the_header_is_no_column() -> None:
    files = edited("cylinders.csv", "next_inspection_due", "next_inspection_due,")
    assert [p.file for p in parse_files(files, TODAY).problems] == ["sites.csv"]  # only "notes"


def test_link_errors_show_in_the_same_pass_as_the_rows_own() -> None:
    # A valve with a bad date links across sites: both are reported at once.
    files = edited(APPEND, append="h-002,shutoff_valve,5e6f7a8b,SV-20,2025-02-30,1a2b3c4d,")
    assert errors(files) == ["components.csv:17:5 bad_date", "components.csv:17:6 cross_site_link"]
    # The detector it links to has an error of its own: the cross-site link is still reported.
    files = edited(
        APPEND,
        append="r-001,leak_detector,9a9a9a9a,GD-100,2099-01-01,,\n"
        "h-002,shutoff_valve,5e6f7a8b,SV-20,2025-01-01,9a9a9a9a,",
    )
    assert errors(files) == [
        "components.csv:17:5 future_date",
        "components.csv:18:6 cross_site_link",
    ]
