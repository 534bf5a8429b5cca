"""The center's link with a real Mosquitto and a real PostgreSQL: PUBACK only after commit, a
database outage held (never acked, never dropped), two instances sharing one stream, retained
summaries read at start."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from central.db import open_pool, upgrade
from central.inbound import AlarmEvent, Inbound
from central.ingest import Applied, Ingest
from central.link import Link, _AlarmsFirst, _read_in_slices
from central.metrics import CentralMetrics
from tests.central.ingest_messages import PREFIX, event, rows, summary
from tests.support.postgres import PostgreSQL, fresh_database
from tests.support.services import Mosquitto

GROUP = "g"


async def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def count(pool: AsyncConnectionPool, query: str) -> int:
    return int((await rows(pool, query))[0][0])


def link(url: str, pool: AsyncConnectionPool, instance: str) -> Link:
    return Link(
        url,
        instance=instance,
        group=GROUP,
        prefix=PREFIX,
        session_expiry_s=3600,
        ingest=Ingest(pool, instance),
        metrics=CentralMetrics(CollectorRegistry()),
    )


@contextlib.asynccontextmanager
async def running(the_link: Link) -> AsyncIterator[Link]:
    await the_link.start()
    try:
        await eventually(lambda: all(the_link.ready().values()), 15, "links subscribed")
        yield the_link
    finally:
        await the_link.stop()


def event_payload(gateway: str, alarm: str, revision: int) -> tuple[str, bytes]:
    body = event(gateway, alarm, revision, site=f"s-{alarm}").event
    return f"{PREFIX}/{gateway}/alarms/events", json.dumps(body).encode()


async def publish(url: str, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="test-publisher") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


@pytest.fixture
def cluster() -> Iterator[PostgreSQL]:
    """A PostgreSQL of this test's own, to stop and start."""
    pg = PostgreSQL()
    pg.start()
    try:
        yield pg
    finally:
        pg.remove()


async def test_acked_only_after_commit_and_a_database_outage_loses_and_doubles_nothing(
    cluster: PostgreSQL, own_mosquitto: Mosquitto
) -> None:
    dsn = fresh_database(cluster.dsn)
    upgrade(dsn)
    pool = await open_pool(dsn)
    try:
        first = [event_payload("gw1", f"a{i}", 1) for i in range(150)]
        second = [event_payload("gw1", f"b{i}", 1) for i in range(150)]
        async with running(link(own_mosquitto.url, pool, "one")) as one:
            cluster.stop()
            await publish(own_mosquitto.url, first)
            events = one.streams["events"]
            await eventually(lambda: events.busy, 10, "a batch being applied")
            await asyncio.sleep(2)
            assert events.counts["received"] == 150
            assert events.counts["acked"] == 0  # nothing acknowledged while nothing committed
        # The instance is gone with its batch unacknowledged; its session keeps them.
        cluster.start()
        async with running(link(own_mosquitto.url, pool, "one")) as again:
            redelivered = again.streams["events"]
            await eventually(lambda: redelivered.counts["acked"] >= 150, 30, "redelivery")
            # An outage under a running link: the batch waits, then commits, once.
            cluster.stop()
            await publish(own_mosquitto.url, second)
            await eventually(lambda: again.streams["events"].busy, 10, "a batch being applied")
            await asyncio.sleep(1)
            assert again.streams["events"].counts["acked"] == 150
            cluster.start()
            await eventually(lambda: again.streams["events"].counts["acked"] >= 300, 30, "acks")
        total = await count(pool, "SELECT count(*) FROM alarm_events")
        distinct = await count(
            pool, "SELECT count(DISTINCT (alarm_id, revision)) FROM alarm_events"
        )
        assert (total, distinct) == (300, 300)
        assert await count(pool, "SELECT count(*) FROM alarms") == 300
    finally:
        await pool.close()


