"""central/db.py: numbered migrations applied once, under a lock; the pool; NOTIFY payloads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from central import db
from central.cli import central


def test_upgrade_applies_every_migration_once(pg_dsn: str) -> None:
    known = [m.version for m in db.migrations()]
    assert known[0] == 1
    assert known == sorted(known)
    assert db.upgrade(pg_dsn) == known
    assert db.upgrade(pg_dsn) == []
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        assert rows[0] == (1, "init")
        assert conn.execute("SELECT count(*) FROM incidents").fetchone() == (0,)


def test_instances_upgrading_at_once_apply_each_migration_once(pg_dsn: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(db.upgrade, [pg_dsn] * 4))
    assert sorted(v for r in results for v in r) == [m.version for m in db.migrations()]


def test_a_database_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    db.upgrade(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(db.SchemaError, match="9999, newer than this gasgate knows"):
        db.upgrade(pg_dsn)
    result = CliRunner().invoke(central, ["db", "status", "--db", pg_dsn])
    assert result.exit_code == 1
    assert "newer than this gasgate knows" in result.output


def test_cli_upgrade_and_status(pg_dsn: str) -> None:
    runner = CliRunner()
    first = runner.invoke(central, ["db", "status"], env={db.DB_ENV: pg_dsn})
    assert first.exit_code == 0, first.output
    assert "0001_init  pending" in first.output
    applied = runner.invoke(central, ["db", "upgrade", "--db", pg_dsn])
    assert applied.exit_code == 0
    assert "applied 0001_init" in applied.output
    again = runner.invoke(central, ["db", "upgrade", "--db", pg_dsn])
    assert again.exit_code == 0
    assert "up to date" in again.output
    after = runner.invoke(central, ["db", "status", "--db", pg_dsn])
    assert "0001_init  applied" in after.output
    assert "0 pending" in after.output


async def test_pool_is_open_and_answers(pg_dsn: str) -> None:
    db.upgrade(pg_dsn)
    pool = await db.open_pool(pg_dsn, min_size=1, max_size=2)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM gateways")
            assert await cur.fetchone() == (0,)
    finally:
        await pool.close()


async def test_notify_is_delivered_on_commit(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {db.CHANNEL}")
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await db.notify(conn, incidents=[1, 2], gateways=["gw1"], commands=["c-1"])
            await conn.commit()
        got = [n async for n in listener.notifies(timeout=2, stop_after=1)]
    assert json.loads(got[0].payload) == {
        "incidents": [1, 2],
        "gateways": ["gw1"],
        "commands": ["c-1"],
    }


ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=60)


@given(
    st.lists(st.integers(1, 2**62), max_size=600),
    st.lists(ids, max_size=300),
    st.lists(ids, max_size=300),
    st.integers(200, 7900),
)
def test_notify_payloads_are_small_and_say_everything(
    incidents: list[int], gateways: list[str], commands: list[str], limit: int
) -> None:
    payloads = db.notify_payloads(incidents, gateways, commands, limit=limit)
    told: dict[str, list[object]] = {"incidents": [], "gateways": [], "commands": []}
    for p in payloads:
        assert len(p.encode()) <= limit
        for kind, items in json.loads(p).items():
            told[kind] += items
    assert told["incidents"] == list(dict.fromkeys(incidents))
    fits = [g for g in dict.fromkeys(gateways) if len(json.dumps(g).encode()) + 60 < limit]
    assert [g for g in told["gateways"] if g in fits] == fits
    assert len(payloads) == 0 or any(told.values())


def test_a_failing_migration_is_named_and_leaves_nothing_half_done(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = db.Migration(99, "broken", b"CREATE TABLE half (x int); SELECT no_such_function();")
    shipped = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [*shipped, broken])
    with pytest.raises(db.SchemaError, match=r"0099_broken\.sql failed"):
        db.upgrade(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() != (99,)
