"""The center's link stops though a stream's batch loop swallowed the cancel: on Python 3.11 its
``asyncio.wait_for`` (the linger for a batch, the wait for alarms first) returns instead of
raising when a message wakes it in the turn of the cancel (CPython gh-86296, gateway/tasks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from central.link import _Stream
from tests.central.test_link import eventually, link
from tests.support.services import Mosquitto
from tests.support.swallowed_cancel import within


async def test_stop_returns_though_a_batch_loop_swallowed_its_cancel(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the session's cleanup cancelled its batch loop once and waited: the loop went
    back to waiting for the next message (after a lost link none can come: the stream never
    reconnected) and Link.stop() waited for good."""
    swallowed = asyncio.Event()

    async def batches(self: _Stream, client: Any) -> None:
        try:
            await asyncio.Event().wait()  # in wait_for(wake, linger_s) ...
        except asyncio.CancelledError:
            swallowed.set()  # ... a message woke it in the cancel's turn: wait_for returned
        await asyncio.Event().wait()  # waiting for the next message

    monkeypatch.setattr(_Stream, "_batches", batches)
    the_link = link(mosquitto.url, None, "c1")  # type: ignore[arg-type]  # nothing is applied
    await the_link.start()
    await eventually(lambda: all(the_link.ready().values()), 15, "the streams subscribed")
    await within(the_link.stop(), 5, "Link.stop()")
    assert swallowed.is_set()  # the premise: the first cancel was lost
