"""One center instance as a whole: ``Central`` in process (ready only with its links up, its
metrics served), and ``gasgate central run`` as a process that SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx

from central.app import Central
from central.db import upgrade
from central.settings import CentralSettings
from tests.central.ingest_messages import PREFIX, event
from tests.support.services import Mosquitto, free_port

GASGATE = Path(sys.executable).parent / "gasgate"
NEW_EVENT = 'gasgate_central_messages_total{result="events_new",stream="events"} 1.0'


async def ready(url: str, within: float) -> dict[str, object]:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(f"{url}/readyz", timeout=2)
                if response.status_code == 200:
                    body: dict[str, object] = response.json()
                    return body
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready within {within} s")


async def test_an_instance_is_ready_with_its_links_and_serves_its_metrics(
    pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    upgrade(pg_dsn)
    settings = CentralSettings(
        db=pg_dsn, gasco_mqtt=own_mosquitto.url, http_port=0, instance="t1", group="tg"
    )
    central = Central(settings)
    await central.start()
    try:
        assert central.http is not None
        url = f"http://127.0.0.1:{central.http.port}"
        body = await ready(url, 20)
        assert body["checks"] == {
            "database": True,
            "listen": True,
            "events_link": True,
            "state_link": True,
            "commands_link": True,
        }
        async with aiomqtt.Client("127.0.0.1", own_mosquitto.port) as gw:
            payload = json.dumps(event("gw-t1", "gw-t1-a", 1).event)
            await gw.publish(f"{PREFIX}/gw-t1/alarms/events", payload, qos=1)
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                text = (await client.get(f"{url}/metrics")).text
                if (
                    'gasgate_central_messages_total{result="events_new",stream="events"} 1.0'
                    in text
                ):
                    break
                await asyncio.sleep(0.05)
        assert 'gasgate_central_link_up{stream="events"} 1.0' in text
        assert NEW_EVENT in text
        assert "gasgate_central_apply_seconds_bucket" in text
        own_mosquitto.stop()  # the broker away: not ready, and says why
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                response = await client.get(f"{url}/readyz")
                if response.status_code == 503:
                    break
                await asyncio.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["checks"]["events_link"] is False
    finally:
        await central.stop()


async def test_central_run_stops_cleanly_on_sigterm(
    pg_dsn: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    upgrade(pg_dsn)
    port = free_port()
    env = {
        **os.environ,
        "GASGATE_CENTRAL_DB": pg_dsn,  # the settings from the environment, as compose gives them
        "GASGATE_CENTRAL_GASCO_MQTT": mosquitto.url,
        "GASGATE_CENTRAL_HTTP_PORT": str(port),
        "GASGATE_LOG_FORMAT": "text",
    }
    with (tmp_path / "central.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(GASGATE), "central", "run", "--instance", "sig", env=env, stderr=log, stdout=log
        )
    try:
        await ready(f"http://127.0.0.1:{port}", 30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "stopping" in (tmp_path / "central.log").read_text()


def test_central_run_refuses_a_placeholder_secret(pg_dsn: str, mosquitto: Mosquitto) -> None:
    env = {**os.environ, "GASGATE_CENTRAL_ALERT_SECRET": "change-me"}
    done = subprocess.run(
        [str(GASGATE), "central", "run", "--db", pg_dsn, "--gasco-mqtt", mosquitto.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "alert_secret" in done.stderr
