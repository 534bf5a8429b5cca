"""/metrics of a running gateway: what it did, counted; queues and links read at scrape time."""

from __future__ import annotations

import re
from pathlib import Path

import aiomqtt
import httpx

from gateway.contract import report_topic
from tests.support.kit_site import DETECTOR
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Kit, open_alarms, settings, started, wait_until


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}(?:\{{{re.escape(want)}\}})? (\S+)$" if want else rf"^{name} (\S+)$"
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_metrics_count_reports_rejections_alarms_and_time_the_valve_command(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url, http_port=0))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        async with aiomqtt.Client("127.0.0.1", own_mosquitto.port) as client:
            await client.publish(report_topic(DETECTOR), b"{not json", qos=1)
        kit.detector.set_lel(35.0)
        await wait_until(lambda: open_alarms(gateway, "leak_low"))
        await wait_until(lambda: gateway.ingest.counts["rejected.bad_json"] == 1)
        async with httpx.AsyncClient(base_url=gateway.api.url) as http:
            text = (await http.get("/metrics")).text
    finally:
        await kit.stop()
        await gateway.stop()
    assert sample(text, "gasgate_reports_total", kind="detector") >= 2  # power-on and the leak
    assert sample(text, "gasgate_rejected_total", reason="bad_json") == 1
    assert sample(text, "gasgate_alarm_transitions_total", transition="raised") >= 1
    assert sample(text, "gasgate_alarms", state="unack_active") >= 1
    assert sample(text, "gasgate_report_to_valve_command_seconds_count") == 1
    assert sample(text, "gasgate_report_to_valve_command_seconds_sum") < 5.0
    assert sample(text, "gasgate_link_up", link="site_broker") == 1
    assert "gasgate_outbox_depth{" in text
    assert sample(text, "gasgate_spool_depth", spool="telemetry") == 0
