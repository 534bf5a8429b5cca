"""Fault: the site broker restarts in the middle of a leak.

The broker is stopped from inside the gateway, the moment the leak alarm is raised (a bus
handler that runs right after the linkage handed its close commands to the site MQTT client), so
those commands may or may not have left. While it is down the kit cannot report and the gateway
cannot send. After it is back, the valves must be closed (commanded again if the first command
was lost), and the leak must exist as one alarm, raised once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_bridge import ksp
from gateway.events import AlarmChanged
from gateway.linkage import TRIES
from gateway.model import Transition
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Kit, settings, started, wait_until

DOWN_S = 2.0  # longer than the kit's report interval and the gateway's first reconnect delay


async def test_broker_restart_during_a_leak_closes_the_valves_and_keeps_one_alarm(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url, valve_retry_s=4.0))
    stopped = asyncio.Event()

    def stop_broker_on_leak(event: AlarmChanged) -> None:
        if event.alarm.alarm_type == "leak_high" and not stopped.is_set():
            own_mosquitto.stop()  # blocks the loop a few ms: nothing else may run in between
            stopped.set()

    gateway.bus.subscribe(AlarmChanged, stop_broker_on_leak, name="test.broker-killer")
    kit = Kit(own_mosquitto.url, interval_s=0.5)  # the detector keeps reporting its leak
    await kit.start()
    try:
        kit.detector.set_lel(55.0)
        await asyncio.wait_for(stopped.wait(), 20)
        await asyncio.sleep(DOWN_S)
        own_mosquitto.start()
        await wait_until(
            lambda: all(kit.valves[v].state is ksp.ValveState.CLOSED for v in VALVES), 40
        )
        await wait_until(
            lambda: all(gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES),
            40,
        )
        await asyncio.sleep(1.0)  # reports after the restart reach the open alarm
        # Bounded: a lane that never drains is a stalled gateway, to be named, not waited out
        # (one CI run hung for 300 s after the valves closed; a hang reproduced beside busy
        # loops was the kit's stop below, a swallowed cancel: gateway/tasks.py).
        try:
            await asyncio.wait_for(gateway.bus.join(), 30)
        except TimeoutError:
            pytest.fail(f"bus lanes never drained: {gateway.bus.lanes()}")

        db = gateway.store.db
        leaks = db.execute(
            "SELECT alarm_id, is_open FROM alarms WHERE alarm_type = 'leak_high' AND source = ?",
            (DETECTOR,),
        ).fetchall()
        assert [r["is_open"] for r in leaks] == [1]
        raised = db.execute(
            "SELECT count(*) FROM alarm_history WHERE alarm_id = ? AND transition = ?",
            (leaks[0]["alarm_id"], Transition.RAISED.value),
        ).fetchone()[0]
        assert raised == 1
        for valve in VALVES:
            cmds = [
                r[0]
                for r in db.execute("SELECT cmd FROM valve_command WHERE valve_id = ?", (valve,))
            ]
            assert 1 <= len(cmds) <= TRIES, cmds
            assert set(cmds) == {"close_valve"}
        assert gateway.site_mqtt.counts["connects"] >= 2  # it really lost and regained the broker
        assert gateway.site_mqtt.queued == 0
        types = {a.alarm_type for a in gateway.alarms.open_alarms()}
        assert "valve_failed_to_close" not in types
    finally:
        try:
            await kit.stop()
        finally:
            await gateway.stop()
