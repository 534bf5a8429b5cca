from __future__ import annotations

import random
import time
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.registry import ComponentType, Registry, import_dir, save
from gateway.registry.files import TABLES
from gateway.registry.validate import parse_files
from gateway.store import Store

TODAY = date(2026, 11, 28)
SITES = 10_000


def write_district(directory: Path, sites: int, seed: int = 7) -> int:
    """A synthetic district of restaurants with complete four-piece kits; returns the rows."""
    rng = random.Random(seed)
    site_rows = [
        "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang"
    ]
    component_rows = ["site_id,component,device_id,model,installed_on,links,report_interval_s"]
    cylinder_rows = ["site_id,cylinder_id,capacity_kg,next_inspection_due"]
    for n in range(sites):
        site = f"s-{n:05d}"
        detector, valve, regulator = (f"{3 * n + k:08x}" for k in range(3))
        day = f"20{rng.randint(18, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        site_rows.append(
            f"{site},餐馆{n},restaurant,four_piece,区{n % 12},路{n}号,联系人,1380000{n:04d},zh"
        )
        component_rows += [
            f"{site},leak_detector,{detector},GD-1,{day},,",
            f"{site},shutoff_valve,{valve},SV-1,{day},{detector},",
            f"{site},smart_regulator,{regulator},SR-1,{day},{valve},",
            f"{site},metal_hose,,,{day},,",
        ]
        cylinder_rows.append(f"{site},c-{n},15,2027-{rng.randint(1, 12):02d}-01")
    for name, rows in (
        ("sites.csv", site_rows),
        ("components.csv", component_rows),
        ("cylinders.csv", cylinder_rows),
    ):
        (directory / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(site_rows) + len(component_rows) + len(cylinder_rows) - 3


def test_ten_thousand_sites_import(tmp_path: Path) -> None:
    rows = write_district(tmp_path, SITES)
    started = time.perf_counter()
    result = import_dir(tmp_path, TODAY)
    checked = time.perf_counter()
    assert result.ok, result.errors[:5]
    store = Store(tmp_path / "data" / "gasgate.db")
    store.open()
    try:
        save(store, result)
        saved = time.perf_counter()
        registry = Registry.load(store)
        loaded = time.perf_counter()
    finally:
        store.close()
    assert len(registry.sites()) == SITES
    assert len(registry.devices()) == 3 * SITES
    assert registry.valves_for_detector(f"{3 * 1234:08x}") == (f"{3 * 1234 + 1:08x}",)
    assert not registry.incomplete_kits()
    total = loaded - started
    # The measurement is the point: pytest -s shows it.
    print(
        f"\nregistry: {rows} rows; check {checked - started:.2f} s"
        f" ({rows / (checked - started):,.0f} rows/s), save {saved - checked:.2f} s,"
        f" load {loaded - saved:.2f} s, total {total:.2f} s"
    )
    assert total < 300  # a loose guard against something pathological, not a goal


# Tokens that reach deep into the validator: real column names and values among the noise.
TOKENS = [
    *sorted({c for t in TABLES.values() for c in t.columns}),
    *(c.value for c in ComponentType),
    "four_piece", "two_piece", "restaurant", "household", "zh", "en", "mains", "battery",
    "2025-01-01", "2099-01-01", "2025-02-30", "1a2b3c4d", "1A2B3C4D", "13800138000", "-5", "60",
    ",", ",", ",", "\n", "\n", "\r\n", '"', " ", "\x00", "李", ":", "- ", "[", "{", "&a", "*a",
]  # fmt: skip
GARBAGE = st.lists(st.sampled_from(TOKENS), max_size=120).map("".join)
FILE_NAMES = st.sampled_from([f"{t}.csv" for t in TABLES] + ["registry.yaml", "kits.yaml"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(FILE_NAMES, st.one_of(GARBAGE.map(str.encode), st.binary(max_size=200))))
def test_garbage_never_raises_only_reports(files: dict[str, bytes]) -> None:
    parsed = parse_files(files, TODAY)
    for problem in parsed.problems:
        assert problem.file in files or problem.file == "sites.csv"
        assert problem.line >= 1
        assert problem.column >= 1
        assert problem.code


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=12), max_size=11),
        max_size=8,
    )
)
def test_random_rows_under_a_real_header(rows: list[list[str]]) -> None:
    header = "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang"
    lines = [header] + [",".join(f'"{v.replace(chr(34), chr(34) * 2)}"' for v in r) for r in rows]
    parsed = parse_files({"sites.csv": "\n".join(lines).encode()}, TODAY)
    # Either every row made it, or the problems say why not.
    assert parsed.problems or len(parsed.data.sites) == sum(
        1 for r in rows if any(v.strip() for v in r)
    )


GOOD = Path(__file__).parent / "data" / "registry" / "good"
GOOD_FILES = {p.name: p.read_bytes() for p in GOOD.iterdir()}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GOOD_FILES)), st.integers(min_value=0), GARBAGE)
def test_garbage_spliced_into_a_good_import(name: str, at: int, garbage: str) -> None:
    data = GOOD_FILES[name]
    cut = at % (len(data) + 1)
    files = {**GOOD_FILES, name: data[:cut] + garbage.encode() + data[cut:]}
    parsed = parse_files(files, TODAY)
    assert all(p.line >= 1 and p.column >= 1 for p in parsed.problems)
    if parsed.ok:  # whatever got through builds a registry without raising
        Registry(parsed.data).incomplete_kits()
