from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.clock import ManualClock
from gateway.registry import (
    Registry,
    RegistryImportError,
    current_generation,
    history,
    import_dir,
    save,
)
from gateway.registry.cli import STORE_FILE
from gateway.registry.watch import RegistryWatch
from gateway.store import Store

DATA = Path(__file__).parent / "data" / "registry"
GOOD = DATA / "good"
TODAY = date(2026, 11, 28)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "data" / STORE_FILE)
    store.open()
    yield store
    store.close()


def test_save_and_load_round_trip(store: Store) -> None:
    result = import_dir(GOOD, TODAY)
    assert Registry.load(store).sites() == ()  # before any import: empty, generation 0
    assert current_generation(store) == 0
    generation = save(store, result, who="duty-officer-7")
    loaded = Registry.load(store)
    assert loaded.data == result.data
    assert loaded.generation == generation == current_generation(store) == 1
    assert loaded.valves_for_detector("2b3c4d5e") == ("2b3c4d60",)
    [record] = history(store)
    assert (record.who, record.source, record.warnings) == ("duty-officer-7", str(GOOD), 1)
    assert record.counts["sites"] == 5
    expected = hashlib.sha256((GOOD / "sites.csv").read_bytes()).hexdigest()
    assert record.files["sites.csv"] == expected


def test_import_replaces_the_whole_registry(store: Store, tmp_path: Path) -> None:
    save(store, import_dir(GOOD, TODAY))
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    lines = (GOOD / "sites.csv").read_text().splitlines()
    (smaller / "sites.csv").write_text("\n".join(lines[:1] + lines[2:3]) + "\n")
    assert save(store, import_dir(smaller, TODAY)) == 2
    loaded = Registry.load(store)
    assert [s.site_id for s in loaded.sites()] == ["h-001"]
    assert loaded.devices() == ()
    assert loaded.cylinders("h-001") == ()
    assert [r.generation for r in history(store)] == [2, 1]


