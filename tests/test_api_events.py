"""The live event stream ends cleanly when the gateway stops (issue 15, item 8): also a stream
that had fallen behind (its queue full, so no room for the end), and one opened as the server
stops; nothing is cancelled mid-send and no ERROR is logged. A real gateway, broker and HTTP
server; a real SSE client."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.api.state import Change
from tests.support.api_world import running_world
from tests.support.services import Mosquitto

BURST = 1000  # more changes than a stream's queue holds


async def test_stopping_with_a_stream_behind_logs_no_error(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_world(tmp_path, mosquitto.url) as world:
        broadcaster = world.gateway.api.context.broadcaster
        client = world.client("officer")
        async with client, client.stream("GET", "/api/events") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(": connected")
            # A burst the stream cannot take in one go (e.g. a receiver dropping a whole
            # district at once): its queue is full when the gateway stops.
            for n in range(BURST):
                broadcaster.publish(Change("alarm", None, {"alarm_id": f"a-{n}"}))
            await world.gateway.stop()
            rest = [line async for line in lines]  # the server ended the stream
        with broadcaster.listen() as late:  # a stream opened after the stop ends at once
            assert late.get_nowait() is None
    assert len(rest) < 2 * BURST
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
