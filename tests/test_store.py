from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.store import Store, StoreError

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
