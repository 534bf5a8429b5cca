"""The instance's HTTP listener: every accepted connection sends at once (TCP_NODELAY), so an
answer's body does not wait for the client's delayed ACK of its headers (40 ms a request)."""

from __future__ import annotations

import socket
from typing import Any

import httpx

from central.app import _Http


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_accepted_connections_have_tcp_nodelay() -> None:
    http = _Http(_app, "127.0.0.1", 0)
    await http.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{http.port}/")).text == "ok"
            assert http._server is not None
            (connection,) = http._server.server_state.connections
            sock = connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await http.stop()
