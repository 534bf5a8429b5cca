"""Notification channels to people: HTTP webhooks (generic, SMS, voice, WeCom and DingTalk group
robots) and e-mail over SMTP. Each drains one outbox lane; see :mod:`gateway.escalation.outbox`.

A notification row's payload (built by the escalation room) carries ``title``, ``body``,
``recipient`` (name, phone, email, lang) and ``delivery_key``; a channel turns it into the body
its service documents. Generic / SMS / voice webhooks are signed: ``X-Gasgate-Signature:
sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with ``X-Gasgate-Timestamp``; DingTalk
robots are signed the way DingTalk documents (``timestamp`` and ``sign`` query parameters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

from gateway.clock import Clock
from gateway.escalation.config import EmailSettings, Recipient, WebhookSettings
from gateway.escalation.messages import sms_parts
from gateway.escalation.outbox import DeliveryFailed, OutboxItem

__all__ = ["EmailChannel", "WebhookChannel", "address_for", "is_sms", "webhook_body"]

log = logging.getLogger(__name__)
# httpx logs every request's full URL at INFO, and a robot webhook's URL carries its access token.
logging.getLogger("httpx").setLevel(logging.WARNING)

_RETRYABLE_HTTP = {408, 425, 429}
_URL = re.compile(r"\w+://\S+")


def address_for(settings: WebhookSettings | EmailSettings, recipient: Recipient) -> str | None:
    """The address a channel needs for a recipient; None if the recipient has none. A group
    robot or a generic webhook posts to its own URL: the recipient is named in the text."""
    if isinstance(settings, EmailSettings):
        return recipient.email or None
    if settings.template in ("sms", "voice"):
        return recipient.phone or None
    return recipient.phone or recipient.name


def is_sms(settings: WebhookSettings | EmailSettings | None) -> bool:
    return isinstance(settings, WebhookSettings) and settings.template == "sms"


def webhook_body(template: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for a template (WeCom / DingTalk: their robots' documented text message)."""
    recipient = payload["recipient"]
    text = f"{payload['title']}\n{payload['body']}"
    phones = [recipient["phone"]] if recipient.get("phone") else []
    if template == "sms":
        # "parts": the text as the network's SMS parts, for a provider that sends them one by one
        # (its own cut at 70 or 160 falls mid-sentence or, counted in bytes, mid-character).
        return {
            "phone": recipient["phone"],
            "text": text,
            "parts": list(sms_parts(text)),
            "reference": payload["delivery_key"],
        }
    if template == "voice":
        # A voice call reads the text twice, as call-out platforms commonly do for alarms.
        return {
            "phone": recipient["phone"],
            "tts": payload["body"],
            "repeat": 2,
            "reference": payload["delivery_key"],
        }
    if template == "wecom":
        return {"msgtype": "text", "text": {"content": text, "mentioned_mobile_list": phones}}
    if template == "dingtalk":
        return {
            "msgtype": "text",
            "text": {"content": text},
            "at": {"atMobiles": phones, "isAtAll": False},
        }
    return dict(payload)


class WebhookChannel:
    def __init__(self, name: str, settings: WebhookSettings, clock: Clock) -> None:
        self._name = name
        self._settings = settings
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def gives_up(self) -> bool:
        return True

    async def start(self) -> None:
        timeout = httpx.Timeout(self._settings.timeout_s)
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, item: OutboxItem) -> str:
        if self._client is None:
            raise DeliveryFailed("channel not started")
        template = self._settings.template
        body = json.dumps(webhook_body(template, item.payload), ensure_ascii=False).encode()
        url, headers = self._sign(body)
        headers["X-Gasgate-Delivery"] = item.delivery_key
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # The reason is logged and audited: never with the URL (a robot's access token).
            reason = _URL.sub("<url>", f"{type(exc).__name__}: {exc}")
            raise DeliveryFailed(reason) from None
        return _check(template, response)

    def _sign(self, body: bytes) -> tuple[str, dict[str, str]]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        secret = self._settings.secret.get_secret_value() if self._settings.secret else None
        millis = str(int(self._clock.now().timestamp() * 1000))
        if secret is None:
            return self._settings.url, headers
        if self._settings.template == "dingtalk":
            digest = hmac.new(secret.encode(), f"{millis}\n{secret}".encode(), hashlib.sha256)
            sign = urllib.parse.quote_plus(base64.b64encode(digest.digest()).decode())
            joiner = "&" if "?" in self._settings.url else "?"
            return f"{self._settings.url}{joiner}timestamp={millis}&sign={sign}", headers
        signed = hmac.new(secret.encode(), millis.encode() + b"." + body, hashlib.sha256)
        headers["X-Gasgate-Timestamp"] = millis
        headers["X-Gasgate-Signature"] = f"sha256={signed.hexdigest()}"
        return self._settings.url, headers


def _check(template: str, response: httpx.Response) -> str:
    status = response.status_code
    if 200 <= status < 300:
        if template in ("wecom", "dingtalk"):
            # The robots answer 200 with {"errcode": n, "errmsg": ...}; n != 0 is a failure
            # (often a rate limit): retried.
            try:
                errcode = response.json().get("errcode", 0)
            except (ValueError, AttributeError):
                errcode = None
            if errcode != 0:
                raise DeliveryFailed(f"HTTP {status}, robot errcode {errcode}")
        return f"HTTP {status}"
    permanent = 400 <= status < 500 and status not in _RETRYABLE_HTTP
    raise DeliveryFailed(f"HTTP {status}", permanent=permanent)


class EmailChannel:
    def __init__(self, name: str, settings: EmailSettings) -> None:
        self._name = name
        self._settings = settings

    @property
    def name(self) -> str:
        return self._name

    @property
    def gives_up(self) -> bool:
        return True

    async def start(self) -> None:
        """Nothing to open: one SMTP session per message keeps a dead server from wedging."""

    async def stop(self) -> None:
        """Nothing held between messages."""

    async def send(self, item: OutboxItem) -> str:
        payload = item.payload
        address = payload["recipient"].get("email")
        if not address:
            raise DeliveryFailed("recipient has no e-mail address", permanent=True)
        message = EmailMessage()
        message["From"] = self._settings.sender
        message["To"] = address
        message["Subject"] = payload["title"]
        # A stable Message-ID per delivery key lets a mail system drop a crash's duplicate.
        digest = hashlib.sha256(item.delivery_key.encode()).hexdigest()[:32]
        message["Message-ID"] = f"<{digest}@gasgate>"
        message["X-Gasgate-Delivery"] = item.delivery_key
        message.set_content(payload["body"])
        settings = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.host,
                port=settings.port,
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else None,
                start_tls=settings.starttls,
                tls_context=self._tls_context(),
                timeout=settings.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(f"recipient refused: {exc}", permanent=True) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(
                f"SMTP {exc.code}: {exc.message}", permanent=500 <= exc.code < 600
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        return f"SMTP accepted for {address}"

    def _tls_context(self) -> ssl.SSLContext | None:
        ca = self._settings.tls_ca
        if not self._settings.starttls or ca is None:
            return None
        return ssl.create_default_context(cafile=str(ca))
