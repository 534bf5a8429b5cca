"""Fault: the data dir's filesystem fills up while the gateway runs.

A real small filesystem (a 4 MiB tmpfs mounted on the test's data dir; root is needed to mount,
the test is skipped with that reason otherwise) is filled to the last byte with a ballast file
right after SQLite's write-ahead log was checkpointed and truncated (as it is routinely), so the
next write needs space. Then a leak: the valves must close, the alarm must be raised and be seen
(in memory, on the bus), and the gateway must say at CRITICAL that it could not store it. When
the ballast is deleted, the alarm reaches the store by itself, and a restart restores it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge import ksp
from gateway.app import STORE_FILE
from tests.support.disk import fill, small_tmpfs
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Kit, settings, started, wait_until


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "data") as mount:
        yield mount


def stored_leaks(db_path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [
            tuple(r)
            for r in db.execute(
                "SELECT alarm_id, is_open FROM alarms WHERE alarm_type = 'leak_high'"
                " AND source = ?",
                (DETECTOR,),
            )
        ]
    finally:
        db.close()


async def test_full_disk_still_closes_valves_says_so_and_recovers(
    tmp_path: Path, own_mosquitto: Mosquitto, small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, own_mosquitto.url)
    s = s.model_copy(update={"data_dir": small_fs})
    gateway = await started(s)
    kit = Kit(own_mosquitto.url, interval_s=0.5)
    await kit.start()
    try:
        await wait_until(lambda: gateway.ingest.counts["accepted.report"] >= 5)
        await gateway.bus.join()
        gateway.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ballast = fill(small_fs)
        caplog.clear()

        kit.detector.set_lel(55.0)
        await wait_until(
            lambda: all(kit.valves[v].state is ksp.ValveState.CLOSED for v in VALVES), 30
        )
        leak = [a for a in gateway.alarms.open_alarms() if a.alarm_type == "leak_high"]
        assert [a.source for a in leak] == [DETECTOR]
        critical = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
        assert any("could NOT be stored" in r.getMessage() for r in critical), caplog.text
        assert gateway.alarms.store_failures >= 1
        assert stored_leaks(small_fs / STORE_FILE) == []
        # Ready no longer: the store answers reads, but the alarm waits to be written (a small
        # commit may get through meanwhile and clear the store's own "commits fail").
        assert gateway.readiness()["store"] is False
        assert gateway.alarms.unrecorded >= 1

        ballast.unlink()  # space returns
        await wait_until(lambda: stored_leaks(small_fs / STORE_FILE) == [(leak[0].alarm_id, 1)], 30)
        await wait_until(lambda: gateway.readiness()["store"], 30)  # the alarm is written
        assert gateway.store.problem is None
        assert gateway.alarms.unrecorded == 0
    finally:
        await kit.stop()
        await gateway.stop()

    again = await started(s)  # the alarm the full disk held back survives a restart
    try:
        assert [a.alarm_id for a in again.alarms.open_alarms() if a.alarm_type == "leak_high"] == [
            leak[0].alarm_id
        ]
    finally:
        await again.stop()
