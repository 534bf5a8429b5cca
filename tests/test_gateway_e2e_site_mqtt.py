"""The site MQTT client against a real Mosquitto that goes away and comes back: messages queued
while the broker is down are delivered once it is back, in order; reports reach the callback;
the gateway's availability is retained."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiomqtt

from gateway.mqtturl import parse_mqtt_url
from gateway.site_mqtt import SiteMqtt, gateway_availability_topic
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import wait_until

# "user root": a broker started as root otherwise drops to the mosquitto user, which cannot
# write its database into the test's directory (no effect when not run as root).
_PERSISTENT = "persistence true\npersistence_location {}/\nuser root\n"


async def receive(client: aiomqtt.Client, count: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(20):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload))
            if len(got) == count:
                return got
    raise AssertionError("unreachable")


async def test_queue_survives_broker_restart_in_order(tmp_path: Path) -> None:
    # Persistence on, so the spy's session and its queued messages survive the restart too.
    broker = Mosquitto(tmp_path, extra_config=_PERSISTENT.format(tmp_path))
    received: list[tuple[str, bytes]] = []
    site = SiteMqtt(
        broker.url, f"gw-{uuid.uuid4().hex[:8]}", "gwtest", lambda t, p: received.append((t, p))
    )
    url = parse_mqtt_url(broker.url)
    with broker.running():
        async with url.client(identifier="spy-persist", clean_session=False) as spy:
            await spy.subscribe("kit/v1/+/cmd", qos=1)
        await site.start()
        try:
            await wait_until(site.connected.is_set)
            async with url.client(identifier="device") as device:
                await device.publish("kit/v1/det-a/report", b"{}", qos=1)
            await wait_until(lambda: received == [("kit/v1/det-a/report", b"{}")])

            broker.stop()
            await wait_until(lambda: not site.connected.is_set())
            for n in range(5):
                site.publish(f"kit/v1/valve-{n}/cmd", f'{{"id": "c{n}"}}'.encode())
            assert site.queued == 5
            await asyncio.sleep(1.0)  # reconnect attempts fail meanwhile
            broker.start()
            await wait_until(lambda: site.connected.is_set() and site.queued == 0)

            async with url.client(identifier="spy-persist", clean_session=False) as spy:
                got = await receive(spy, 5)
            assert got == [
                (f"kit/v1/valve-{n}/cmd", f'{{"id": "c{n}"}}'.encode()) for n in range(5)
            ]
            assert site.counts["disconnects"] >= 1

            async with url.client(identifier="watcher") as watcher:
                await watcher.subscribe(gateway_availability_topic("gwtest"), qos=1)
                assert await receive(watcher, 1) == [
                    (gateway_availability_topic("gwtest"), b"online")
                ]
        finally:
            await site.stop()
        async with url.client(identifier="watcher") as watcher:
            await watcher.subscribe(gateway_availability_topic("gwtest"), qos=1)
            assert await receive(watcher, 1) == [(gateway_availability_topic("gwtest"), b"offline")]
