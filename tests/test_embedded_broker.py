from __future__ import annotations

import asyncio

import aiomqtt

from gateway.embedded_broker import EmbeddedBroker
from tests.support.services import free_port


async def test_aiomqtt_round_trip_with_retained_and_qos1() -> None:
    broker = EmbeddedBroker(free_port())
    await broker.start()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="pub") as pub:
            await pub.publish("kit/v1/_bridge/b1/availability", b"online", qos=1, retain=True)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sub") as sub:
            await sub.subscribe("kit/v1/#", qos=1)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="pub2") as pub:
                await pub.publish("kit/v1/1a2b3c4d/report", b"{}", qos=1)
            got: dict[str, bytes] = {}
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    got[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                    if len(got) == 2:
                        break
        assert got == {
            "kit/v1/_bridge/b1/availability": b"online",
            "kit/v1/1a2b3c4d/report": b"{}",
        }
    finally:
        await broker.stop()
