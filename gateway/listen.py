"""The HTTP listeners of the gateway's console and the center: bound by gasgate, not by uvicorn
(its bind failure would exit the whole process), and made so that every accepted connection
sends at once."""

from __future__ import annotations

import socket

__all__ = ["tcp_listener"]


def tcp_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv6 when the host has a colon); ``OSError`` when
    the port is taken or the address is not ours.

    asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP, and
    ``socket.create_server``'s is 0: each answer's body then waited for the client's delayed
    ACK of its headers, 40 ms a request. Hence the listener is re-made with the proto named."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    return socket.socket(listener.family, listener.type, socket.IPPROTO_TCP, listener.detach())
