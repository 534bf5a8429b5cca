"""Ingest: every kit/v1 message is accepted, dropped as a duplicate, or refused with a reason."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contract import (
    MAX_PAYLOAD_BYTES,
    bridge_availability_topic,
    cmd_ack_topic,
    device_availability_topic,
    receiver_topic,
    report_topic,
)
from tests.support.safety_core import (
    DETECTOR,
    HOME_DETECTOR,
    UNKNOWN,
    VALVE,
    Core,
    detector_report,
    valve_report,
)


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    core = Core()
    await core.start()
    yield core
    await core.stop()


async def test_valid_report_is_stamped_with_the_gateway_clock(core: Core) -> None:
    await core.send(DETECTOR, detector_report(7, 1.5, ts="1999-01-01T00:00:00Z"))
    (event,) = core.reports
    assert event.device_id == DETECTOR
    assert event.report.seq == 7
    assert event.received_at == core.clock.now()
    assert event.received_mono == core.clock.monotonic()
    assert event.report.ts is not None
    assert event.report.ts.at is not None
    assert event.report.ts.at.year == 1999  # kept as data, not used as the time
    assert core.ingest.flagged["device_time"] == 0  # a usable device time is not flagged
    assert core.ingest.counts["accepted.report"] == 1


async def test_duplicates_within_10_s_are_dropped_and_counted(core: Core) -> None:
    payload = detector_report(7, 1.5)
    await core.send(DETECTOR, payload)
    await core.send(DETECTOR, payload)  # a receiver retransmission
    await core.send(DETECTOR, payload.replace(b", ", b",  "))  # same report, other bytes
    assert len(core.reports) == 1
    assert core.ingest.counts["duplicate"] == 2
    await core.advance(11)
    await core.send(DETECTOR, payload)  # seq wrapped back round: a new report
    await core.send(DETECTOR, detector_report(7, 2.0))  # same seq, other reading: new
    assert len(core.reports) == 3


async def test_a_duplicate_is_caught_while_older_reports_are_forgotten(core: Core) -> None:
    await core.send(DETECTOR, detector_report(1, 0.5))
    await core.advance(6)
    second = detector_report(2, 0.5)
    await core.send(DETECTOR, second)
    await core.advance(5)  # the first report is past the window and forgotten, not the second
    await core.send(HOME_DETECTOR, detector_report(1, 0.5))
    await core.advance(1)
    await core.send(DETECTOR, second)  # a retransmission 6 s after the original
    assert [r.device_id for r in core.reports] == [DETECTOR, DETECTOR, HOME_DETECTOR]
    assert core.ingest.counts["duplicate"] == 1


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (report_topic(DETECTOR), b"{not json", "bad_json"),
        (report_topic(DETECTOR), b"\xff\xfe", "bad_json"),
        (
            report_topic(DETECTOR),
            b'{"kind": "boiler", "seq": 1, "event": "periodic"}',
            "unknown_kind",
        ),
        (report_topic(DETECTOR), detector_report(1, 101), "invalid"),
        (report_topic(DETECTOR), detector_report(70000, 1), "invalid"),
        (report_topic(DETECTOR), b'{"kind": "detector", "seq": 1, "event": "periodic"}', "invalid"),
        (report_topic(DETECTOR), b" " * (MAX_PAYLOAD_BYTES + 1), "oversized"),
        (report_topic(DETECTOR), valve_report(1, "closed"), "wrong_kind"),
        (report_topic(UNKNOWN), detector_report(1, 0), "unregistered_device"),
        (device_availability_topic(UNKNOWN), b"online", "unregistered_device"),
        (device_availability_topic(DETECTOR), b"maybe", "bad_availability"),
        (receiver_topic("b1"), b'{"online": "perhaps"}', "invalid"),
        ("kit/v1/a b/report", detector_report(1, 0), "bad_device_id"),
        ("kit/v2/x/report", detector_report(1, 0), "bad_topic"),
        ("kit/v1/x/telemetry", b"{}", "bad_topic"),
    ],
)
async def test_bad_input_is_refused_with_its_reason(
    core: Core, topic: str, payload: bytes, reason: str
) -> None:
    await core.message(topic, payload)
    assert core.ingest.counts[f"rejected.{reason}"] == 1
    (rejected,) = core.rejected
    assert (rejected.reason, rejected.where) == (reason, topic)
    assert rejected.detail
    await core.send(DETECTOR, detector_report(1, 0))  # and ingest keeps working
    assert len(core.reports) == 1


async def test_unregistered_rejection_names_the_device(core: Core) -> None:
    await core.send(UNKNOWN, detector_report(1, 0))
    assert core.rejected[0].device_id == UNKNOWN


async def test_rejections_are_logged_rate_limited(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.ingest")
    for _ in range(500):
        core.ingest.handle_message(report_topic(DETECTOR), b"garbage")
    await core.bus.join()
    assert core.ingest.counts["rejected.bad_json"] == 500
    assert len(core.rejected) == 500
    assert len(caplog.records) == 1
    assert report_topic(DETECTOR) in caplog.text
    await core.advance(11)
    core.ingest.handle_message(report_topic(DETECTOR), b"garbage")
    assert len(caplog.records) == 2
    assert "+499 not logged" in caplog.records[1].getMessage()


async def test_availability_and_receiver_topics(core: Core) -> None:
    await core.message(device_availability_topic(HOME_DETECTOR), b"offline")
    assert [(a.device_id, a.online, a.reason) for a in core.availability] == [
        (HOME_DETECTOR, False, "availability_topic")
    ]
    status = {"online": True, "uptime_s": 10, "paired_count": 2, "ts": "2026-11-28T10:00:00Z"}
    await core.message(receiver_topic("b1"), json.dumps(status).encode())
    await core.message(bridge_availability_topic("b1"), b"offline")
    assert [(r.bridge_id, r.status.online) for r in core.receivers] == [("b1", True), ("b1", False)]
    await core.message(cmd_ack_topic(VALVE), b'{"id": "x", "result": "ok"}')
    assert core.ingest.counts["ignored.cmd"] == 1
    assert core.rejected == []


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # A named function: hypothesis reads it to check the recursion uses its argument, and a
    # multi-line lambda is sometimes misread (a HypothesisDeprecationWarning, an error here).
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    _containers,
    max_leaves=12,
)
_report_like = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["detector", "valve", "regulator", "x"]),
        "seq": st.integers(-2, 70000),
    },
    optional={
        "event": st.sampled_from(["periodic", "alarm", "nope"]),
        "detector": _json,
        "valve": _json,
        "regulator": _json,
        "ts": _json,
        "battery_mv": _json,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    topic=st.sampled_from(
        [
            report_topic(DETECTOR),
            report_topic(VALVE),
            device_availability_topic(DETECTOR),
            receiver_topic("b"),
            "kit/v1//report",
        ]
    ),
    body=_json | _report_like,
    raw=st.binary(max_size=64),
    use_raw=st.booleans(),
)
async def test_random_payloads_never_raise(
    core: Core, topic: str, body: object, raw: bytes, use_raw: bool
) -> None:
    payload = raw if use_raw else json.dumps(body).encode()
    before = sum(core.ingest.counts.values())
    core.ingest.handle_message(topic, payload)
    assert sum(core.ingest.counts.values()) == before + 1  # accepted, duplicate or rejected
    assert core.ingest.counts["rejected.internal_error"] == 0
