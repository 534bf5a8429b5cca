"""The instance's state process (availability and site summaries in a child at a lower CPU
priority): supervised by the instance, restarted when it dies without a summary lost, its
absence said by ``/readyz``, and gone with the instance (even a SIGKILLed one)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import psycopg

from central.app import Central
from central.db import upgrade
from central.settings import CentralSettings
from central.state_process import NICE
from tests.central.ingest_messages import PREFIX, summary
from tests.central.test_central_run import GASGATE, ready
from tests.central.test_link import eventually, publish
from tests.support.services import Mosquitto, free_port

SITES = 600


def _sites(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM sites WHERE gateway_id = 'gw-s'").fetchone()
    return int(row[0]) if row else 0


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_killed_state_process_is_restarted_and_no_summary_is_lost(
    pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    upgrade(pg_dsn)
    settings = CentralSettings(
        db=pg_dsn, gasco_mqtt=own_mosquitto.url, http_port=0, instance="sp", group="sg"
    )
    central = Central(settings)
    await central.start()
    try:
        assert central.http is not None
        assert central.state is not None
        state = central.state
        url = f"http://127.0.0.1:{central.http.port}"
        assert (await ready(url, 20))["checks"]["state_link"] is True
        first = state.pid
        assert first is not None
        assert os.getpriority(os.PRIO_PROCESS, first) == min(19, os.nice(0) + NICE)
        messages = [
            (f"{PREFIX}/gw-s/sites/s-{i}/summary", json.dumps(summary("gw-s", f"s-{i}").summary))
            for i in range(SITES)
        ]
        sending = asyncio.create_task(
            publish(own_mosquitto.url, [(t, p.encode()) for t, p in messages])
        )
        await eventually(lambda: _sites(pg_dsn) > 0, 20, "the first summaries")
        os.kill(first, signal.SIGKILL)  # mid-flow: what it had not committed is not acked
        await eventually(lambda: not state.subscribed, 5, "the instance to notice")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["state_link"] is False
        await sending
        await ready(url, 30)
        assert state.pid not in (None, first)
        assert state.starts == 2
        await eventually(lambda: _sites(pg_dsn) == SITES, 30, "every summary")
        second = state.pid
        assert second is not None
    finally:
        await central.stop()
    assert not _alive(second)  # stopped with the instance


async def test_the_state_process_ends_with_a_killed_instance(
    pg_dsn: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    upgrade(pg_dsn)
    port = free_port()
    args = [str(GASGATE), "central", "run", "--db", pg_dsn, "--gasco-mqtt", mosquitto.url,
            "--http-port", str(port), "--instance", "orphan", "--group", "og"]  # fmt: skip
    with (tmp_path / "central.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log)
    try:
        await ready(f"http://127.0.0.1:{port}", 30)
        (child,) = _children(proc.pid)
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
        await eventually(lambda: not _alive(child), 15, "the orphaned state process to end")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
