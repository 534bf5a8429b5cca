"""A gmqtt client for reading a QoS 1 stream: the gateway's reports and the interlock's.

Both processes read linked detectors' reports at the full rate of the site, so what a message
costs beyond its parse matters twice. Two changes to gmqtt:

* The gateway's QoS 1 acknowledgements of one read leave in one write, once ``settled`` says
  that what the read's messages caused is done (the bus's ``when_done``: a leak's alarm is
  committed by then): one ``send()`` a burst instead of one a message (~9 % of the gateway's
  CPU). gmqtt asks for the ack before it hands the message over, so the acks are taken at the
  end of the read, by a callback scheduled with the first one. With ``settled=None`` (the
  interlock) each ack leaves as gmqtt sends it, before the message is handled: at idle that
  write wakes the broker while the interlock builds its close, and the close then finds it
  awake (idle p50 1.62-1.74 ms in 4 runs acking first, 1.62-2.48 in 6 acking after the
  close; docs/performance.md).
* No reconnects of its own: it calls ``reconnect`` when the link drops, and the owner's session
  loop opens a fresh client instead (gmqtt's reconnect could stall after a failed attempt while
  the broker was down, seen in the broker-restart test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import gmqtt  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTCommands  # type: ignore[import-untyped]

__all__ = ["Settled", "StreamClient", "at_once"]

Settled: TypeAlias = Callable[[Callable[[], object]], None]  # run this once all is handled
_PUBACK_V311: Final = bytes((0x40, 0x02))  # PUBACK, remaining length 2: then the packet id


def at_once(callback: Callable[[], object]) -> None:
    callback()


class StreamClient(gmqtt.Client):  # type: ignore[misc]
    """gmqtt with no reconnects of its own and, given ``settled``, its acks batched per read
    (the module's text)."""

    def __init__(self, client_id: str, settled: Settled | None, **options: Any) -> None:
        super().__init__(client_id, **options)
        self._acks: list[bytes] = []
        self._settled = settled

    async def reconnect(self, delay: bool = False) -> None:
        """Nothing: the owner's session loop reconnects."""

    def _send_command_with_mid(self, cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        settled = self._settled
        if cmd != MQTTCommands.PUBACK or dup or settled is None:
            super()._send_command_with_mid(cmd, mid, dup, reason_code)
            return
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._read_done, settled)
        self._acks.append(_PUBACK_V311 + mid.to_bytes(2, "big"))

    def _read_done(self, settled: Settled) -> None:
        """The read's messages were handed over: ack them once what they caused is done."""
        acks, self._acks = b"".join(self._acks), []
        connection = self._connection
        # A link lost meanwhile: the broker sends the unacknowledged again on the next one.
        settled(lambda: connection.send_package(acks))
