"""Tasks that are cancelled end, even when a PUBACK swallowed the cancel (gateway/tasks.py)."""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

import pytest

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector
from firmware_bridge.simulator.mqtt_device import MqttDevice
from gateway.mqtturl import MqttUrl
from gateway.tasks import cancel_and_wait, until_one_ends


async def test_a_cancel_that_asyncio_wait_for_swallowed_is_asked_again() -> None:
    puback = asyncio.Event()

    async def publishes() -> None:
        await asyncio.wait_for(puback.wait(), 10)  # as aiomqtt's publish() awaits its PUBACK
        await asyncio.Event().wait()  # then back to waiting for the next report

    task = asyncio.create_task(publishes())
    await asyncio.sleep(0)
    puback.set()
    await asyncio.sleep(0)  # the PUBACK's wait is done; wait_for has not returned yet
    if sys.version_info < (3, 12):  # the premise: one cancel is not enough (gh-86296)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()
    await asyncio.wait_for(cancel_and_wait([task], recancel_s=0.05), 2)
    assert task.cancelled()


async def test_the_exceptions_of_the_tasks_are_taken_and_a_done_task_is_no_trouble() -> None:
    async def fails() -> None:
        raise RuntimeError("link lost")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeper = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait([failed, sleeper])
    assert isinstance(failed.exception(), RuntimeError)
    assert sleeper.cancelled()


class _PubackWithTheCancel:
    """An aiomqtt client whose report publish returns when cancelled, as aiomqtt's publish()
    does on Python 3.11 when the PUBACK comes in the same turn as the cancel."""

    def __init__(self) -> None:
        self.publishing = asyncio.Event()
        self.published: list[str] = []

    async def __aenter__(self) -> _PubackWithTheCancel:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def publish(self, topic: str, payload: Any = None, **kwargs: Any) -> None:
        self.published.append(f"{topic} {payload!r}")
        if topic.endswith("/report") and not self.publishing.is_set():
            self.publishing.set()
            try:
                await asyncio.Event().wait()  # the PUBACK ...
            except asyncio.CancelledError:
                return  # ... came with the cancel: the publish returns, the cancel is gone

    @property
    def messages(self) -> Any:
        return self._never()

    async def _never(self) -> Any:
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached


async def test_a_simulated_device_stops_though_a_publish_swallowed_the_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker-restart test hung in Kit.stop() (1 of 10 runs beside two busy loops): a
    valve's report task went on to wait for its next report and the stop for it, for good."""
    client = _PubackWithTheCancel()
    monkeypatch.setattr(MqttUrl, "client", lambda self, **options: client)
    device = MqttDevice(
        "mqtt://127.0.0.1:1883",
        "det-1",
        ksp.DeviceKind.DETECTOR,
        model=SimDetector(1, battery_mv=0, interval_s=0.01),
    )
    await device.start()
    await asyncio.wait_for(client.publishing.wait(), 2)
    stop = asyncio.create_task(device.stop())
    done, _ = await asyncio.wait([stop], timeout=3)  # not wait_for: it would end it, silently
    try:
        assert done, "MqttDevice.stop() still waiting after 3 s"
    finally:
        await cancel_and_wait([stop])
    assert client.published[-1] == "kit/v1/det-1/availability 'offline'"


async def test_until_one_ends_ends_the_others_and_raises_what_ended_the_first() -> None:
    """A session's watcher fails (the link is lost) while its sender swallows the first cancel:
    the sender is asked again, and the watcher's error is what the session raises."""
    swallowed = asyncio.Event()

    async def sends() -> None:
        try:
            await asyncio.Event().wait()  # a PUBACK ...
        except asyncio.CancelledError:
            swallowed.set()  # ... that came with the cancel
        await asyncio.Event().wait()  # back to waiting for the next message

    async def watches() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("link lost")

    sender = asyncio.create_task(sends())
    session = asyncio.create_task(until_one_ends([sender, asyncio.create_task(watches())], 0.05))
    done, _ = await asyncio.wait([session], timeout=2)
    assert done, "until_one_ends still waiting after 2 s"
    with pytest.raises(RuntimeError, match="link lost"):
        session.result()
    assert swallowed.is_set()
    assert sender.cancelled()
