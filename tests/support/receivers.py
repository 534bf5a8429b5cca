"""Real receivers for notification tests: an HTTP server (webhooks) and an SMTP server
(aiosmtpd), each on a free loopback port, recording what they were sent."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.services import free_port

__all__ = ["HttpReceiver", "SmtpReceiver", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll a condition (a real server fills it from its own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@dataclass(frozen=True)
class HttpRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers every POST with ``status`` and ``reply`` (JSON) and records it."""

    status: int = 200
    reply: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok"})
    requests: list[HttpRequest] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str | None = None) -> list[HttpRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path.startswith(path)]

    @contextlib.contextmanager
    def running(self) -> Iterator[HttpReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = 200 <= receiver.status < 300
                if ok:  # a failed request is not a delivery: recorded only when accepted
                    with receiver._lock:
                        receiver.requests.append(
                            HttpRequest(
                                self.path, dict(self.headers.items()), body, time.monotonic()
                            )
                        )
                answer = json.dumps(receiver.reply).encode()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        message = message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


@dataclass
class SmtpReceiver:
    """``tls``: offer (and require) STARTTLS; ``users``: require AUTH with these passwords."""

    port: int = field(default_factory=free_port)
    tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    _inbox: _Inbox = field(default_factory=_Inbox)

    def messages(self) -> list[Message]:
        with self._inbox.lock:
            return list(self._inbox.messages)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.users.get(data.login.decode()) == (
            data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    @contextlib.contextmanager
    def running(self) -> Iterator[SmtpReceiver]:
        options: dict[str, Any] = {}
        if self.tls is not None:
            options |= {"tls_context": self.tls, "require_starttls": True}
        if self.users:
            options |= {"auth_required": True, "authenticator": self._authenticate}
        controller = Controller(self._inbox, hostname="127.0.0.1", port=self.port, **options)
        controller.start()
        try:
            yield self
        finally:
            controller.stop()
