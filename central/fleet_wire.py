"""The fleet simulator's publisher: MQTT 5 connections that only publish QoS 1, encoded here.

A storm is a hundred thousand retained messages; the MQTT client libraries spend ~100 µs of
Python on each (paho measured 10-11 k/s on this box, whatever the connections), as much CPU as
the center it is meant to load. This writes pre-encoded PUBLISH packets in batches and counts
PUBACKs, keeping as many in flight as the broker's Receive Maximum allows (Mosquitto:
``max_inflight_messages``, 20 by default, 1,000 in deploy/central/mosquitto.conf).

Only what a publisher needs: CONNECT (clean start, no keep-alive: a storm ends before any
timeout), PUBLISH QoS 1, PUBACK, DISCONNECT. A PUBACK with a failure reason code, or the broker
closing the connection, fails the publish (:class:`WireError`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Final

from gateway.mqtturl import MqttUrl

__all__ = ["Wire", "WireError"]

Message = tuple[str, bytes]

_CONNACK, _PUBACK, _DISCONNECT = 0x20, 0x40, 0xE0
_BATCH: Final = 512  # packets per write
# CONNACK properties (MQTT 5 §3.2.2.3): id -> length (0: UTF-8 string / binary, -1: pair).
_PROPERTY_SIZES: Final = {
    0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x12: 0, 0x22: 2, 0x1F: 0, 0x26: -1,
    0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2, 0x1A: 0, 0x1C: 0, 0x15: 0, 0x16: 0,
}  # fmt: skip
_RECEIVE_MAXIMUM: Final = 0x21


class WireError(ConnectionError):
    """The broker refused the connection or a message, or went away."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _connect(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    variable = _string(b"MQTT") + bytes([5, flags, 0, 0, 0])  # v5, keep-alive 0, no properties
    payload = _string(client_id.encode())
    if username:
        payload += _string(username.encode())
    if password:
        payload += _string(password.encode())
    body = variable + payload
    return bytes([0x10]) + _varint(len(body)) + body


def _publish(topic: bytes, payload: bytes, packet_id: int, retain: bool) -> bytes:
    body_length = 2 + len(topic) + 2 + 1 + len(payload)
    head = bytes([0x32 | retain]) + _varint(body_length) + _string(topic)
    return b"".join((head, packet_id.to_bytes(2, "big"), b"\x00", payload))


def _receive_maximum(properties: bytes) -> int:
    i = 0
    while i < len(properties):
        prop, i = properties[i], i + 1
        size = _PROPERTY_SIZES.get(prop)
        if size is None:
            raise WireError(f"CONNACK property {prop:#x} unknown")
        if prop == _RECEIVE_MAXIMUM:
            return int.from_bytes(properties[i : i + 2], "big")
        if size > 0:
            i += size
        else:
            for _ in range(2 if size < 0 else 1):
                i += 2 + int.from_bytes(properties[i : i + 2], "big")
    return 65535


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return kind, await reader.readexactly(length)


def _decode_varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


class Wire:
    """One connection. :meth:`send` writes and returns while the last messages are still in
    flight; :meth:`drained` waits for every PUBACK."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receive_maximum: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._free: deque[int] = deque(range(1, receive_maximum + 1))
        self._receive_maximum = receive_maximum
        self._acked = asyncio.Event()
        self._failure: WireError | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())
        self.acked = 0

    @classmethod
    async def open(cls, url: MqttUrl, client_id: str, *, within: float = 10.0) -> Wire:
        context = ssl.create_default_context(cafile=url.ca_file) if url.tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port, ssl=context), within
        )
        writer.write(_connect(client_id, url.username, url.password))
        kind, body = await asyncio.wait_for(_packet(reader), within)
        if kind != _CONNACK or len(body) < 2 or body[1] != 0:
            writer.close()
            raise WireError(f"broker {url} refused the connection ({body[1:2].hex()})")
        length, start = _decode_varint(body, 2) if len(body) > 2 else (0, 2)
        return cls(reader, writer, _receive_maximum(body[start : start + length]))

    async def _read(self) -> None:
        try:
            while True:
                self._take(*await _packet(self._reader))
        except (asyncio.IncompleteReadError, OSError) as exc:
            self._failure = WireError(f"connection lost: {exc}")
        except WireError as exc:
            self._failure = exc
        self._acked.set()

    def _take(self, kind: int, body: bytes) -> None:
        if kind == _PUBACK:
            if len(body) > 2 and body[2] >= 0x80:
                raise WireError(f"PUBACK reason code {body[2]:#x}")
            self._free.append(int.from_bytes(body[:2], "big"))
            self.acked += 1
            self._acked.set()
        elif kind == _DISCONNECT:
            raise WireError(f"broker disconnected ({body[:1].hex()})")

    async def _wait_ack(self) -> None:
        self._acked.clear()
        await self._acked.wait()
        if self._failure is not None:
            raise self._failure

    async def send(self, messages: Sequence[Message], *, retain: bool) -> None:
        batch: list[bytes] = []
        for topic, payload in messages:
            while not self._free:
                self._flush(batch)
                await self._wait_ack()
            batch.append(_publish(topic.encode(), payload, self._free.popleft(), retain))
            if len(batch) >= _BATCH:
                self._flush(batch)
                await self._writer.drain()
        self._flush(batch)
        await self._writer.drain()

    def _flush(self, batch: list[bytes]) -> None:
        if self._failure is not None:
            raise self._failure
        if batch:
            self._writer.write(b"".join(batch))
            batch.clear()

    async def drained(self) -> None:
        while len(self._free) < self._receive_maximum:
            await self._wait_ack()

    async def close(self) -> None:
        if self._failure is None and not self._writer.is_closing():
            self._writer.write(bytes([_DISCONNECT, 0]))
        self._task.cancel()
        self._writer.close()
        await asyncio.gather(self._task, return_exceptions=True)
