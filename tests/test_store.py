from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.store import DISK_RETRY_S, NAG_S, Store, StoreError, StoreWatch
from tests.support.disk import fill, remount, small_tmpfs

V1 = "CREATE TABLE thing (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
V2 = "ALTER TABLE thing ADD COLUMN note TEXT;\nCREATE INDEX thing_name ON thing (name);"


def test_migrations_apply_once_and_persist(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate("things", [V1])
    with store.transaction() as db:
        db.execute("INSERT INTO thing (name) VALUES ('a')")
    store.close()

    store.open()
    store.migrate("things", [V1, V2])  # only V2 runs: V1 again would fail on CREATE TABLE
    assert [tuple(r) for r in store.db.execute("SELECT name, note FROM thing")] == [("a", None)]
    store.close()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate("things", [V1])
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO thing (name) VALUES ('kept?')")
        db.execute("INSERT INTO thing (name) VALUES (NULL)")
    assert store.db.execute("SELECT count(*) FROM thing").fetchone()[0] == 0


def test_newer_schema_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate("things", [V1, V2])
    with pytest.raises(StoreError, match="newer than this gasgate"):
        store.migrate("things", [V1])


def synchronous(store: Store) -> int:
    level: int = store.db.execute("PRAGMA synchronous").fetchone()[0]
    return level


def test_a_transaction_not_durable_skips_only_its_own_fsync(tmp_path: Path) -> None:
    full, normal = 2, 1
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate("things", [V1])
    with store.transaction(durable=False) as db:
        assert synchronous(store) == normal
        db.execute("INSERT INTO thing (name) VALUES ('re-derivable')")
    assert synchronous(store) == full  # the next durable commit waits for the disk again
    with pytest.raises(sqlite3.IntegrityError), store.transaction(durable=False) as db:
        db.execute("INSERT INTO thing (name) VALUES (NULL)")
    assert synchronous(store) == full
    store.close()
    store.open()  # committed, even if not synced: it survives the process
    assert store.db.execute("SELECT name FROM thing").fetchall()[0][0] == "re-derivable"
    store.close()


# --- a disk that refuses writes: degraded to memory, back to disk when it can ---------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "data") as mount:
        yield mount


def on_disk(path: Path) -> list[str]:
    """The names in ``thing`` as a separate reader of the disk file sees them (on a full disk,
    where a reader cannot make its shared-memory file, as the file alone says)."""
    for query in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"file:{path}?{query}", uri=True)
        try:
            return [r[0] for r in db.execute("SELECT name FROM thing ORDER BY id")]
        except sqlite3.OperationalError:
            continue
        finally:
            db.close()
    raise AssertionError(f"{path}: unreadable")


def first_run(path: Path) -> None:
    """A store with one row, closed cleanly (its write-ahead log folded in and removed)."""
    store = Store(path)
    store.open()
    store.migrate("things", [V1])
    with store.transaction() as db:
        db.execute("INSERT INTO thing (name) VALUES ('before')")
    store.close()


def add(store: Store, name: str) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO thing (name) VALUES (?)", (name,))


def names(store: Store) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT name FROM thing ORDER BY id")]


def test_a_full_disk_at_open_degrades_to_a_memory_copy_until_space_returns(
    small_fs: Path,
) -> None:
    path = small_fs / "gasgate.db"
    first_run(path)
    ballast = fill(small_fs)

    store = Store(path, fallback=True)
    store.open()  # opening and reading work on a full disk; the probe write does not
    assert store.degraded is not None
    assert "full" in (store.problem or ""), store.problem
    store.migrate("things", [V1])
    add(store, "while full")
    assert names(store) == ["before", "while full"]
    assert on_disk(path) == ["before"]
    assert store.try_disk() is False
    assert "still refuses" in (store.problem or "")

    ballast.unlink()
    assert store.try_disk() is True
    assert store.degraded is None
    assert store.problem is None
    assert on_disk(path) == ["before", "while full"]
    add(store, "after")  # on disk again, in write-ahead-log mode
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert on_disk(path) == ["before", "while full", "after"]
    store.close()


def test_a_read_only_disk_degrades_the_gateway_and_stops_a_tool(small_fs: Path) -> None:
    path = small_fs / "gasgate.db"
    first_run(path)
    remount(small_fs, "ro")
    try:
        with pytest.raises(StoreError, match="cannot open"):
            Store(path).open()  # a tool must not report done what is not on disk

        store = Store(path, fallback=True)
        store.open()
        assert "readonly" in (store.degraded or "") or "open" in (store.degraded or "")
        add(store, "while read-only")
        assert store.try_disk() is False
    finally:
        remount(small_fs, "rw")
    assert store.try_disk() is True
    assert on_disk(path) == ["before", "while read-only"]
    store.close()


def test_a_migration_the_full_disk_refuses_degrades_the_store(small_fs: Path) -> None:
    path = small_fs / "gasgate.db"
    store = Store(path, fallback=True)
    store.open()
    assert store.degraded is None
    fill(small_fs)  # after the open: the first migration is the first write refused
    store.migrate("things", [V1])
    assert "things" in (store.degraded or "")
    add(store, "in memory")
    assert names(store) == ["in memory"]
    store.close()


def test_a_failed_commit_is_the_stores_problem_until_one_succeeds(small_fs: Path) -> None:
    store = Store(small_fs / "gasgate.db")
    store.open()
    store.migrate("things", [V1])
    add(store, "a")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ballast = fill(small_fs)
    with pytest.raises(StoreError, match="full"):
        add(store, "b" * 100_000)
    assert "full" in (store.problem or ""), store.problem
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO thing (name) VALUES (NULL)")  # a bad statement: not the disk
    assert "full" in (store.problem or "")
    ballast.unlink()
    add(store, "c")
    assert store.problem is None
    assert names(store) == ["a", "c"]
    store.close()


def test_the_watch_retries_the_disk_and_says_critical_every_minute(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_fs / "gasgate.db"
    first_run(path)
    ballast = fill(small_fs)
    store = Store(path, fallback=True)
    store.open()
    clock = ManualClock()
    watch = StoreWatch(store, clock, lambda: "2 open alarm(s) in memory")
    caplog.set_level(logging.CRITICAL, "gateway.store")
    caplog.clear()

    def nags() -> int:
        return sum("NOT healthy" in r.getMessage() for r in caplog.records)

    asyncio.run(watch.start())
    assert nags() == 1
    assert "2 open alarm(s) in memory" in caplog.records[-1].getMessage()
    clock.advance(NAG_S - 1)
    assert nags() == 1
    clock.advance(DISK_RETRY_S + 1)
    assert nags() == 2
    add(store, "held")
    ballast.unlink()
    clock.advance(DISK_RETRY_S)
    assert store.degraded is None
    assert on_disk(path) == ["before", "held"]
    clock.advance(3 * NAG_S)
    assert nags() == 2
    asyncio.run(watch.stop())
    store.close()


def test_a_degraded_store_tries_the_disk_once_more_on_close(small_fs: Path) -> None:
    path = small_fs / "gasgate.db"
    first_run(path)
    ballast = fill(small_fs)
    store = Store(path, fallback=True)
    store.open()
    add(store, "held")
    ballast.unlink()
    store.close()
    assert on_disk(path) == ["before", "held"]