async def test_two_instances_in_one_group_split_the_stream_and_apply_each_event_once(
    pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    upgrade(pg_dsn)
    pool = await open_pool(pg_dsn)
    try:
        published = [event_payload("gw2", f"c{i}", r) for i in range(300) for r in (1, 2)]
        async with (
            running(link(own_mosquitto.url, pool, "a")) as a,
            running(link(own_mosquitto.url, pool, "b")) as b,
        ):
            await publish(own_mosquitto.url, published)
            both = (a.streams["events"], b.streams["events"])
            await eventually(lambda: sum(s.counts["acked"] for s in both) >= 600, 30, "all")
            await asyncio.sleep(0.5)  # nothing more comes: no copy to a second instance
            assert sum(s.counts["received"] for s in both) == 600
            assert all(s.counts["received"] > 0 for s in both)  # the group shared it
        got = await rows(
            pool, "SELECT received_by, count(*) FROM alarm_events GROUP BY 1 ORDER BY 1"
        )
        assert [name for name, _ in got] == ["a", "b"]
        assert sum(n for _, n in got) == 600
        assert await count(pool, "SELECT count(*) FROM alarms WHERE revision = 2") == 300
    finally:
        await pool.close()


async def test_retained_summaries_present_before_the_start_are_read(
    pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    upgrade(pg_dsn)
    pool = await open_pool(pg_dsn)
    try:
        stored = [
            (f"{PREFIX}/gw3/sites/r-{i}/summary", json.dumps(summary("gw3", f"r-{i}").summary))
            for i in range(120)
        ]
        await publish(own_mosquitto.url, [(t, p.encode()) for t, p in stored], retain=True)
        await publish(own_mosquitto.url, [(f"{PREFIX}/gw3/availability", b"online")], retain=True)
        async with running(link(own_mosquitto.url, pool, "r")) as one:
            await asyncio.wait_for(one.retained_done.wait(), 30)
            # The shared subscription got none of them (MQTT 5); the plain one all of them.
            assert one.streams["state"].counts["received"] == 0
            assert one.streams["retained"].counts["applied"] == 121
            assert await count(pool, "SELECT count(*) FROM sites WHERE gateway_id = 'gw3'") == 120
            assert (await rows(pool, "SELECT online FROM gateways WHERE gateway_id = 'gw3'")) == [
                (True,)
            ]
            # After the retained read, a live summary comes through the shared stream.
            live = summary("gw3", "r-new", at=60).summary
            await publish(
                own_mosquitto.url,
                [(f"{PREFIX}/gw3/sites/r-new/summary", json.dumps(live).encode())],
            )

            async def all_sites() -> bool:
                sql = "SELECT count(*) FROM sites WHERE gateway_id = 'gw3'"
                return await count(pool, sql) == 121

            await eventually(all_sites, 10, "the live summary")
            assert one.streams["state"].counts["applied"] >= 1
    finally:
        await pool.close()


async def test_bad_messages_are_counted_and_acknowledged(
    pg_dsn: str, own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    upgrade(pg_dsn)
    pool = await open_pool(pg_dsn)
    try:
        async with running(link(own_mosquitto.url, pool, "bad")) as one:
            await publish(
                own_mosquitto.url,
                [(f"{PREFIX}/gw4/alarms/events", b"{not json"), event_payload("gw4", "d1", 1)],
            )
            events = one.streams["events"]
            await eventually(lambda: events.counts["acked"] >= 2, 10, "both acked")
            assert events.counts["bad"] == 1
        assert await count(pool, "SELECT count(*) FROM alarm_events") == 1
    finally:
        await pool.close()


class _Refusing:
    """An ingest whose database refuses every batch holding alarm ``poison`` (as PostgreSQL
    refuses a value it cannot store), and takes every other batch."""

    def __init__(self) -> None:
        self.taken: list[str] = []

    async def apply(self, batch: Sequence[Inbound]) -> Applied:
        ids = [m.alarm_id for m in batch if isinstance(m, AlarmEvent)]
        if "poison" in ids:
            raise psycopg.errors.DataError("invalid input syntax")
        self.taken += ids
        return Applied(events_new=len(ids))


async def test_a_message_the_database_refuses_is_set_apart_and_the_rest_goes_on(
    own_mosquitto: Mosquitto,
) -> None:
    ingest = _Refusing()
    one = Link(
        own_mosquitto.url,
        instance="poison",
        group=GROUP,
        prefix=PREFIX,
        session_expiry_s=3600,
        ingest=ingest,
        metrics=CentralMetrics(CollectorRegistry()),
    )
    names = [f"p{i}" for i in range(40)]
    names.insert(17, "poison")
    async with running(one):
        events = one.streams["events"]
        # Whatever batches they arrive in, the one holding the poison is split until it is alone.
        await publish(own_mosquitto.url, [event_payload("gw5", n, 1) for n in names])
        await eventually(lambda: events.counts["acked"] >= 41, 20, "every message acked")
    assert ingest.taken == [n for n in names if n != "poison"]  # in order, each once
    assert events.counts["refused"] == 1


async def test_a_retired_instance_hands_over_its_share_and_is_dealt_nothing_more(
    pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    upgrade(pg_dsn)
    pool = await open_pool(pg_dsn)
    try:
        async with running(link(own_mosquitto.url, pool, "stays")) as stays:
            async with running(link(own_mosquitto.url, pool, "goes")):
                pass  # it joined the group, and left with its session kept
            await publish(own_mosquitto.url, [event_payload("gw6", f"e{i}", 1) for i in range(100)])
            await asyncio.sleep(1)
            held = 100 - stays.streams["events"].counts["received"]
            assert held > 0  # the broker keeps dealing to the absent member (Mosquitto 2.0)
            taken = await link(own_mosquitto.url, pool, "goes").retire(quiet_s=0.5, within_s=30)
            assert taken == held
            await publish(own_mosquitto.url, [event_payload("gw6", f"f{i}", 1) for i in range(50)])
            events = stays.streams["events"]
            await eventually(lambda: events.counts["acked"] >= 100 - held + 50, 10, "the rest")
        assert await count(pool, "SELECT count(*) FROM alarm_events") == 150
        again = link(own_mosquitto.url, pool, "goes")
        assert await again.retire(quiet_s=0.5, within_s=30) == 0  # its sessions are gone
    finally:
        await pool.close()


async def test_a_summaries_connection_reads_its_socket_in_slices() -> None:
    """gmqtt hands every message of one read to on_message before the event loop runs anything
    else: a storm's summaries are read 16 KiB at a time, so an alarm gets its turn between."""
    sent = bytes(200_000)
    received: list[int] = []
    done = asyncio.Event()

    class Counting(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(len(data))
            if sum(received) == len(sent):
                done.set()

    async def send(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sent)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(send, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(Counting, "127.0.0.1", port)
    try:
        _read_in_slices(SimpleNamespace(_connection=SimpleNamespace(_transport=transport)), 16384)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        transport.close()
        server.close()
    assert max(received) <= 16384
    assert sum(received) == len(sent)


async def test_an_alarm_in_flight_holds_the_summaries_back_for_a_moment_at_most() -> None:
    peers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _r, w: peers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(
        asyncio.Protocol, "127.0.0.1", port
    )
    gate = _AlarmsFirst()
    gate.reading(transport, True)
    try:
        gate.hold()  # an alarm came
        assert not transport.is_reading()
        batch = asyncio.create_task(gate.wait())  # a summaries batch would start
        await asyncio.sleep(0)
        assert not batch.done()
        gate.release()  # its batch committed
        await asyncio.wait_for(batch, 1)
        assert transport.is_reading()
        gate.hold()  # alarms that keep coming hold the summaries a moment each, no longer
        await eventually(transport.is_reading, 5, "reading again")
        await asyncio.wait_for(gate.wait(), 5)
    finally:
        transport.close()
        for peer in peers:
            peer.close()
        server.close()
        await server.wait_closed()
