"""What the gateways publish on ``gasco/v1``, parsed: topic and bytes in, values out, no I/O.

Topics, under ``{prefix}/{gateway_id}/``: ``alarms/events``, ``availability``,
``sites/{site_id}/summary``, ``reply/{officer_id}`` (docs/gas-company-contract.md). A message
that cannot be used raises :class:`BadMessage` naming the topic and why; the link counts it,
logs it and acknowledges it (a broken message sent again is still broken).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeAlias

from gateway.errors import RejectedInput

__all__ = [
    "MAX_PAYLOAD",
    "AlarmEvent",
    "Availability",
    "BadMessage",
    "CommandReply",
    "Inbound",
    "SiteSummary",
    "parse",
    "subscriptions",
]

MAX_PAYLOAD: Final = 256 * 1024  # a summary with many open alarms stays far below this


class BadMessage(RejectedInput):
    """A ``gasco/v1`` message the center cannot use; ``where`` is its topic."""


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    gateway_id: str
    alarm_id: str
    revision: int
    event: dict[str, Any]  # as published (docs/schemas/gasco-alarm-event.schema.json)


@dataclass(frozen=True, slots=True)
class Availability:
    gateway_id: str
    online: bool


@dataclass(frozen=True, slots=True)
class SiteSummary:
    gateway_id: str
    site_id: str
    at: datetime  # the summary's own time (gateway clock): an older one never replaces a newer
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandReply:
    gateway_id: str
    officer_id: str
    cmd_id: str
    reply: dict[str, Any]


Inbound: TypeAlias = AlarmEvent | Availability | SiteSummary | CommandReply


def subscriptions(prefix: str, group: str | None) -> dict[str, list[str]]:
    """Topic filters by stream. ``group`` set: ``$share/{group}/...`` (retained messages are
    never sent to a shared subscription, so the link reads those with a plain one)."""
    share = f"$share/{group}/" if group else ""
    return {
        "events": [f"{share}{prefix}/+/alarms/events", f"{share}{prefix}/+/reply/+"],
        "state": [f"{share}{prefix}/+/availability", f"{share}{prefix}/+/sites/+/summary"],
    }


def parse(prefix: str, topic: str, payload: bytes) -> Inbound:
    """One message; raises :class:`BadMessage`."""
    parts = topic.split("/")
    head = prefix.split("/")
    if parts[: len(head)] != head or len(parts) < len(head) + 2:
        raise BadMessage("bad_topic", "not a gasco/v1 topic", topic)
    gateway_id, rest = parts[len(head)], parts[len(head) + 1 :]
    if not gateway_id:
        raise BadMessage("bad_topic", "empty gateway id", topic)
    if len(payload) > MAX_PAYLOAD:
        raise BadMessage("too_large", f"{len(payload)} bytes (limit {MAX_PAYLOAD})", topic)
    if rest == ["availability"]:
        return _availability(gateway_id, payload, topic)
    body = _json(payload, topic)
    if rest == ["alarms", "events"]:
        return _event(gateway_id, body, topic)
    if len(rest) == 3 and rest[0] == "sites" and rest[2] == "summary" and rest[1]:
        return _summary(gateway_id, rest[1], body, topic)
    if len(rest) == 2 and rest[0] == "reply" and rest[1]:
        return _reply(gateway_id, rest[1], body, topic)
    raise BadMessage("bad_topic", "not a topic the center reads", topic)


def _availability(gateway_id: str, payload: bytes, topic: str) -> Availability:
    word = payload.strip()
    if word not in (b"online", b"offline"):
        raise BadMessage("bad_payload", "availability is neither online nor offline", topic)
    return Availability(gateway_id, word == b"online")


def _json(payload: bytes, topic: str) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = getattr(exc, "pos", getattr(exc, "start", 0))
        raise BadMessage("bad_json", f"not JSON at byte {where}: {exc}", topic) from None
    if not isinstance(body, dict):
        raise BadMessage("bad_json", "not a JSON object", topic)
    return body


def _text(body: dict[str, Any], key: str, topic: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadMessage("bad_payload", f"{key}: a non-empty string is required", topic)
    return value


def _time(value: object, key: str, topic: str) -> datetime:
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise BadMessage("bad_payload", f"{key}: an RFC 3339 time with offset is required", topic)
    return at


def _same_gateway(body: dict[str, Any], gateway_id: str, topic: str) -> None:
    if body.get("gateway_id", gateway_id) != gateway_id:
        raise BadMessage("bad_payload", "gateway_id differs from the topic's", topic)


def _event(gateway_id: str, body: dict[str, Any], topic: str) -> AlarmEvent:
    _same_gateway(body, gateway_id, topic)
    alarm_id = _text(body, "alarm_id", topic)
    revision = body.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise BadMessage("bad_payload", "revision: an integer from 1 is required", topic)
    for key in ("transition", "state", "alarm_type", "severity"):
        _text(body, key, topic)
    times = body.get("times")
    if not isinstance(times, dict):
        raise BadMessage("bad_payload", "times: an object is required", topic)
    _time(times.get("raised_at"), "times.raised_at", topic)
    _time(times.get("updated_at"), "times.updated_at", topic)
    site = body.get("site")
    if site is not None and not (isinstance(site, dict) and isinstance(site.get("site_id"), str)):
        raise BadMessage("bad_payload", "site: null or an object with a site_id", topic)
    return AlarmEvent(gateway_id, alarm_id, revision, body)


def _summary(gateway_id: str, site_id: str, body: dict[str, Any], topic: str) -> SiteSummary:
    _same_gateway(body, gateway_id, topic)
    if body.get("site_id") != site_id:
        raise BadMessage("bad_payload", "site_id differs from the topic's", topic)
    return SiteSummary(gateway_id, site_id, _time(body.get("at"), "at", topic), body)


def _reply(gateway_id: str, officer_id: str, body: dict[str, Any], topic: str) -> CommandReply:
    cmd_id = body.get("cmd_id")
    if not isinstance(cmd_id, str):
        raise BadMessage("bad_payload", "cmd_id: a string is required", topic)
    return CommandReply(gateway_id, officer_id, cmd_id, body)
