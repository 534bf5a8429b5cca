"""What the API and the console say about alarms and devices (issue 15, items 6 and 7): an
alarm's "gateway did" lists only the valve commands sent for that alarm (a tamper alarm of the
leaking detector shows none; a valve that failed to close shows the commands to that valve),
and a device not heard from since the gateway started is "not heard yet", not online. A real
gateway, broker and store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from firmware_bridge.ksp import DeviceKind, Event
from gateway.contract import KitReport, report_topic
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import HOUSE_DETECTOR, World, running_world
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto


async def _report(world: World, device: str, seq: int, **detector: object) -> None:
    report = KitReport(kind=DeviceKind.DETECTOR, seq=seq, event=Event.PERIODIC, detector=detector)
    async with parse_mqtt_url(world.mqtt_url).client(identifier=f"t-{uuid.uuid4().hex}") as c:
        await c.publish(report_topic(device), report.to_json(), qos=1)


async def test_gateway_did_lists_only_the_alarms_own_valve_commands(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # No valve answers in this world: each is commanded three times, then failed_to_close.
    async with running_world(tmp_path, mosquitto.url, valve_retry_s=0.3) as world:
        leak = await world.leak()
        await _report(world, DETECTOR, 2, lel_pct=55.0, flags=["tamper"])
        tamper = await world.wait_alarm(DETECTOR, "tamper")
        failed = await world.wait_alarm(VALVES[0], "valve_failed_to_close")
        async with world.client("officer") as officer:
            did = {}
            for alarm in (leak, tamper, failed):
                answer = await officer.get(f"/api/alarms/{alarm.alarm_id}")
                did[alarm.alarm_type] = [d for d in answer.json()["gateway_did"] if "→" in d]
            failed_view = (await officer.get(f"/api/alarms/{failed.alarm_id}")).json()
            queue = (await officer.get("/console/alarms/queue?lang=en&tab=maintenance")).text
    assert {d.split(" (")[0] for d in did["leak_high"]} == {f"close_valve → {v}" for v in VALVES}
    assert did["tamper"] == []  # the leak's commands are not the tamper alarm's
    assert [d.split(" (")[0] for d in did["valve_failed_to_close"]] == [
        f"close_valve → {VALVES[0]}"
    ] * 3  # the three tries to this valve, none to the other
    assert "try 3" in did["valve_failed_to_close"][-1]
    assert "no answer" in did["valve_failed_to_close"][-1]  # never "ok" read as closed
    # The valve that failed to close is the one its alarm shows (it showed none before).
    assert [(v["valve_id"], v["state"], v["unanswered"]) for v in failed_view["valve_lines"]] == [
        (VALVES[0], None, 3)
    ]
    row = queue.split(f'data-alarm-id="{tamper.alarm_id}"')[1].split("</tr>")[0]
    assert "close command" not in row  # the tamper incident shows none of the leak's commands
    assert "close_valve" not in row


async def test_a_device_not_heard_since_the_start_is_not_heard_yet(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with running_world(tmp_path, mosquitto.url) as world:
        await _report(world, DETECTOR, 1, lel_pct=0.0)
        devices = world.gateway.api.devices
        async with asyncio.timeout(20):
            while getattr(devices.get(DETECTOR), "event", None) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with world.client("super") as client:
            heard = (await client.get(f"/api/devices/{DETECTOR}")).json()
            silent = (await client.get(f"/api/devices/{HOUSE_DETECTOR}")).json()
            waiting = await client.get("/api/devices", params={"availability": "not_heard_yet"})
            online = await client.get("/api/devices", params={"online": "true"})
            fleet_en = (await client.get("/console/fleet?lang=en")).text
            fleet_zh = (await client.get("/console/fleet?lang=zh-CN")).text
            site = (await client.get("/console/sites/h-old?lang=en")).text
    assert (heard["availability"], heard["online"]) == ("online", True)
    assert (silent["availability"], silent["online"]) == ("not_heard_yet", None)
    assert HOUSE_DETECTOR in {d["device_id"] for d in waiting.json()}
    assert DETECTOR not in {d["device_id"] for d in waiting.json()}
    assert [d["device_id"] for d in online.json()] == [DETECTOR]
    row = fleet_en.split(f'data-device="{HOUSE_DETECTOR}"')[1].split("</tr>")[0]
    assert "not heard yet" in row
    assert "1 online · 0 offline" in fleet_en
    assert "启动后尚未收到上报" in fleet_zh
    assert "not heard yet" in site
