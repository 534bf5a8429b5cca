"""``kill -9`` of a real ``gasgate run`` process mid-alarm and mid-retry, then a restart on the
same data dir: the same open alarms come back, nothing is raised twice, and no valve gets a
command the retry schedule did not call for."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_bridge import ksp
from tests.support.kit_site import DETECTOR, VALVES, write_registry
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Kit, Spy, wait_until

GASGATE = Path(sys.executable).parent / "gasgate"


class GatewayProcess:
    def __init__(self, tmp_path: Path, url: str, **env: str) -> None:
        self.data_dir = tmp_path / "data"
        self.registry = write_registry(tmp_path / "registry", 60)
        self.log = tmp_path / "gateway.log"
        self.args = [
            str(GASGATE), "run", "--registry", str(self.registry), "--mqtt", url,
            "--data-dir", str(self.data_dir), "--gateway-id", f"gw-{uuid.uuid4().hex[:10]}",
        ]  # fmt: skip
        self.env = {**os.environ, "GASGATE_LOG_FORMAT": "text", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        db = sqlite3.connect(f"file:{self.data_dir / 'gasgate.db'}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in db.execute(sql, args)]
        except sqlite3.OperationalError:
            return []  # tables not created yet
        finally:
            db.close()

    def raised(self) -> list[tuple[object, ...]]:
        """(alarm_id, alarm_type, source) of every RAISED transition ever recorded."""
        return self.query(
            "SELECT h.alarm_id, a.alarm_type, a.source FROM alarm_history h"
            " JOIN alarms a USING (alarm_id) WHERE h.transition = 'raised' ORDER BY 1"
        )

    def open_alarms(self, alarm_type: str) -> list[tuple[object, ...]]:
        return self.query(
            "SELECT alarm_id, source FROM alarms WHERE is_open = 1 AND alarm_type = ?", alarm_type
        )


@pytest.fixture
async def spy(own_mosquitto: Mosquitto) -> AsyncIterator[Spy]:
    s = Spy(own_mosquitto.url)
    await s.start()
    yield s
    await s.stop()
    s.assert_no_open_command()


async def online(spy: Spy, times: int) -> None:
    await wait_until(lambda: spy.availability.count("online") >= times, 30)


async def test_kill_mid_alarm_restores_without_duplicates(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    gateway = GatewayProcess(tmp_path, own_mosquitto.url)
    kit = Kit(own_mosquitto.url, interval_s=0.5)  # the detector keeps reporting its leak
    await kit.start()
    gateway.start()
    try:
        await online(spy, 1)
        kit.detector.set_lel(55.0)
        await wait_until(
            lambda: (
                len(gateway.query("SELECT 1 FROM valve_close WHERE status = 'confirmed'"))
                == len(VALVES)
            )
        )
        raised_before = gateway.raised()
        assert ("leak_high", DETECTOR) in {(t, s) for _, t, s in raised_before}
        open_before = gateway.open_alarms("leak_high")

        gateway.kill9()
        await wait_until(lambda: spy.availability[-1] == "offline")  # the last will
        await asyncio.sleep(1.0)  # reports keep coming while it is down
        gateway.start()
        await online(spy, 2)
        await asyncio.sleep(2.5)  # reports after the restart reach the restored alarms

        assert gateway.open_alarms("leak_high") == open_before
        assert gateway.raised() == raised_before
        for valve in VALVES:
            assert [c["cmd"] for c in spy.to(valve)] == ["close_valve"]
        assert gateway.terminate() == 0
        await wait_until(lambda: spy.availability[-1] == "offline")  # said on a clean stop
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill9()
        await kit.stop()


async def test_kill_mid_retry_resumes_the_schedule(
    tmp_path: Path, own_mosquitto: Mosquitto, spy: Spy
) -> None:
    retry_s = 3.0
    gateway = GatewayProcess(tmp_path, own_mosquitto.url, GASGATE_VALVE_RETRY_S=str(retry_s))
    kit = Kit(own_mosquitto.url, interval_s=60, valve_fails=True)
    await kit.start()
    gateway.start()
    try:
        await online(spy, 1)
        kit.detector.set_lel(55.0)
        await wait_until(lambda: all(len(spy.to(v)) == 1 for v in VALVES))
        # The gateway has heard the broker take them: the restart sends the second try at once.
        await wait_until(
            lambda: len(gateway.query("SELECT 1 FROM valve_close WHERE sent = 1")) == 2
        )
        gateway.kill9()  # after the first try, before the second
        assert all(len(spy.to(v)) == 1 for v in VALVES)
        gateway.start()
        await online(spy, 2)
        await wait_until(lambda: len(gateway.open_alarms("valve_failed_to_close")) == 2, 40)
        await asyncio.sleep(retry_s + 1)  # no fourth try
        for valve in VALVES:
            commands = spy.to(valve)
            assert [c["cmd"] for c in commands] == ["close_valve"] * 3
            assert len({c["id"] for c in commands}) == 3
        assert sorted(s for _, s in gateway.open_alarms("valve_failed_to_close")) == sorted(VALVES)
        assert [s for _, t, s in gateway.raised() if t == "leak_high"] == [DETECTOR]
        assert all(v.state is not ksp.ValveState.CLOSED for v in kit.valves.values())
        assert gateway.terminate() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill9()
        await kit.stop()


def test_unusable_registry_stops_the_start_with_located_errors(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "sites.csv").write_text("site_id,name\nr-1,Golden Wok\n", encoding="utf-8")
    result = subprocess.run(
        [str(GASGATE), "run", "--registry", str(registry), "--data-dir", str(tmp_path / "d"),
         "--mqtt", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "sites.csv:1:3: missing column 'site_type'" in result.stderr
