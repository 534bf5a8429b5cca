"""The site link ends its control session and stops though a publish swallowed the cancel
(aiomqtt 2.5's publish on Python 3.11: tests/support/swallowed_cancel.py, gateway/tasks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import site_mqtt
from gateway.mqtturl import MqttUrl
from gateway.site_mqtt import SiteMqtt, gateway_availability_topic
from tests.support.escalation_kit import eventually
from tests.support.swallowed_cancel import PubackWithTheCancel, within

AVAILABILITY = gateway_availability_topic("gw1")


async def _stream_up(self: Any, url: MqttUrl) -> None:
    """The report stream (gmqtt, not under test here): subscribed at once, never lost."""
    self._on_state(True)
    await asyncio.Event().wait()


def _site(monkeypatch: pytest.MonkeyPatch, client: PubackWithTheCancel) -> SiteMqtt:
    monkeypatch.setattr(MqttUrl, "client", lambda self, **options: client)
    monkeypatch.setattr(site_mqtt._ReportStream, "run", _stream_up)
    return SiteMqtt("mqtt://127.0.0.1:1883", "gasgate-gw1", "gw1", lambda *_: None)


async def test_stop_returns_though_the_online_puback_came_with_its_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before cancel_and_wait, the control session went on from its ``online`` publish to send
    the queue, 'connected' was set after the stop, and stop() (gateway.stop()) waited for good."""
    client = PubackWithTheCancel(lambda topic, payload: payload == b"online")
    site = _site(monkeypatch, client)
    await site.start()
    await asyncio.wait_for(client.publishing.wait(), 2)
    await within(site.stop(), 5, "SiteMqtt.stop()")
    assert client.swallowed.is_set()  # the premise: the first cancel was lost
    assert not site.connected.is_set()
    assert client.connects == 1


async def test_a_lost_link_ends_the_session_though_a_publish_swallowed_its_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The link is lost while a leak's close command waits for its PUBACK, which comes with the
    cancel: the session still ends ('connected' cleared, /readyz says so) and the next one
    begins; the command is not lost. Held by the sender's gather today (a gather passes its
    cancel on though a child swallowed it); a sender awaiting one publish alone hung here."""
    client = PubackWithTheCancel(lambda topic, payload: topic == "kit/v1/5e6f7a8b/cmd")
    site = _site(monkeypatch, client)
    await site.start()
    try:
        await asyncio.wait_for(site.connected.wait(), 2)
        site.publish("kit/v1/5e6f7a8b/cmd", b'{"cmd": "close"}')
        await asyncio.wait_for(client.publishing.wait(), 2)
        client.lose()
        await eventually(lambda: site.counts["disconnects"] == 1, 3, "the session's end")
        assert client.swallowed.is_set()
        await eventually(lambda: site.counts["connects"] == 2, 5, "the next connection")
        # Acknowledged (its PUBACK came) or sent again on the next connection: never lost.
        await eventually(lambda: site.queued == 0, 5, "the command acknowledged")
        assert site.counts["sent"] == 1
    finally:
        await within(site.stop(), 5, "SiteMqtt.stop()")
