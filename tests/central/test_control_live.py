"""The live side: a NOTIFY sent from another connection (as another instance's ingest does)
reaches an open ``/api/stream`` over real HTTP; a slow subscriber is dropped, never blocking the
others; the hub comes back after the database dropped its connection; a page misses nothing that
changed before its stream connected."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from playwright.async_api import Browser, Route, expect

from central.notify import Change, Hub
from tests.central.control_seed import PASSWORD, City, city_app
from tests.support.services import free_port


@pytest.fixture
async def served(pg_dsn: str) -> AsyncIterator[tuple[City, str]]:
    async with city_app(pg_dsn) as city:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                city.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.02)
        try:
            yield city, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


async def _notify(dsn: str, payload: dict[str, Any]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_notify('gasgate_central', %s)", (json.dumps(payload),))


async def _reading_waits(dsn: str, table: str) -> None:
    """Until a query waits for a lock on ``table``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(500):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                (table,),
            )
            if (await cur.fetchone() or (0,))[0]:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"nothing waited for {table}")


async def _data_lines(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def test_the_stream_delivers_what_another_connection_notified(
    served: tuple[City, str],
) -> None:
    city, url = served
    headers = {"Authorization": f"Bearer {city.tokens['wang']}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = _data_lines(response)
        city.rows("UPDATE incidents SET state = 'acknowledged', acknowledged_by = 'zhou'"
                  " WHERE incident_id = %s RETURNING 1", city.emergency)  # fmt: skip
        await _notify(city.dsn, {"incidents": [city.emergency], "gateways": ["gw2"]})
        body = await asyncio.wait_for(anext(lines), 5)
        (incident,) = body["incidents"]
        assert incident["incident_id"] == city.emergency
        assert incident["state"] == "acknowledged"
        assert incident["acknowledged_by"] == "zhou"
        gateways = await asyncio.wait_for(anext(lines), 5)
        assert [g["gateway_id"] for g in gateways["gateways"]] == ["gw2"]


async def test_an_incident_is_not_held_behind_a_slow_gateway_read(
    served: tuple[City, str],
) -> None:
    """A storm's summaries make the stream re-read gateways; an alarm's incident meanwhile goes
    out at once, and the gateways come once their read can go on."""
    city, url = served
    headers = {"Authorization": f"Bearer {city.tokens['wang']}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/stream") as response,
        await psycopg.AsyncConnection.connect(city.dsn) as holder,
    ):
        lines = _data_lines(response)
        await holder.execute("LOCK TABLE gateways IN ACCESS EXCLUSIVE MODE")  # reads wait
        await _notify(city.dsn, {"gateways": ["gw1"]})
        await _reading_waits(city.dsn, "gateways")
        await _notify(city.dsn, {"incidents": [city.emergency], "gateways": ["gw2"]})
        body = await asyncio.wait_for(anext(lines), 5)
        assert [i["incident_id"] for i in body["incidents"]] == [city.emergency]
        await holder.rollback()
        seen: list[str] = []
        while len(seen) < 2:
            more = await asyncio.wait_for(anext(lines), 5)
            seen += [g["gateway_id"] for g in more["gateways"]]
        assert sorted(seen) == ["gw1", "gw2"]


async def test_the_stream_shows_a_district_limited_officer_only_their_district(
    served: tuple[City, str],
) -> None:
    city, url = served
    headers = {"Authorization": f"Bearer {city.tokens['li']}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/stream") as response,
    ):
        lines = _data_lines(response)
        await _notify(city.dsn, {"incidents": [city.emergency]})  # Xuhui: not li's
        await _notify(city.dsn, {"incidents": [city.offline]})
        body = await asyncio.wait_for(anext(lines), 5)
        assert [i["incident_id"] for i in body["incidents"]] == [city.offline]


