"""Hostile kit/v1 messages: the ingest never raises, moves exactly one counter per message, and
every rejection it publishes has a reason and a location.

A bounded slice of ``bench/fuzz.py``'s generators (``python -m bench fuzz`` runs 10⁶) against a
real ``Ingest``, bus and registry; then a few thousand of the same messages through a real
Mosquitto into the whole gateway, which must still close the valves on the next leak.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from bench.fuzz import IngestFuzzer, ingest_input
from firmware_bridge import ksp
from gateway.mqtturl import parse_mqtt_url
from gateway.site_mqtt import SUBSCRIPTION
from tests.support.kit_site import VALVES
from tests.support.services import Mosquitto
from tests.test_gateway_e2e import Kit, settings, started, wait_until

SLICE = 30_000
THROUGH_MQTT = 3_000


async def test_a_slice_of_the_fuzz_run_finds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="gateway.ingest")
    outcome = await IngestFuzzer(seed=20261128).run(SLICE)
    assert outcome.escaped == []
    assert outcome.unexplained == 0
    assert outcome.inputs == SLICE
    assert outcome.accepted > 0
    expected = {"bad_json", "invalid", "unknown_kind", "oversized", "bad_topic"}
    assert expected | {"unregistered_device", "bad_device_id", "wrong_kind"} <= set(
        outcome.rejected
    )


def publishable(topic: str) -> bool:
    """What Mosquitto accepts as a topic at all: not empty, no wildcards, no control characters
    (it drops the client for a malformed packet otherwise)."""
    control = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in topic)
    return bool(topic) and not control and not any(c in topic for c in "+#")


async def test_fuzzed_messages_through_the_broker_leave_the_gateway_working(
    tmp_path: Path, own_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.ingest")
    gateway = await started(settings(tmp_path, own_mosquitto.url))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    rng = random.Random(7)
    sent = delivered = 0
    try:
        async with parse_mqtt_url(own_mosquitto.url).client(identifier="fuzzer") as client:
            while sent < THROUGH_MQTT:
                topic, payload = ingest_input(rng)
                if publishable(topic):
                    await client.publish(topic, payload, qos=1)
                    sent += 1
                    delivered += topic_matches_sub(SUBSCRIPTION, topic)
        handled = gateway.site_mqtt.counts
        assert delivered > THROUGH_MQTT // 2
        await wait_until(lambda: handled["received"] >= delivered, 60)
        assert handled["handler_errors"] == 0
        assert gateway.ingest.counts["rejected.internal_error"] == 0
        kit.detector.set_lel(55.0)  # and a real leak right after still closes the valves
        await wait_until(
            lambda: all(gateway.linkage.valve_state(v) is ksp.ValveState.CLOSED for v in VALVES),
            30,
        )
    finally:
        await kit.stop()
        await gateway.stop()