def test_saving_a_result_with_errors_is_refused(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(GOOD, bad)
    (bad / "cylinders.csv").write_text(
        "site_id,cylinder_id,capacity_kg,next_inspection_due\nr-001,CYL-0001,-50,2027-01-01\n"
    )
    result = import_dir(bad, TODAY)
    assert not result.ok
    with pytest.raises(RegistryImportError, match="1 errors, nothing imported"):
        save(store, result)
    assert current_generation(store) == 0


def test_cli_check_reports_and_exits(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["registry", "check", str(GOOD)])
    assert ok.exit_code == 0, ok.output
    assert "ok, 1 warnings" in ok.stdout
    assert "5 sites, 7 contacts, 15 components, 9 devices" in ok.stdout
    assert "sites with an incomplete kit: 2" in ok.stdout

    bad = tmp_path / "bad"
    shutil.copytree(GOOD, bad)
    text = (bad / "sites.csv").read_text().replace("two_piece,Luohu", "three_piece,Luohu")
    (bad / "sites.csv").write_text(text)
    failed = runner.invoke(main, ["registry", "check", str(bad)])
    assert failed.exit_code == 1
    assert "sites.csv:5:4: unknown kit 'three_piece'" in failed.stderr
    assert "1 errors, 1 warnings" in failed.stderr


def test_cli_import_with_an_error_imports_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "data"
    first = runner.invoke(
        main, ["registry", "import", str(GOOD), "--data-dir", str(data_dir), "--who", "ops"]
    )
    assert first.exit_code == 0, first.output
    assert "imported as generation 1" in first.stdout

    bad = tmp_path / "bad"
    shutil.copytree(GOOD, bad)
    with (bad / "components.csv").open("a") as f:
        f.write("h-002,shutoff_valve,5e6f7a8b,SV-20,2025-01-01,1a2b3c4d,\n")
    second = runner.invoke(main, ["registry", "import", str(bad), "--data-dir", str(data_dir)])
    assert second.exit_code == 1
    assert "components.csv:17:6: links to '1a2b3c4d' of another site ('r-001')" in second.stderr
    assert "nothing imported" in second.stderr

    store = Store(data_dir / STORE_FILE)
    store.open()
    try:
        assert current_generation(store) == 1
        assert Registry.load(store).data == import_dir(GOOD).data
        assert history(store)[0].who == "ops"
    finally:
        store.close()


def test_cli_show(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "data"
    runner.invoke(main, ["registry", "import", str(GOOD), "--data-dir", str(data_dir)])
    listing = runner.invoke(main, ["registry", "show", "--data-dir", str(data_dir)])
    assert listing.exit_code == 0, listing.output
    assert "generation 1" in listing.stdout
    assert "h-002\thousehold\ttwo_piece\tLuohu\tmissing self_closing_regulator" in listing.stdout
    one = runner.invoke(main, ["registry", "show", "--data-dir", str(data_dir), "--site", "r-001"])
    assert one.exit_code == 0, one.output
    assert "component shutoff_valve 1a2b3c4e SV-20 installed 2025-03-01 -> 1a2b3c4d" in one.stdout
    assert "contact Li Na +86 139 0013 9000 [en] manager" in one.stdout
    missing = runner.invoke(main, ["registry", "show", "--data-dir", str(data_dir), "--site", "x"])
    assert missing.exit_code == 1
    assert "no site 'x'" in missing.stderr


async def test_watch_swaps_in_an_import_by_another_process(store: Store, tmp_path: Path) -> None:
    save(store, import_dir(GOOD, TODAY))
    registry = Registry.load(store)
    held = registry  # what ingest and linkage hold: the same object, updated in place
    clock = ManualClock()
    watch = RegistryWatch(registry, store, clock, interval_s=5)
    await watch.start()
    try:
        assert registry.valves_for_detector("1a2b3c4d") == ("1a2b3c4e",)
        # The CLI imports through its own connection.
        smaller = tmp_path / "smaller"
        smaller.mkdir()
        lines = (GOOD / "sites.csv").read_text().splitlines()
        (smaller / "sites.csv").write_text("\n".join(lines[:1] + lines[2:3]) + "\n")
        other = Store(store.path)
        other.open()
        try:
            save(other, import_dir(smaller, TODAY))
        finally:
            other.close()
        clock.advance(4.9)
        await watch.settle()
        assert held.generation == 1  # not polled yet
        clock.advance(0.1)
        await watch.settle()
        assert held.generation == 2
        assert [s.site_id for s in held.sites()] == ["h-001"]
        assert held.valves_for_detector("1a2b3c4d") == ()
        assert held.device("1a2b3c4d") is None
        # Unchanged generation: nothing reloaded, polling goes on.
        assert not await watch.reload_if_changed()
        clock.advance(5)
        await watch.settle()
        assert watch.failures == 0
    finally:
        await watch.stop()


async def test_watch_keeps_the_old_registry_when_a_load_fails(store: Store) -> None:
    save(store, import_dir(GOOD, TODAY))
    registry = Registry.load(store)
    watch = RegistryWatch(registry, store, ManualClock(), interval_s=5)
    await watch.start()
    try:
        # A generation whose rows cannot be read (a newer gasgate's site type, say).
        with store.transaction() as db:
            db.execute("UPDATE registry_site SET site_type = 'school' WHERE site_id = 'h-002'")
            db.execute(
                "INSERT INTO registry_import (imported_at, who, source, counts, files, warnings)"
                " VALUES ('2026-11-28T12:00:00+00:00', 'x', 'y', '{}', '{}', 0)"
            )
        assert not await watch.reload_if_changed()
        assert watch.failures == 1
        assert registry.generation == 1
        assert registry.valves_for_detector("1a2b3c4d") == ("1a2b3c4e",)
    finally:
        await watch.stop()


def test_import_command_says_what_it_does_and_how_long_it_took(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["registry", "import", str(GOOD), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"checking {GOOD}: done in" in result.stderr
    assert re.search(r"saving \d+ records: done in \d+\.\d s", result.stderr)
    assert "imported as generation 1" in result.stdout  # the result itself stays on stdout
