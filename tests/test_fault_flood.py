"""Fault: an alarm flood. Every other device of the district reports every fault flag it has,
on and off (chattering), and a hundred unknown devices report too; then a restaurant has a
leak. The leak must still close its valve, and stand at the top of the duty officer's queue:
nothing less severe is listed before it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gateway.contract import report_topic
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import (
    HOUSE_DETECTOR,
    HOUSE_VALVE,
    PARTIAL_DETECTOR,
    running_world,
)
from tests.support.kit_site import DETECTOR, REGULATOR, REGULATOR_VALVE, VALVES
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Spy, wait_until

PARTIAL_VALVE = "valve-p"  # the leaking restaurant's valve (api_world)
FLAGS = {
    "detector": ["sensor_fault", "low_battery", "tamper", "end_of_life"],
    "valve": ["low_battery", "motor_fault", "position_fault"],
    "regulator": ["low_battery", "over_pressure"],
}
NOISY = {
    DETECTOR: "detector", HOUSE_DETECTOR: "detector", VALVES[0]: "valve", VALVES[1]: "valve",
    REGULATOR_VALVE: "valve", HOUSE_VALVE: "valve", REGULATOR: "regulator",
}  # fmt: skip
CYCLES = 5


def report(kind: str, seq: int, flags: list[str]) -> bytes:
    body: dict[str, object] = {"kind": kind, "seq": seq, "event": "state_change"}
    if kind == "detector":
        body["detector"] = {"lel_pct": 0.0, "flags": flags}
    elif kind == "valve":
        body["valve"] = {"state": "open", "cause": "none", "flags": flags}
    else:
        body["regulator"] = {"pressure_pa": 2800, "flags": flags}
    return json.dumps(body).encode()


async def test_a_leak_in_an_alarm_flood_is_acted_on_and_tops_the_queue(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    async with running_world(tmp_path, own_mosquitto.url) as world:
        spy = Spy(world.mqtt_url)
        await spy.start()
        try:
            async with parse_mqtt_url(world.mqtt_url).client(identifier=uuid.uuid4().hex) as c:
                seq = 0
                for cycle in range(CYCLES):
                    for device, kind in NOISY.items():
                        seq += 1
                        flags = FLAGS[kind] if cycle % 2 == 0 else []
                        await c.publish(report_topic(device), report(kind, seq, flags), qos=1)
                for n in range(100):
                    topic = report_topic(f"ghost-{n:03d}")
                    await c.publish(topic, report("detector", n, ["sensor_fault"]), qos=1)
            await wait_until(lambda: len(world.gateway.alarms.open_alarms()) >= 10)
            leak = await world.leak(PARTIAL_DETECTOR)
            await wait_until(lambda: spy.to(PARTIAL_VALVE))
            async with world.client("officer") as officer:
                queue = (await officer.get("/api/alarms")).json()
        finally:
            await spy.stop()
    ids = [a["alarm_id"] for a in queue]
    assert len(ids) >= 10, "no flood"
    ahead = queue[: ids.index(leak.alarm_id)]
    assert all(a["severity"] == "critical" for a in ahead), [a["alarm_type"] for a in ahead]
    assert [c["cmd"] for c in spy.to(PARTIAL_VALVE)] == ["close_valve"]
    spy.assert_no_open_command()
