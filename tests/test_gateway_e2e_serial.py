"""The radio path end to end: simulated devices behind a KSP/1 receiver on a real pty, the
serial bridge, a real Mosquitto, the gateway in-process. A leak reported over the radio closes
both linked valves through the bridge's command path (the valves are not linked by radio here,
so only the gateway's commands can close them)."""

from __future__ import annotations

import uuid
from pathlib import Path

from firmware_bridge import ksp
from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.link import LinkConfig
from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.port import PtyPort
from firmware_bridge.simulator.receiver import SimReceiver
from gateway.mqtturl import parse_mqtt_url
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Spy, open_alarms, settings, started, wait_until

DETECTOR, VALVE_1, VALVE_2 = 0x5EC70011, 0x5EC70012, 0x5EC70013
IDS = {n: ksp.format_device_id(n) for n in (DETECTOR, VALVE_1, VALVE_2)}


def write_radio_registry(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sites.csv").write_text(
        "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang\n"
        "rest-radio,Red Lantern,restaurant,four_piece,Futian,8 Binhe Rd,Chen Jie,13800138001,zh\n",
        encoding="utf-8",
    )
    det = IDS[DETECTOR]
    (directory / "components.csv").write_text(
        "site_id,component,device_id,model,installed_on,links,report_interval_s\n"
        f"rest-radio,leak_detector,{det},KD-210C,2025-03-01,,60\n"
        f"rest-radio,shutoff_valve,{IDS[VALVE_1]},SV-25E,2025-03-01,{det},60\n"
        f"rest-radio,shutoff_valve,{IDS[VALVE_2]},SV-25E,2025-03-01,{det},60\n",
        encoding="utf-8",
    )
    return directory


async def test_radio_leak_closes_valves_through_the_bridge(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    url = own_mosquitto.url
    spy = Spy(url)
    await spy.start()
    port = PtyPort(tmp_path / "ttyKIT")
    receiver = SimReceiver(port, heartbeat_s=30, retransmit_s=0.5, max_retransmits=3)
    detector = SimDetector(DETECTOR)
    valves = {n: SimValve(n, close_time_s=0.2) for n in (VALVE_1, VALVE_2)}
    for device in (detector, *valves.values()):
        receiver.add(device)
    bridge = Bridge(
        BridgeConfig(f"b{uuid.uuid4().hex[:8]}", parse_mqtt_url(url)),
        LinkConfig(str(port.link_path)),
    )
    s = settings(tmp_path, url, registry=write_radio_registry(tmp_path / "radio-registry"))
    gateway = await started(s)
    await port.start()
    await bridge.start()
    try:
        await wait_until(bridge.mqtt_connected.is_set)
        await receiver.start()
        await wait_until(lambda: gateway.ingest.counts["accepted.report"] >= 3)
        detector.set_lel(55.0)
        await wait_until(
            lambda: all(
                gateway.linkage.valve_state(IDS[n]) is ksp.ValveState.CLOSED for n in valves
            )
        )
        assert [a.source for a in open_alarms(gateway, "leak_high")] == [IDS[DETECTOR]]
        assert all(v.cause is ksp.ValveCause.REMOTE_COMMAND for v in valves.values())
        sent = sorted((c.command.device_id, c.command.command) for c in receiver.stats.commands)
        assert sent == [(n, ksp.CommandCode.CLOSE_VALVE) for n in sorted(valves)]
        for n in valves:
            assert [c["cmd"] for c in spy.to(IDS[n])] == ["close_valve"]
    finally:
        await receiver.stop()
        await bridge.stop()
        await port.stop()
        await gateway.stop()
        await spy.stop()
    spy.assert_no_open_command()
