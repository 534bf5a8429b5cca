"""Fault: the serial line misbehaves while a receiver is reporting: noise bursts, frames with a
broken CRC, retransmissions (the receiver missed our ACK), and the USB adapter pulled out and
put back in the middle, with the report in flight sent again after the replug.

The bridge must recover without a restart and publish every report exactly once, in order.
(``tests/test_bridge.py`` and ``tests/test_link.py`` check each fault on its own.)
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from firmware_bridge import ksp
from tests.support.ksp_peer import RawPeer
from tests.support.services import Mosquitto
from tests.test_bridge import bridged, watching

DETECTOR_ID = 0x1A2B3C4D
REPORTS = 30
REPLUG_AT = 14


def report_frame(n: int) -> bytes:
    body = ksp.DetectorBody(n * 10, frozenset(), 20)  # n %LEL: tells the reports apart
    return ksp.encode(n, ksp.Report(DETECTOR_ID, ksp.Event.PERIODIC, 3000, -60, body))


async def pinged(peer: RawPeer) -> None:
    """Read what the link wrote (ACKs of reports before the replug) up to its first PING."""
    for _ in range(4 * REPORTS):
        if (await peer.next_message())[1] == ksp.Ping():
            return
    raise AssertionError("the link never pinged the replugged receiver")


async def test_noise_bad_crc_retransmits_and_a_replug_deliver_every_report_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    rng = random.Random(11)
    retransmitted = 0
    async with watching(mosquitto.url) as watcher, bridged(tmp_path, mosquitto.url) as rig:
        await rig.connected()
        await asyncio.wait_for(rig.bridge.mqtt_connected.wait(), 10)
        for n in range(REPORTS):
            frame = report_frame(n)
            broken = bytearray(frame)
            broken[-1] ^= 0x40
            noise = rng.randbytes(rng.randint(0, 24))
            rig.peer.write(noise + bytes(broken) + frame)
            if n % 3 == 0:
                rig.peer.write(frame)  # the receiver missed our ACK
                retransmitted += 1
            if n == REPLUG_AT:
                rig.peer.unplug()  # pulled out right after the report, before its ACK was read
                await asyncio.sleep(0.5)
                rig.peer.plug()
                await pinged(rig.peer)  # the bridge reopened the port by itself
                rig.peer.write(frame)  # the receiver sends the unacknowledged report again
                retransmitted += 1
            await asyncio.sleep(0.03)
        await watcher.wait_for(lambda: len(watcher.reports()) >= REPORTS, 30)
        await asyncio.sleep(1.0)  # any duplicate would arrive by now
        lels = [r["detector"]["lel_pct"] for _, r in watcher.reports()]
        assert lels == [float(n) for n in range(REPORTS)]
        counters = rig.bridge.link.counters
        # Bytes in the pty when it is pulled out are lost, as on a real USB adapter: the
        # report before the replug arrived once, from one of its two copies.
        assert retransmitted - 1 <= counters.duplicates <= retransmitted
        assert counters.frames["REPORT"] == REPORTS + counters.duplicates
        assert counters.drops["bad_crc"] >= REPORTS - 1  # one may be lost in the replug too
        assert rig.bridge.link.connected  # recovered without anyone restarting it
