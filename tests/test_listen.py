"""The HTTP listener of the console and the center: accepted connections send at once."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.listen import tcp_listener


async def _accepted_nodelay(host: str) -> int:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listener = tcp_listener(host, 0)
    server = await asyncio.start_server(accepted, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()


async def test_an_accepted_connection_has_nagle_off() -> None:
    # With create_server's own socket this was 0: every answer's body waited 40 ms.
    assert await _accepted_nodelay("127.0.0.1") != 0


async def test_an_ipv6_host_gets_an_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        assert await _accepted_nodelay("::1") != 0
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")


def test_a_taken_port_is_refused() -> None:
    first = tcp_listener("127.0.0.1", 0)
    with first, pytest.raises(OSError):
        tcp_listener("127.0.0.1", first.getsockname()[1])
