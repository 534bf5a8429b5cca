"""The site MQTT client against a real Mosquitto that goes away and comes back: messages queued
while the broker is down are delivered once it is back, in order; reports reach the callback;
the gateway's availability is retained; a report is acknowledged to the broker only once what it
caused is settled, and a retained report is marked as such."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from gateway.mqtturl import parse_mqtt_url
from gateway.site_mqtt import SiteMqtt, gateway_availability_topic
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import wait_until

# "user root": a broker started as root otherwise drops to the mosquitto user, which cannot
# write its database into the test's directory (no effect when not run as root).
Ack = Callable[[], object]
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
        broker.url, f"gw-{uuid.uuid4().hex[:8]}", "gwtest", lambda t, p, r: received.append((t, p))
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


class _Session:
    """One gateway process's report stream on a fixed client id (a persistent session)."""

    def __init__(self, url: str, client_id: str, settled: Callable[[Ack], None]) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.site = SiteMqtt(url, client_id, "gwtest", self._got, settled=settled)

    def _got(self, topic: str, payload: bytes, retained: bool) -> None:
        self.got.append((topic, payload, retained))

    async def __aenter__(self) -> _Session:
        await self.site.start()
        await wait_until(self.site.connected.is_set)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.site.stop()


def _release(ack: Ack) -> None:
    ack()


async def test_a_report_is_acknowledged_only_once_settled(own_mosquitto: Mosquitto) -> None:
    """Until ``settled`` runs the ack, the broker keeps the report for the session: a process
    that dies before its alarm was committed gets the report again after the restart."""
    held: list[Ack] = []
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    report = ("kit/v1/det-a/report", b"leak", False)
    async with _Session(own_mosquitto.url, client_id, held.append) as first:
        url = parse_mqtt_url(own_mosquitto.url)
        async with url.client(identifier=f"dev-{uuid.uuid4().hex[:6]}") as device:
            await device.publish(report[0], report[1], qos=1)
        await wait_until(lambda: first.got == [report] and len(held) == 1)
    # Gone without the ack released (as if killed before the commit): the broker still has it.
    async with _Session(own_mosquitto.url, client_id, _release) as second:
        await wait_until(lambda: report in second.got)
        await asyncio.sleep(0.3)  # acknowledged this time
    async with _Session(own_mosquitto.url, client_id, _release) as third:
        await asyncio.sleep(1.0)
    assert third.got == []


async def test_a_retained_report_is_marked_retained(own_mosquitto: Mosquitto) -> None:
    url = parse_mqtt_url(own_mosquitto.url)
    topic = f"kit/v1/valve-{uuid.uuid4().hex[:6]}/report"
    async with url.client(identifier=f"dev-{uuid.uuid4().hex[:6]}") as device:
        await device.publish(topic, b"closed yesterday", qos=1, retain=True)
    try:
        async with _Session(own_mosquitto.url, f"gw-{uuid.uuid4().hex[:8]}", _release) as site:
            await wait_until(lambda: (topic, b"closed yesterday", True) in site.got)
            async with url.client(identifier=f"dev-{uuid.uuid4().hex[:6]}") as device:
                await device.publish(topic, b"closed now", qos=1, retain=True)
            await wait_until(lambda: (topic, b"closed now", False) in site.got)  # live news
    finally:
        async with url.client(identifier=f"dev-{uuid.uuid4().hex[:6]}") as device:
            await device.publish(topic, b"", qos=1, retain=True)
