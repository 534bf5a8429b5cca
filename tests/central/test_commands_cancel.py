"""The command sender stops though the CONNACK swallowed the cancel (aiomqtt 2.5's connect on
Python 3.11 awaits it with asyncio.wait_for: tests/support/swallowed_cancel.py)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from central.commands import CommandSender
from central.metrics import CentralMetrics
from gateway.mqtturl import MqttUrl
from tests.central.ingest_messages import PREFIX
from tests.central.test_commands import pool  # noqa: F401  # the fixture
from tests.support.swallowed_cancel import PubackWithTheCancel, within


async def test_stop_returns_though_the_connack_came_with_its_cancel(
    pool: AsyncConnectionPool,  # noqa: F811
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before cancel_and_wait, the sender went on into its session (sending commands, looking
    for more every few seconds) and stop() waited for good."""
    client = PubackWithTheCancel(lambda topic, payload: False, swallows_connect=True)
    monkeypatch.setattr(MqttUrl, "client", lambda self, **options: client)
    sender = CommandSender(
        pool,
        pg_dsn,
        "mqtt://127.0.0.1:1883",
        instance="c1",
        prefix=PREFIX,
        metrics=CentralMetrics(CollectorRegistry()),
    )
    await sender.start()
    await asyncio.wait_for(client.connecting.wait(), 5)
    await within(sender.stop(), 5, "CommandSender.stop()")
    assert client.swallowed.is_set()  # the premise: the first cancel was lost
    assert not sender.connected
