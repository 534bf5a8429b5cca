"""The fleet simulator (central/fleet.py): what it publishes is what a gateway publishes (the
gasco/v1 schemas, the center's own parser, real alarm_id / revision sequences), it reaches a
real Mosquitto retained where the contract says so, and it stays within its limits."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from click.testing import CliRunner

from central import inbound
from central.fleet import FleetError, FleetSpec, Story, Storyteller, availability, summaries
from gateway.cli import main
from tests.support.services import Mosquitto

SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
AT = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"gasco-{name}.schema.json").read_text())
    return loaded


def test_summaries_follow_the_schema_and_vary_like_a_city() -> None:
    spec = FleetSpec(3, 40)
    messages = summaries(spec, AT)
    assert len(messages) == 120
    parsed = [inbound.parse(spec.prefix, t, p) for t, p in messages]
    for message in parsed:
        assert isinstance(message, inbound.SiteSummary)
        jsonschema.validate(message.summary, schema("site-summary"))
    bodies = [m.summary for m in parsed if isinstance(m, inbound.SiteSummary)]
    assert {b["district"] for b in bodies if b["gateway_id"] == spec.gateway_id(1)} == {"Xinwu"}
    assert 0 < sum(b["protected"] for b in bodies) < len(bodies)
    assert any(b["service"]["past_service_life"] for b in bodies)
    assert any(b["service"]["cylinders_overdue"] for b in bodies)
    assert all(isinstance(b["lat"], float) for b in bodies)
    assert {p for _, p in availability(spec)} == {b"online"}


def test_a_leak_story_is_a_real_alarm_sequence() -> None:
    spec = FleetSpec(2, 2)
    story = Story.begin(spec, 1, 0, AT)
    events = []
    while (message := story.next(AT)) is not None:
        parsed = inbound.parse(spec.prefix, *message)
        assert isinstance(parsed, inbound.AlarmEvent)
        jsonschema.validate(parsed.event, schema("alarm-event"))
        events.append(parsed.event)
    assert [e["transition"] for e in events] == [
        "raised", "valve_changed", "escalated", "acknowledged", "cleared", "resolved",
    ]  # fmt: skip
    assert [e["revision"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["alarm_revision"] for e in events] == [1, 1, 1, 2, 3, 4]
    assert [e["state"] for e in events] == [
        "unack_active", "unack_active", "unack_active", "ack_active", "ack_active", "normal",
    ]  # fmt: skip
    assert [e["valve_state"] for e in events] == ["open", *["closed"] * 5]
    assert {e["alarm_id"] for e in events} == {story.alarm_id}
    assert story.alarm_id.startswith(f"{spec.gateway_id(1)}-")
    assert events[1]["site"]["site_id"] == spec.site_id(1, 0)


def test_the_storyteller_keeps_each_alarm_in_order() -> None:
    teller = Storyteller(FleetSpec(5, 5), open_alarms=20)
    revisions: dict[str, list[int]] = defaultdict(list)
    for _ in range(500):
        body = json.loads(teller.next(AT)[1])
        revisions[body["alarm_id"]].append(body["revision"])
    assert len(revisions) == teller.raised
    for seen in revisions.values():
        assert seen == list(range(1, len(seen) + 1))


@pytest.mark.parametrize(("gateways", "sites"), [(0, 1), (10_001, 1), (1, 1_001), (5_000, 500)])
def test_a_fleet_beyond_its_limits_is_refused(gateways: int, sites: int) -> None:
    with pytest.raises(FleetError):
        FleetSpec(gateways, sites)


async def test_simulate_publishes_retained_state_and_events(own_mosquitto: Mosquitto) -> None:
    """The command as a user runs it: 3 gateways x 4 sites, 40 events/s for 1 s; a console
    connecting afterwards finds every gateway online and every summary retained."""
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["central", "simulate", "--gasco-mqtt", own_mosquitto.url, "--gateways", "3",
         "--sites", "4", "--events-per-s", "40", "--duration", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["summaries"], report["events"]) == (12, 40)
    retained: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", own_mosquitto.port, identifier="console") as client:
        await client.subscribe("gasco/v1/#", qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    assert message.retain
                    assert isinstance(message.payload, bytes)
                    retained[str(message.topic)] = message.payload
        except TimeoutError:
            pass  # every retained message came at once; nothing else is retained
    online = [t for t, p in retained.items() if t.endswith("/availability") and p == b"online"]
    assert len(online) == 3
    assert len([t for t in retained if t.endswith("/summary")]) == 12
    assert not [t for t in retained if t.endswith("/alarms/events")]


def test_simulate_says_what_is_wrong() -> None:
    result = CliRunner().invoke(
        main, ["central", "simulate", "--gasco-mqtt", "mqtt://127.0.0.1:1", "--gateways", "0"]
    )
    assert result.exit_code == 2
    assert "gateways: 1 to 10000" in result.output
