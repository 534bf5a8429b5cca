"""The bridge's MQTT session ends, and the bridge stops, though a report's publish swallowed the
cancel (aiomqtt 2.5's publish on Python 3.11: tests/support/swallowed_cancel.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_bridge import ksp
from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.link import LinkConfig
from gateway import contract
from gateway.mqtturl import MqttUrl, parse_mqtt_url
from tests.support.escalation_kit import eventually
from tests.support.ksp_peer import RawPeer
from tests.support.swallowed_cancel import PubackWithTheCancel, within
from tests.test_ksp import VECTORS


@pytest.fixture
async def kit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Bridge, PubackWithTheCancel, RawPeer]]:
    """A bridge on a raw KSP/1 peer, its broker a client whose first report publish gets its
    PUBACK with the cancel; a valve's report is waiting for that PUBACK."""
    client = PubackWithTheCancel(lambda topic, payload: topic.endswith("/report"))
    monkeypatch.setattr(MqttUrl, "client", lambda self, **options: client)
    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    config = BridgeConfig("b1", parse_mqtt_url("mqtt://127.0.0.1:1883"), drain_on_stop_s=0.2)
    bridge = Bridge(config, LinkConfig(str(peer.path)))
    await bridge.start()
    try:
        assert (await peer.next_message())[1] == ksp.Ping()
        await asyncio.wait_for(bridge.mqtt_connected.wait(), 2)
        valve = ksp.parse(ksp.Decoder().feed(bytes.fromhex(VECTORS["valve closed"]))[0])
        peer.send(0, valve)
        await asyncio.wait_for(client.publishing.wait(), 5)
        yield bridge, client, peer
    finally:
        await within(bridge.stop(), 10, "Bridge.stop()")
        peer.close()


async def test_a_lost_link_ends_the_session_though_a_publish_swallowed_its_cancel(
    kit: tuple[Bridge, PubackWithTheCancel, RawPeer],
) -> None:
    """Before, the session's TaskGroup cancelled the publish loop once: it went back to waiting
    for the next report, 'connected' set and no reconnect until one came."""
    bridge, client, _ = kit
    client.lose()
    await eventually(lambda: client.connects == 2, 3, "the next connection")
    assert client.swallowed.is_set()  # the premise: the first cancel was lost
    await eventually(lambda: bridge.queued == 0, 3, "the report acknowledged")


async def test_stop_returns_though_a_publish_swallowed_its_cancel(
    kit: tuple[Bridge, PubackWithTheCancel, RawPeer],
) -> None:
    """Before, stop() cancelled the session once and waited for it for good."""
    bridge, client, _ = kit
    await within(bridge.stop(), 5, "Bridge.stop()")
    assert client.swallowed.is_set()
    assert (contract.bridge_availability_topic("b1"), "offline") in client.published