async def test_a_page_reads_again_once_its_stream_is_connected(
    served: tuple[City, str], browser: Browser
) -> None:
    """A change between the page's render and its stream's connection (a busy box: the incident
    closed while the page after the resolve loaded) was told to nobody listening there: the page
    reads again once connected, not a minute later."""
    city, url = served
    page = await (await browser.new_context(locale="zh-CN")).new_page()
    await page.goto(f"{url}/login")
    await page.fill("input[name=name]", "wang")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form.login button[type=submit]")
    await page.wait_for_url(f"{url}/")
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        held.set()
        await release.wait()
        await route.continue_()

    await page.route("**/api/stream", hold)
    await page.goto(f"{url}/incidents/{city.emergency}")
    state = page.locator("#live-head .state")
    await expect(state).to_have_text("新事件")
    await asyncio.wait_for(held.wait(), 10)
    city.rows(
        "UPDATE incidents SET state = 'acknowledged', acknowledged_by = 'zhou',"
        " acknowledged_at = now() WHERE incident_id = %s RETURNING 1",
        city.emergency,
    )
    await _notify(city.dsn, {"incidents": [city.emergency]})  # the stream not connected yet
    release.set()
    await expect(state).to_have_text("已接警")
    await page.context.close()


async def test_an_officer_step_reaches_the_stream(served: tuple[City, str]) -> None:
    city, url = served
    headers = {"Authorization": f"Bearer {city.tokens['wang']}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/stream") as response,
    ):
        lines = _data_lines(response)
        answer = await client.post(f"/api/incidents/{city.offline}/acknowledge", json={})
        assert answer.status_code == 200
        body = await asyncio.wait_for(anext(lines), 5)
        assert body["incidents"][0]["state"] == "acknowledged"


async def test_a_slow_subscriber_is_dropped_and_the_others_still_get_everything(
    pg_dsn: str,
) -> None:
    hub = Hub(pg_dsn, queue_size=3)
    with hub.subscribe() as slow, hub.subscribe() as quick:
        for n in range(5):
            hub.publish(Change(incidents=(n,)))
            got = await quick.next()
            assert got.incidents == (n,)
        assert (await slow.next()).dropped
        assert hub.dropped == 1
        hub.publish(Change(incidents=(9,)))
        assert slow.queue.empty()  # no longer subscribed
        assert (await quick.next()).incidents == (9,)


async def test_waiting_changes_are_merged_into_one_read(pg_dsn: str) -> None:
    hub = Hub(pg_dsn)
    with hub.subscribe() as sub:
        hub.publish(Change(incidents=(1, 2)))
        hub.publish(Change(incidents=(2, 3), commands=("c",)))
        merged = await sub.next()
    assert merged == Change(incidents=(1, 2, 3), commands=("c",))


async def test_the_hub_listens_again_after_its_connection_is_killed(pg_dsn: str) -> None:
    hub = Hub(pg_dsn)
    await hub.start()
    try:
        await hub.wait_listening(10)
        with hub.subscribe() as sub:
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
                )
            resync = await asyncio.wait_for(_first(sub, lambda c: c.resync), 10)
            assert resync.resync
            await _notify(pg_dsn, {"incidents": [42]})
            got = await asyncio.wait_for(_first(sub, lambda c: 42 in c.incidents), 5)
            assert 42 in got.incidents
    finally:
        await hub.stop()


async def _first(sub: Any, match: Any) -> Change:
    while True:
        change: Change = await sub.next()
        if match(change):
            return change


async def test_bad_payloads_are_ignored(pg_dsn: str) -> None:
    hub = Hub(pg_dsn)
    await hub.start()
    try:
        await hub.wait_listening(10)
        with hub.subscribe() as sub:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.next(), 0.2)  # the start's resync, if any
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                await conn.execute("NOTIFY gasgate_central, 'not json'")
            await _notify(pg_dsn, {"incidents": [7]})
            assert (await asyncio.wait_for(sub.next(), 5)).incidents == (7,)
    finally:
        await hub.stop()
