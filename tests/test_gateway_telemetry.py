"""The running gateway's telemetry: its own reports, alarm transitions and site summaries land
in a real VictoriaMetrics through the v2 write API, tagged from the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.events import ReportReceived
from tests.support.kit_site import DETECTOR, SITE
from tests.support.services import Mosquitto, VictoriaMetrics
from tests.test_gateway_e2e import Kit, open_alarms, settings, started, wait_until


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    (tmp_path / "vm").mkdir()
    with VictoriaMetrics(tmp_path / "vm").running() as vm:
        yield vm


Samples = list[tuple[dict[str, str], list[float]]]


def series(vm: VictoriaMetrics, name: str, until: Callable[[Samples], bool] = bool) -> Samples:
    """The samples of ``name`` once ``until`` holds for them (by default: there are some); a
    sample written a moment ago takes VictoriaMetrics a little while to show, so look again
    for a few seconds before giving up and returning what there is."""
    for _ in range(50):
        rows = vm.export('{__name__=~"' + name + '"}')
        found = [(dict(r["metric"]), list(r["values"])) for r in rows]  # type: ignore[call-overload]
        if until(found):
            break
        time.sleep(0.2)
    return found


async def test_reports_alarms_and_summaries_reach_victoria_metrics(
    tmp_path: Path, own_mosquitto: Mosquitto, victoria: VictoriaMetrics
) -> None:
    s = settings(
        tmp_path,
        own_mosquitto.url,
        influx_url=victoria.url,
        telemetry_flush_interval_s=0.1,
    )
    gateway: Gateway = await started(s)
    heard: set[str] = set()
    gateway.bus.subscribe(ReportReceived, lambda e: heard.add(e.device_id))
    kit = Kit(own_mosquitto.url, interval_s=60)
    await kit.start()
    try:
        # The leak's report must not share a millisecond with the detector's first one: this
        # VictoriaMetrics keeps one sample per series and millisecond (-dedup.minScrapeInterval).
        await wait_until(lambda: DETECTOR in heard)
        await asyncio.sleep(0.01)
        kit.detector.set_lel(35.0)
        await wait_until(lambda: open_alarms(gateway, "leak_low"))
        gateway.telemetry_feed.write_summaries()
        await wait_until(lambda: gateway.telemetry.stats().queued == 0)
        await wait_until(lambda: gateway.telemetry.stats().written >= 3)
    finally:
        await kit.stop()
        await gateway.stop()  # flushes what is queued

    def leak_seen(samples: Samples) -> bool:
        return any(t.get("device_id") == DETECTOR and 35.0 in v for t, v in samples)

    lel = {
        tags["device_id"]: (tags, values)
        for tags, values in series(victoria, "kit_report_lel_pct", until=leak_seen)
    }
    assert DETECTOR in lel, "no detector report reached VictoriaMetrics"
    tags, values = lel[DETECTOR]
    assert 35.0 in values
    assert tags["site_id"] == SITE  # tags come from the registry, not from the device
    raised = [
        tags
        for tags, values in series(victoria, "alarm_transition_raised")
        if tags["alarm_type"] == "leak_low" and 1.0 in values
    ]
    assert raised
    assert raised[0]["site_id"] == SITE
    assert raised[0]["device_id"] == DETECTOR
    summaries = {t["site_id"]: v for t, v in series(victoria, "site_summary_open_alarms")}
    assert summaries[SITE][-1] >= 1.0
    assert gateway.telemetry.stats().dropped == 0
