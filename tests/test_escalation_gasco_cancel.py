"""The gas company link stops though a publish swallowed the cancel (aiomqtt 2.5's publish on
Python 3.11: tests/support/swallowed_cancel.py, gateway/tasks.py)."""

from __future__ import annotations

import asyncio

from gateway.clock import SystemClock
from gateway.escalation.config import GascoSettings
from gateway.escalation.gasco import GascoLink
from tests.support.swallowed_cancel import PubackWithTheCancel, within


async def test_stop_returns_though_a_summarys_puback_came_with_its_cancel() -> None:
    """Before cancel_and_wait, the summary task went back to waiting for its next round
    (summary_interval_s, 5 min by default) and stop() (gateway.stop()) waited with it."""
    client = PubackWithTheCancel(lambda topic, payload: topic.endswith("/summary"))
    link = GascoLink(
        GascoSettings(url="mqtt://127.0.0.1:1883"),
        "gw1",
        store=None,  # type: ignore[arg-type]  # no command comes: the store is never used
        clock=SystemClock(),
        desk=None,
        summaries=lambda: [{"site_id": "r-0001", "detectors": 1}],
        on_connected=lambda: None,
    )
    link._client_for = lambda: client  # type: ignore[method-assign, assignment, return-value]
    await link.start()
    await asyncio.wait_for(client.publishing.wait(), 2)
    assert link.connected.is_set()
    await within(link.stop(), 5, "GascoLink.stop()")
    assert client.swallowed.is_set()  # the premise: the first cancel was lost
    assert ("gasco/v1/gw1/availability", "offline") in client.published
