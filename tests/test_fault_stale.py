"""Fault: a detector falls silent. Its last reading must not pass for a current one: the API
and the console say it is offline, keep the time of its last report (the gateway's receive
time, which stops moving), and an offline alarm is raised for it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware_bridge.ksp import DeviceKind, Event
from gateway.contract import KitReport, report_topic
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import HOUSE_DETECTOR, World, running_world, write_world
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import wait_until

INTERVAL_S = 1  # the registry's report interval: offline after 3 silent intervals


async def device(world: World, client_name: str = "officer") -> dict[str, Any]:
    async with world.client(client_name) as client:
        answer: dict[str, Any] = (await client.get(f"/api/devices/{HOUSE_DETECTOR}")).json()
        return answer


async def test_a_silent_detector_is_shown_offline_with_its_last_report_time(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    registry = write_world(tmp_path / "registry-1s", INTERVAL_S)
    async with running_world(tmp_path, own_mosquitto.url, registry=registry) as world:
        async with parse_mqtt_url(world.mqtt_url).client(identifier=uuid.uuid4().hex) as c:
            for seq in range(3):
                report = KitReport(
                    kind=DeviceKind.DETECTOR, seq=seq, event=Event.PERIODIC,
                    detector={"lel_pct": 5.0},
                )  # fmt: skip
                await c.publish(report_topic(HOUSE_DETECTOR), report.to_json(), qos=1)
                await asyncio.sleep(0.3)
        await wait_until(lambda: world.gateway.supervision.online(HOUSE_DETECTOR))
        fresh = await device(world)
        assert (fresh["online"], fresh["lel_pct"]) == (True, 5.0)
        last = datetime.fromisoformat(fresh["last_report_at"])

        await world.wait_alarm(HOUSE_DETECTOR, "device_offline")  # silent for 3 intervals
        stale = await device(world)
        assert stale["online"] is False
        assert datetime.fromisoformat(stale["last_report_at"]) == last  # not refreshed
        async with world.client("officer") as officer:
            fleet = (await officer.get("/console/fleet?lang=en")).text
        row = re.search(rf'<tr class="([^"]*)"><td [^>]*data-device="{HOUSE_DETECTOR}"', fleet)
        assert row is not None
        assert row.group(1) == "offline"
