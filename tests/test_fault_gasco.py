"""Fault: the gas company broker is unreachable for a long stretch of an escalation.

"Several minutes" in the issue is shortened to ``OUTAGE_S`` = 30 s here (the link's reconnect
wait tops out at a few seconds, so this covers many failed reconnects). During the
outage two leaks are raised and escalate through all three steps, and one is acknowledged. After
the broker is back: every event of each alarm reaches the gas company in order, nothing is
missing, and no person was told twice by one step (people are notified over their own channels
all along; the outage must not hold them up or repeat them).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.escalation.gasco import RECONNECT_CAP_S, reconnect_delay
from gateway.model import Alarm
from tests.support.escalation_kit import VALVE, eventually, leak
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto
from tests.test_escalation_gasco import gas_company, gateway, take_the_broker_down

OUTAGE_S = 30.0
SMS_PER_LEAK = 4  # two site contacts, the supervisor, the dispatcher


@pytest.mark.slow  # about 35 s; runs in CI like every test
async def test_a_30_s_gas_company_outage_loses_reorders_and_doubles_nothing(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    with HttpReceiver().running() as http, SmtpReceiver().running() as smtp:
        async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
            down_since = await take_the_broker_down(gw, own_mosquitto)
            first = await gw.raise_leak()
            await asyncio.sleep(5.0)
            gw.bus.publish(leak(SystemClock().now(), source=VALVE))  # a second source
            await gw.bus.join()
            await eventually(lambda: len(http.received("/sms")) == 2 * SMS_PER_LEAK, 30, "SMS")
            acked = gw.alarms.acknowledge(first.alarm_id, "officer-9", "on my way")
            assert isinstance(acked, Alarm)
            await gw.bus.join()
            await asyncio.sleep(OUTAGE_S - (time.monotonic() - down_since))
            waiting = gw.service.outbox.pending("gasco")
            assert waiting >= 7  # 2 x (raised + 2 escalated) + acknowledged
            own_mosquitto.start()
            async with gas_company(own_mosquitto) as company:
                await eventually(
                    lambda: gw.service.outbox.pending("gasco") == 0, 60, "backlog delivered"
                )
                await eventually(lambda: len(company.events()) >= waiting, 20, "events")

    by_alarm: dict[str, list[int]] = defaultdict(list)
    for event in company.events():
        by_alarm[event["alarm_id"]].append(event["revision"])
    assert len(by_alarm) == 2
    for revisions in by_alarm.values():
        assert revisions == sorted(revisions)  # in order (a repeat after a lost PUBACK is allowed)
        assert sorted(set(revisions)) == list(range(1, max(revisions) + 1))  # none missing
    first_events = [e for e in company.events() if e["alarm_id"] == first.alarm_id]
    assert first_events[-1]["transition"] == "acknowledged"
    references = [r.json()["reference"] for r in http.received("/sms")]
    assert len(references) == len(set(references)) == 2 * SMS_PER_LEAK
    assert len(smtp.messages()) == 2  # the supervisor, once per leak


RECONNECT_OUTAGE_S = 16.0  # the old doubling back-off had just tried at 15 s and waited 16 s more
BACK_WITHIN_S = 10.0  # loose: the cap is 5 s; the old back-off took ~15 s here


@pytest.mark.slow  # about 25 s; runs in CI like every test
async def test_events_queued_in_an_outage_reach_the_gas_company_soon_after_it_is_back(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
        down_since = await take_the_broker_down(gw, own_mosquitto)
        await gw.raise_leak()
        await asyncio.sleep(RECONNECT_OUTAGE_S - (time.monotonic() - down_since))
        assert gw.service.outbox.pending("gasco") >= 1
        own_mosquitto.start()
        back = time.monotonic()
        async with gas_company(own_mosquitto) as company:
            await eventually(lambda: company.events() != [], 30, "the queued raised event")
            took = time.monotonic() - back
    assert took < BACK_WITHIN_S, f"the queued event reached the gas company {took:.1f} s late"


def test_the_reconnect_wait_is_capped_at_a_few_seconds_and_jittered() -> None:
    rng = random.Random(15)
    waits = [reconnect_delay(failures, rng) for failures in range(40)]
    assert max(waits) <= RECONNECT_CAP_S <= 5.0
    assert waits[0] <= 1.0  # the first retry is quick
    late = waits[10:]
    assert min(late) >= RECONNECT_CAP_S / 2  # a broker that stays down is not hammered
    assert len({round(w, 3) for w in late}) > 20  # gateways that lost it together spread out
