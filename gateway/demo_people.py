"""The people of the demo: an SMS gateway and a duty-room IM robot that print what they receive.

The demo's escalation posts to these two webhooks exactly as it would to a real SMS provider or
WeCom group robot (same templates, same signature header), so a newcomer sees who is told what,
and when, next to the valve commands and alarm transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["DemoPeople"]

# The alert page's link, an SMS's last line (gateway/escalation/messages.py: with_alert_link).
_ALERT_LINK = re.compile(r"https?://\S+/a/[A-Za-z0-9_-]+")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C belongs to the demo, which stops this server itself


class DemoPeople:
    """``/sms`` (template ``sms``) and ``/im`` (template ``wecom``) on a free loopback port."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self._out = out
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.received = 0

    @property
    def url(self) -> str:
        assert self._sock is not None, "not started"
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def escalation_settings(self) -> dict[str, Any]:
        """Channels and people for the gateway's ``escalation`` settings."""
        return {
            "hotline": "0755-96888",
            "channels": {
                "sms": {"kind": "webhook", "url": f"{self.url}/sms", "template": "sms"},
                "duty_room_im": {"kind": "webhook", "url": f"{self.url}/im", "template": "wecom"},
            },
            "duty_room": [{"name": "燃气公司值班室", "phone": "075596888"}],
            "duty_supervisor": [{"name": "值班主管 Zhou", "phone": "13900000001", "lang": "en"}],
            "emergency_dispatcher": [{"name": "应急调度", "phone": "13900000002"}],
            # Maintenance findings go to the service team as work orders; the demo has no
            # work-order system, so they are noted as not sent in each alarm's audit trail.
            "service_team": [{"name": "维修班 service team", "phone": "13900000003"}],
        }

    async def start(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        app = Starlette(
            routes=[
                Route("/sms", self._sms, methods=["POST"]),
                Route("/im", self._im, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._sock is not None:
            self._sock.close()

    async def _sms(self, request: Request) -> JSONResponse:
        body = await request.json()
        self._show(f"SMS to {body['phone']} ({len(body['parts'])} parts)", body["text"])
        # Whole, on a line of its own: the shortened SMS line above would cut it.
        for link in _ALERT_LINK.findall(body["text"]):
            self._out(f"  → alert page for the site's people: {link}")
        return JSONResponse({"ok": True})

    async def _im(self, request: Request) -> JSONResponse:
        body = await request.json()
        self._show("IM duty-room robot", body["text"]["content"])
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    def _show(self, who: str, text: str) -> None:
        self.received += 1
        first, _, rest = text.partition("\n")
        self._out(f"  → {who}: {first} | {rest.replace(chr(10), ' ')[:160]}")
