"""The command outbox with a real Mosquitto and a real PostgreSQL: a row inserted (and
NOTIFYed) is published on the gateway's ``cmd/{officer}`` topic and marked sent with a timeline
entry; a gateway away on a persistent session gets it from the broker when it returns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from central.commands import CommandSender
from central.db import CMD_CHANNEL, open_pool, upgrade
from central.ingest import Ingest
from central.metrics import CentralMetrics
from tests.central.ingest_messages import PREFIX, event, rows
from tests.support.services import Mosquitto

OFFICER = "officer-7"


async def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    upgrade(pg_dsn)
    the_pool = await open_pool(pg_dsn)
    yield the_pool
    await the_pool.close()


@pytest.fixture
async def sender(
    pool: AsyncConnectionPool, pg_dsn: str, mosquitto: Mosquitto
) -> AsyncIterator[CommandSender]:
    the_sender = CommandSender(
        pool,
        pg_dsn,
        mosquitto.url,
        instance="c1",
        prefix=PREFIX,
        metrics=CentralMetrics(CollectorRegistry()),
    )
    await the_sender.start()
    await eventually(lambda: the_sender.connected, 10, "the sender connected")
    yield the_sender
    await the_sender.stop()


async def enqueue(
    pool: AsyncConnectionPool, cmd_id: str, gateway: str, incident: int | None
) -> None:
    """What the API does: the row and the NOTIFY, in one transaction."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO commands (cmd_id, incident_id, gateway_id, alarm_id, officer, action,"
            " note, created_at) VALUES (%s, %s, %s, 'a-1', %s, 'acknowledge', 'on my way', now())",
            (cmd_id, incident, gateway, OFFICER),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (CMD_CHANNEL, cmd_id))


def gateway_client(mosquitto: Mosquitto, gateway: str, *, clean: bool) -> aiomqtt.Client:
    """A gateway's gasco link as the contract has it: MQTT 5, persistent session."""
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        "127.0.0.1",
        mosquitto.port,
        identifier=f"test-{gateway}-gasco",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean,
        properties=connect,
    )


async def next_command(client: aiomqtt.Client, within: float) -> aiomqtt.Message:
    async with asyncio.timeout(within):
        async for message in client.messages:
            return message
    raise AssertionError("no command")


async def test_a_queued_command_is_published_and_marked_sent(
    pool: AsyncConnectionPool, sender: CommandSender, mosquitto: Mosquitto
) -> None:
    await Ingest(pool, "c1").apply([event("gw-c1", "gw-c1-a-1", 1)])
    (incident,) = (await rows(pool, "SELECT incident_id FROM incidents"))[0]
    async with gateway_client(mosquitto, "gw-c1", clean=True) as gw:
        await gw.subscribe(f"{PREFIX}/gw-c1/cmd/#", qos=1)
        started = time.monotonic()
        await enqueue(pool, "gc-1", "gw-c1", incident)
        message = await next_command(gw, 5)
        woken_in = time.monotonic() - started
    assert message.topic.value == f"{PREFIX}/gw-c1/cmd/{OFFICER}"
    assert not message.retain
    assert json.loads(message.payload) == {
        "cmd_id": "gc-1",
        "alarm_id": "a-1",
        "action": "acknowledge",
        "officer_id": OFFICER,
        "note": "on my way",
    }
    assert woken_in < 0.9  # the NOTIFY woke it, not the 1 s look

    async def marked() -> bool:
        got = await rows(pool, "SELECT sent_at IS NOT NULL FROM commands WHERE cmd_id = 'gc-1'")
        return got == [(True,)]

    deadline = time.monotonic() + 5
    while not await marked():
        assert time.monotonic() < deadline, "sent_at never set"
        await asyncio.sleep(0.05)
    entries = await rows(
        pool, "SELECT actor, detail FROM timeline WHERE kind = 'command' AND incident_id = %s",
        incident,
    )  # fmt: skip
    assert [(a, d["cmd_id"], d["event"]) for a, d in entries] == [(OFFICER, "gc-1", "sent")]
    assert sender.sent == 1


async def test_a_gateway_away_gets_the_command_when_it_returns(
    pool: AsyncConnectionPool, sender: CommandSender, mosquitto: Mosquitto
) -> None:
    async with gateway_client(mosquitto, "gw-away", clean=True) as gw:
        await gw.subscribe(f"{PREFIX}/gw-away/cmd/#", qos=1)  # its session, then it goes away
    await enqueue(pool, "gc-away", "gw-away", None)

    async def sent() -> bool:
        got = await rows(pool, "SELECT sent_at IS NOT NULL FROM commands WHERE cmd_id = 'gc-away'")
        return got == [(True,)]

    deadline = time.monotonic() + 5
    while not await sent():  # the broker took it for the gateway that is away
        assert time.monotonic() < deadline, "never sent"
        await asyncio.sleep(0.05)
    async with gateway_client(mosquitto, "gw-away", clean=False) as gw:
        message = await next_command(gw, 5)  # no subscribe: the session had it waiting
    assert json.loads(message.payload)["cmd_id"] == "gc-away"
