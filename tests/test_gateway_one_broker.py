"""One broker as both the site broker and the gas company's (a small deployment, the demo with
Mosquitto): the two links must not share a client id, or the broker keeps dropping one for the
other and reports, commands and alarm events stall."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.services import Mosquitto
from tests.test_gateway_e2e import settings, started, wait_until


async def test_site_and_gas_company_links_share_one_broker_without_kicking_each_other(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    gateway = await started(settings(tmp_path, own_mosquitto.url, gasco_mqtt=own_mosquitto.url))
    try:
        gasco = gateway.escalation.gasco
        await wait_until(gasco.connected.is_set)
        await asyncio.sleep(3)  # a clash shows as a reconnect every second or so
        assert gateway.site_mqtt.connected.is_set()
        assert gasco.connected.is_set()
        assert gateway.site_mqtt.counts["disconnects"] == 0
        assert gateway.site_mqtt.counts["connects"] == 1
    finally:
        await gateway.stop()
