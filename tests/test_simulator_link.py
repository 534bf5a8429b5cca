"""The simulator against the real serial side of the bridge (firmware_bridge.link) over a pty:
the two ends of KSP/1 written by different people must agree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from firmware_bridge import ksp
from firmware_bridge.link import LinkConfig, LinkEvent, ReceiverState, ReportReceived, SerialLink
from firmware_bridge.simulator import PtyPort, SimDetector, SimReceiver, SimValve, unplug

WAIT = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_simulated_receiver_and_the_bridge_link_agree(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "ttyKIT0")
    receiver = SimReceiver(port, heartbeat_s=0.3)
    detector = SimDetector(0x1A2B3C4D)
    valve = SimValve(0x00C0FFEE, close_time_s=0.1)
    receiver.add(detector)
    receiver.add(valve)
    events: list[LinkEvent] = []

    def consume(event: LinkEvent) -> bool:
        events.append(event)
        return True

    link = SerialLink(
        LinkConfig(str(port.link_path), heartbeat_timeout_s=1.0, backoff_max_s=0.3),
        consume,
    )

    def reports(device_id: int) -> list[ksp.Report]:
        return [
            e.report
            for e in events
            if isinstance(e, ReportReceived) and e.report.device_id == device_id
        ]

    await port.start()
    await link.start()
    try:
        await until(lambda: link.connected, "link opened the pty")
        await receiver.start()
        await until(lambda: len(reports(valve.device_id)) == 1, "power_on reports")

        receiver.drop_next_acks(1)  # the retransmission must be ACKed, and delivered once
        detector.set_lel(30.0)
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
        alarms = [r for r in reports(detector.device_id) if r.event is ksp.Event.ALARM]
        assert len(alarms) == 1
        assert receiver.stats.retransmits >= 1

        assert await link.send_command(valve.device_id, ksp.CommandCode.CLOSE_VALVE) == "ok"
        await until(
            lambda: any(r.body.state is ksp.ValveState.CLOSED for r in reports(valve.device_id)),  # type: ignore[union-attr]
            "valve reports closed",
        )
        assert await link.send_command(0xDEADBEEF, ksp.CommandCode.QUERY) == "unknown_device"

        await unplug(port, 0.3)
        await until(
            lambda: (
                [e.online for e in events if isinstance(e, ReceiverState)][-2:] == [False, True]
            ),
            "receiver offline on unplug, online again after replug",
        )
        detector.set_lel(0.0)
        async with asyncio.timeout(WAIT):
            await receiver.all_acked()
        assert reports(detector.device_id)[-1].body == ksp.DetectorBody(0, frozenset(), 24)
        assert receiver.stats.gave_up == 0
        assert not link.counters.drops
        assert not link.counters.parse_errors
    finally:
        await link.stop()
        await receiver.stop()
        await port.stop()
