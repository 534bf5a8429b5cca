"""A target nobody is configured for is one log line, not one per alarm (issue 15, item 14: the
demo printed 46 "nobody configured as service_team" warnings before its console address)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.events import Severity
from tests.support.escalation_kit import leak, settings_for
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.test_escalation import world


async def test_nobody_configured_is_logged_once_counted_and_in_every_audit(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(http.url, smtp.port)
    settings.pop("service_team", None)  # maintenance work orders: nobody to send them to
    async with world(tmp_path, settings, ManualClock()) as w:
        for n in range(5):
            finding = dataclasses.replace(
                leak(w.clock.now(), source=f"dev-{n}"),
                alarm_type="low_battery",
                severity=Severity.LOW,
                rule_id="maintenance.battery",
                message="battery 2.1 V",
            )
            w.bus.publish(finding)
        await w.bus.join()
        assert len(w.alarms.open_alarms()) == 5
        assert w.service.room.counts["nobody_configured.service_team"] == 5
    lines = [r for r in caplog.records if "nobody configured as service_team" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
