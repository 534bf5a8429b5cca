"""Webhook and e-mail channels against a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.escalation.channels import EmailChannel, WebhookChannel, webhook_body
from gateway.escalation.config import EmailSettings, WebhookSettings
from gateway.escalation.outbox import DeliveryFailed, OutboxItem
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.test_bridge_mqtturl import _certificates

PAYLOAD: dict[str, Any] = {
    "kind": "notification",
    "delivery_key": "gw1-A/e1/s0/sms/13800000001",
    "alarm_id": "gw1-A",
    "recipient": {"name": "王老板", "phone": "13800000001", "email": "", "lang": "zh"},
    "title": "【燃气泄漏(高报)】老王饭店",
    "body": "请立即离开现场",
}


def item(payload: dict[str, Any] = PAYLOAD) -> OutboxItem:
    return OutboxItem(1, payload["delivery_key"], "sms", "gw1-A", "王老板", payload, 0)


def test_template_bodies_are_what_the_services_document() -> None:
    text = "【燃气泄漏(高报)】老王饭店\n请立即离开现场"
    assert webhook_body("sms", PAYLOAD) == {
        "phone": "13800000001",
        "text": text,
        "parts": [text],
        "reference": PAYLOAD["delivery_key"],
    }
    long_zh = {**PAYLOAD, "body": "不要点火、不要开关任何电器。" * 8}
    parts = webhook_body("sms", long_zh)["parts"]
    assert "".join(parts) == f"{long_zh['title']}\n{long_zh['body']}"
    assert [len(p) for p in parts] == [67, 60]  # UCS-2 parts of a long SMS, whole characters
    assert webhook_body("voice", PAYLOAD) == {
        "phone": "13800000001",
        "tts": "请立即离开现场",
        "repeat": 2,
        "reference": PAYLOAD["delivery_key"],
    }
    assert webhook_body("wecom", PAYLOAD) == {
        "msgtype": "text",
        "text": {"content": text, "mentioned_mobile_list": ["13800000001"]},
    }
    assert webhook_body("dingtalk", PAYLOAD) == {
        "msgtype": "text",
        "text": {"content": text},
        "at": {"atMobiles": ["13800000001"], "isAtAll": False},
    }
    assert webhook_body("generic", PAYLOAD) == PAYLOAD


@pytest.mark.parametrize(
    ("status", "reply", "permanent"),
    [
        (503, {}, False),
        (429, {}, False),
        (408, {}, False),
        (404, {}, True),
        (400, {}, True),
        (200, {"errcode": 45009, "errmsg": "api freq out of limit"}, False),
    ],
)
async def test_http_answers_map_to_retry_or_give_up(
    http: HttpReceiver, status: int, reply: dict[str, Any], permanent: bool
) -> None:
    http.status, http.reply = status, reply
    channel = WebhookChannel(
        "robot", WebhookSettings(url=http.url(), template="wecom"), ManualClock()
    )
    await channel.start()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(item())
    finally:
        await channel.stop()
    assert failed.value.permanent is permanent


async def test_an_unreachable_webhook_is_a_transient_failure() -> None:
    with HttpReceiver().running() as gone:
        url = gone.url()
    channel = WebhookChannel(
        "sms", WebhookSettings(url=url, template="sms", timeout_s=1), ManualClock()
    )
    await channel.start()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(item())
    finally:
        await channel.stop()
    assert not failed.value.permanent
    assert "ConnectError" in failed.value.reason


async def test_email_is_sent_in_utf8_with_a_stable_message_id() -> None:
    payload = {**PAYLOAD, "recipient": {**PAYLOAD["recipient"], "email": "boss@example.cn"}}
    with SmtpReceiver().running() as smtp:
        channel = EmailChannel(
            "email", EmailSettings(host="127.0.0.1", port=smtp.port, sender="alarms@gasco.example")
        )
        assert await channel.send(item(payload)) == "SMTP accepted for boss@example.cn"
        await channel.send(item(payload))  # the same row again (a crash mid-send)
        first, second = smtp.messages()
    assert first["Subject"] == "【燃气泄漏(高报)】老王饭店"
    assert first.get_content().strip() == "请立即离开现场"
    assert first["Message-ID"] == second["Message-ID"]  # the receiver can drop the repeat


async def test_email_without_an_address_is_refused_for_good() -> None:
    channel = EmailChannel("email", EmailSettings(host="127.0.0.1", port=1))
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(item())
    assert failed.value.permanent


def _server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, ca


async def test_email_over_starttls_with_login(tmp_path: Path) -> None:
    tls, ca = await asyncio.to_thread(_server_tls, tmp_path)
    payload = {**PAYLOAD, "recipient": {**PAYLOAD["recipient"], "email": "boss@example.cn"}}
    with SmtpReceiver(tls=tls, users={"gasgate": "m@il"}).running() as smtp:
        settings = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "username": "gasgate",
            "password": "m@il",
        }
        plain = EmailChannel("email", EmailSettings.model_validate(settings))
        with pytest.raises(DeliveryFailed):  # the server requires STARTTLS first
            await plain.send(item(payload))
        secure = EmailChannel(
            "email", EmailSettings.model_validate({**settings, "starttls": True, "tls_ca": ca})
        )
        await secure.send(item(payload))
        wrong = EmailChannel(
            "email",
            EmailSettings.model_validate(
                {**settings, "starttls": True, "tls_ca": ca, "password": "guess"}
            ),
        )
        with pytest.raises(DeliveryFailed):
            await wrong.send(item(payload))
        assert len(smtp.messages()) == 1
