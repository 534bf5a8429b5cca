from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import pytest

from gateway.bus import BURST, Bus
from gateway.clock import ManualClock


@dataclass(frozen=True)
class Ping:
    key: str
    n: int


async def test_same_key_handled_in_order_one_at_a_time() -> None:
    bus = Bus()
    seen: list[tuple[str, int]] = []
    busy: set[str] = set()

    async def slow(event: Ping) -> None:
        assert event.key not in busy, "two events of one key handled at once"
        busy.add(event.key)
        await asyncio.sleep(0.001 * (event.n % 3))
        seen.append((event.key, event.n))
        busy.discard(event.key)

    bus.subscribe(Ping, slow)
    for n in range(30):
        bus.publish(Ping("a" if n % 2 else "b", n))
    await bus.join()
    assert [n for k, n in seen if k == "a"] == list(range(1, 30, 2))
    assert [n for k, n in seen if k == "b"] == list(range(0, 30, 2))
    assert bus.backlog == 0


async def test_failing_handler_does_not_stop_others() -> None:
    bus = Bus()
    got: list[int] = []

    def broken(event: Ping) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Ping, broken, name="broken")
    bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping("x", 1))
    bus.publish(Ping("x", 2))
    await bus.join()
    assert got == [1, 2]
    assert bus.counts["handler_error.broken"] == 2


async def test_events_published_by_handlers_are_joined() -> None:
    bus = Bus()
    got: list[int] = []

    def chain(event: Ping) -> None:
        got.append(event.n)
        if event.n < 5:
            bus.publish(Ping(f"k{event.n}", event.n + 1))

    bus.subscribe(Ping, chain)
    bus.publish(Ping("start", 0))
    await bus.join()
    assert got == [0, 1, 2, 3, 4, 5]


async def test_sync_and_async_handlers_keep_subscription_order_per_event() -> None:
    bus = Bus()
    calls: list[tuple[str, int]] = []

    async def middle(event: Ping) -> None:
        await asyncio.sleep(0)
        calls.append(("async", event.n))

    bus.subscribe(Ping, lambda e: calls.append(("first", e.n)))
    bus.subscribe(Ping, middle)
    bus.subscribe(Ping, lambda e: calls.append(("last", e.n)))
    for n in range(3):
        bus.publish(Ping("one-key", n))
    await bus.join()
    assert calls == [(step, n) for n in range(3) for step in ("first", "async", "last")]


async def test_a_burst_longer_than_one_dispatch_is_handled_in_order() -> None:
    bus = Bus()
    got: dict[str, list[int]] = {}
    bus.subscribe(Ping, lambda e: got.setdefault(e.key, []).append(e.n))
    for n in range(3 * BURST):
        bus.publish(Ping(f"k{n % (2 * BURST)}", n))
    assert bus.backlog == 3 * BURST  # publish() itself runs no handler
    await bus.join()
    assert sum(map(len, got.values())) == 3 * BURST
    assert all(ns == sorted(ns) for ns in got.values())
    assert bus.backlog == 0


async def test_an_urgent_event_and_what_it_starts_go_ahead_and_then_yield() -> None:
    bus = Bus()
    order: list[str] = []

    def handle(event: Ping) -> None:
        order.append(event.key)
        if event.key == "leak":
            bus.publish(Ping("close", 0))  # what the leak's handlers start is urgent too
        if event.key == "close":
            asyncio.get_running_loop().call_soon(order.append, "sent")  # the command's send

    bus.subscribe(Ping, handle)
    for n in range(10):
        bus.publish(Ping(f"periodic{n}", n))
    bus.publish(Ping("leak", 0), urgent=True)
    await bus.join()
    assert order == ["leak", "close", "sent"] + [f"periodic{n}" for n in range(10)]


async def test_a_plain_handler_letting_out_a_cancelled_error_does_not_strand_its_lane() -> None:
    """A CancelledError from a plain handler (a cancelled future's ``result()``) is its failure.
    Let out of the dispatch, it left the lane neither waiting for dispatch nor in a task: the
    key's later events were never handled, join() never returned, no report was acknowledged."""
    bus = Bus()
    got: list[int] = []
    acked: list[str] = []

    def cancelled(event: Ping) -> None:
        if event.n == 1:
            raise asyncio.CancelledError

    bus.subscribe(Ping, cancelled, name="cancelled")
    bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping("detector", 1))
    bus.when_done(lambda: acked.append("report 1"))
    await asyncio.sleep(0)  # the dispatch ran
    bus.publish(Ping("detector", 2))  # the detector's next report
    await asyncio.wait_for(bus.join(), 2)
    assert got == [1, 2]
    assert acked == ["report 1"]
    assert bus.counts["handler_error.cancelled"] == 1


