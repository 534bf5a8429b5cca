"""The whole gateway (app.py) with two real brokers: the site Mosquitto with simulated kit
devices, and a second Mosquitto as the gas company's. A leak reaches the gas company, the site's
phone (SMS webhook) and, after the shortened supervisor delay, an e-mail; the duty officer's
acknowledgement over MQTT stops the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from firmware_bridge import ksp
from tests.support.escalation_kit import eventually
from tests.support.kit_site import DETECTOR, SITE, VALVES
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto
from tests.test_escalation_gasco import GasCompany, gas_company
from tests.test_gateway_e2e import Kit, open_alarms, settings, started

POLICIES = """\
policies:
  - name: leak
    match: {alarm_types: [leak_high]}
    steps:
      - after_s: 0
        notify: [{to: site_contacts, via: [sms]}]
      - after_s: 3
        notify: [{to: duty_supervisor, via: [email]}]
      - after_s: 8
        notify: [{to: emergency_dispatcher, via: [sms]}]
"""


async def test_leak_to_gas_company_sms_email_then_ack_over_mqtt_stops_it(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    (tmp_path / "gasco").mkdir()
    with Mosquitto(tmp_path / "gasco").running() as gasco_broker:
        await _scenario(tmp_path, own_mosquitto, gasco_broker)


async def _scenario(tmp_path: Path, site_broker: Mosquitto, gasco_broker: Mosquitto) -> None:
    (tmp_path / "policies.yaml").write_text(POLICIES)
    with HttpReceiver().running() as http, SmtpReceiver().running() as smtp:
        escalation = {
            "policies_file": str(tmp_path / "policies.yaml"),
            "channels": {
                "sms": {"kind": "webhook", "template": "sms", "url": http.url("/sms")},
                "email": {"kind": "email", "host": "127.0.0.1", "port": smtp.port},
            },
            "duty_room": [{"name": "Duty room", "email": "duty@gasco.example"}],
            "duty_supervisor": [{"name": "Zhang", "email": "zhang@gasco.example"}],
            "emergency_dispatcher": [{"name": "Dispatch", "phone": "119000"}],
        }
        s = settings(tmp_path, site_broker.url, gasco_mqtt=gasco_broker.url, escalation=escalation)
        base = f"gasco/v1/{s.gateway_id}"
        async with gas_company(gasco_broker, base) as company:
            gateway = await started(s)
            kit = Kit(site_broker.url, interval_s=60)
            await kit.start()
            try:
                await eventually(lambda: company.on("availability") == ["online"])
                kit.detector.set_lel(55.0)
                await eventually(lambda: leak_events(company), what="raised event")
                raised = leak_events(company)[0]
                assert raised["transition"] == "raised"
                assert raised["alarm_type"] == "leak_high"
                assert raised["site"]["name"] == "Golden Wok"
                assert raised["device_id"] == DETECTOR
                await eventually(lambda: len(http.received("/sms")) == 1, what="site SMS")
                assert http.received("/sms")[0].json()["phone"] == "13800138000"
                await eventually(
                    lambda: all(
                        gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES
                    )
                )
                await eventually(lambda: len(smtp.messages()) == 1, what="supervisor at 3 s")
                assert smtp.messages()[0]["To"] == "zhang@gasco.example"
                escalated = [e for e in leak_events(company) if e["transition"] == "escalated"]
                assert escalated[0]["valve_state"] == "closed"  # both valves reported closed

                (alarm,) = open_alarms(gateway, "leak_high")
                await company.command(
                    "duty-1",
                    cmd_id="a1",
                    alarm_id=alarm.alarm_id,
                    action="acknowledge",
                    officer_id="duty-1",
                    note="on it",
                )
                await eventually(lambda: company.on("reply/duty-1"), what="reply")
                assert company.on("reply/duty-1")[0]["accepted"] is True
                await asyncio.sleep(6)  # past the dispatcher's 8 s
                assert [r.json()["phone"] for r in http.received("/sms")] == ["13800138000"]
                transitions = [e["transition"] for e in leak_events(company)]
                told = [t for t in transitions if t != "valve_changed"]
                assert told == ["raised", "escalated", "acknowledged"]
                # Each valve's moves were told as they came (gasco/v1 valve_changed), the
                # last one before the escalation with both valves closed.
                changed = [e for e in leak_events(company) if e["transition"] == "valve_changed"]
                assert changed, transitions
                assert transitions.index("escalated") > transitions.index("valve_changed")
                assert changed[-1]["valve_state"] == "closed"
                assert {e["alarm_revision"] for e in changed} == {raised["alarm_revision"]}
                revisions = [e["revision"] for e in leak_events(company)]
                assert revisions == list(range(1, len(revisions) + 1))
                summary = company.on(f"sites/{SITE}/summary")[0]
                assert summary["kit"]["complete"] is True
            finally:
                await kit.stop()
                await gateway.stop()
        assert company.on("availability")[-1] == "offline"


def leak_events(company: GasCompany) -> list[dict[str, Any]]:
    return [e for e in company.events() if e["alarm_type"] == "leak_high"]