async def test_an_async_handler_that_never_finishes_is_cancelled_named_and_its_lane_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(handler_timeout_s=0.2)
    never = asyncio.Event()  # an acknowledgement that never comes
    got: list[int] = []

    async def hangs(event: Ping) -> None:
        if event.n == 1:
            await never.wait()

    bus.subscribe(Ping, hangs, name="hangs")
    bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping("detector", 1))
    bus.publish(Ping("detector", 2))
    bus.publish(Ping("other", 3))
    await asyncio.sleep(0.05)
    busy = bus.lanes()
    assert list(busy) == ["detector"]
    assert busy["detector"].startswith("2 event(s), in async handler hangs for 0.")
    await asyncio.wait_for(bus.join(), 2)
    assert got == [3, 1, 2]
    assert bus.counts["handler_timeout.hangs"] == 1
    assert "bus lane detector: handler hangs still busy with Ping after 0.2 s" in caplog.text


async def test_an_async_handler_whose_future_is_cancelled_elsewhere_fails_alone() -> None:
    """Its CancelledError once ended the lane's task: the rest of the lane was dropped unhandled
    (join() returned all the same) and every later when_done waited forever."""
    bus = Bus()
    reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    got: list[int] = []
    acked: list[str] = []

    def waits(event: Ping) -> Awaitable[None] | None:
        return reply if event.n == 1 else None

    bus.subscribe(Ping, waits, name="waits")
    bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping("detector", 1))
    bus.publish(Ping("detector", 2))
    bus.when_done(lambda: acked.append("reports 1 and 2"))
    await asyncio.sleep(0)  # the dispatch ran: the lane waits for ``reply`` in its task
    reply.cancel()  # as a client cancels what it still awaited when its link drops
    await asyncio.wait_for(bus.join(), 2)
    assert got == [1, 2]
    assert acked == ["reports 1 and 2"]
    assert bus.counts["handler_error.waits"] == 1


def test_manual_clock_fires_timers_in_order_and_ignores_wall_jumps() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(10, lambda: fired.append("ten"))
    clock.call_later(5, lambda: fired.append("five"))
    cancelled = clock.call_later(7, lambda: fired.append("never"))
    cancelled.cancel()
    clock.jump_wall(3600)
    clock.advance(6)
    assert fired == ["five"]
    start = clock.monotonic()
    clock.jump_wall(-7200)
    clock.advance(4)
    assert fired == ["five", "ten"]
    assert clock.monotonic() - start == 4


@dataclass(frozen=True)
class Verdict:
    key: str
    n: int


async def test_when_done_waits_for_what_the_events_caused_on_other_keys() -> None:
    """The report stream's acknowledgement: only after the report's consequences (a verdict on
    another key, and its own consequence) were handled."""
    bus = Bus()
    handled: list[str] = []
    acked: list[list[str]] = []

    def rule(event: Ping) -> None:
        handled.append(f"report {event.n}")
        bus.publish(Verdict(f"alarm{event.n}", 2))

    def alarm(event: Verdict) -> None:
        handled.append(f"{event.key} step {event.n}")
        if event.n:
            bus.publish(Verdict(event.key, event.n - 1))

    bus.subscribe(Ping, rule)
    bus.subscribe(Verdict, alarm)
    bus.publish(Ping("detector", 1))
    bus.when_done(lambda: acked.append(list(handled)))
    assert acked == []
    await bus.join()
    assert acked == [["report 1", "alarm1 step 2", "alarm1 step 1", "alarm1 step 0"]]


async def test_when_done_is_not_held_back_by_later_events() -> None:
    bus = Bus()
    order: list[str] = []
    bus.subscribe(Ping, lambda e: order.append(f"ping {e.n}"))
    bus.publish(Ping("a", 1))
    bus.when_done(lambda: order.append("first done"))
    for n in range(2, 2 + BURST * 3):  # more than one dispatch of later events
        bus.publish(Ping(f"k{n}", n))
    bus.when_done(lambda: order.append("second done"))
    await bus.join()
    assert order.index("first done") == 1
    assert order[-1] == "second done"


async def test_when_done_follows_an_async_handler_across_its_awaits() -> None:
    bus = Bus()
    order: list[str] = []

    async def slow(event: Ping) -> None:
        await asyncio.sleep(0.01)
        bus.publish(Verdict("later", event.n))  # after an await: still this report's doing

    bus.subscribe(Ping, slow)
    bus.subscribe(Verdict, lambda e: order.append("verdict"))
    bus.publish(Ping("a", 1))
    bus.when_done(lambda: order.append("done"))
    bus.publish(Ping("b", 2))  # a newer epoch's report does not matter to the first callback
    await bus.join()
    assert order[:2] == ["verdict", "done"]


async def test_when_done_with_nothing_queued_runs_at_once() -> None:
    bus = Bus()
    ran: list[int] = []
    bus.when_done(lambda: ran.append(1))
    assert ran == [1]
