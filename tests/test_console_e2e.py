"""The console end to end, in Debian's Chromium driven by Playwright (one browser session):
a simulated leak appears in the duty officer's queue without a reload, the officer
acknowledges it with a note, the state changes and the escalation stops; a regulator sees no
acknowledge control and the API answers their acknowledge with 403. Screenshots go to
``test-artifacts/console/`` (gitignored). ``./dev test`` installs chromium when absent."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, Page, async_playwright

from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice
from gateway.escalation import trail
from gateway.model import AlarmState
from tests.support.api_world import PASSWORD, World, running_world
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import Mosquitto

CHROMIUM: Final = "/usr/bin/chromium"
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS: Final = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
TIMEOUT_MS: Final = 20_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: ./dev test installs it (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        await b.close()


@pytest.fixture
async def world(tmp_path: Path, own_mosquitto: Mosquitto) -> AsyncIterator[World]:
    async with running_world(tmp_path, own_mosquitto.url) as w:
        yield w


async def log_in(browser: Browser, world: World, name: str, **context: object) -> Page:
    page = await (await browser.new_context(**context)).new_page()  # type: ignore[arg-type]
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{world.url}/console/alarms?lang=en")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form.login button[type=submit]")
    await page.wait_for_url("**/console/alarms")
    return page


async def test_leak_reaches_the_queue_live_and_is_acknowledged(
    browser: Browser, world: World
) -> None:
    officer = await log_in(browser, world, "officer")
    await officer.evaluate("window.__noReload = 1")
    await officer.screenshot(path=SHOTS / "01-officer-queue.png", full_page=True)

    detector = SimDetector(1, battery_mv=0, interval_s=60)
    devices = [MqttDevice(world.mqtt_url, DETECTOR, detector.kind, model=detector)] + [
        MqttDevice(
            world.mqtt_url, v, SimValve.kind, model=SimValve(n, interval_s=60, close_time_s=0.2)
        )
        for n, v in enumerate(VALVES, start=2)
    ]
    for device in devices:
        await device.start()
    try:
        detector.set_lel(55.0)
        leak = await world.wait_alarm(DETECTOR, "leak_high")
        row = officer.locator(f'tr.incident:has(li[data-alarm-id="{leak.alarm_id}"])')
        await row.wait_for()
        assert await officer.evaluate("window.__noReload") == 1  # arrived without a reload
        assert "Gas leak (high level)" in await row.inner_text()  # words, not leak_high
        await row.locator(".valve-closed").nth(len(VALVES) - 1).wait_for()  # live as well
        shown = await row.inner_text()
        assert all(f"→ {v}: received" in shown for v in VALVES), shown  # what the gateway did
        steps = [e for e in trail(world.gateway.store, leak.alarm_id) if e.kind == "step"]
        assert steps, "the leak started escalating"
        await officer.screenshot(path=SHOTS / "02-leak-in-queue.png", full_page=True)

        await row.locator("input[name=note]").fill("called the owner, gas off")
        await row.locator("button.ack").click()
        acked = officer.locator(f'li[data-alarm-id="{leak.alarm_id}"][data-state="ack_active"]')
        await acked.wait_for()
        assert "stopped" in await acked.locator(".step").inner_text()
        await officer.screenshot(path=SHOTS / "03-acknowledged.png", full_page=True)

        alarm = world.gateway.alarms.get(leak.alarm_id)
        assert alarm is not None
        assert alarm.state is AlarmState.ACK_ACTIVE
        assert alarm.acked_by == "officer"
        history = world.gateway.alarms.history(leak.alarm_id)
        assert (history[-1].by, history[-1].note) == ("officer", "called the owner, gas off")
        entries = trail(world.gateway.store, leak.alarm_id)
        assert [e.result for e in entries if e.kind == "escalation"] == ["started", "stopped"]
        writes = {(w.name, w.action, w.target, w.result) for w in world.users.writes()}
        # One click acknowledged the incident: each of its alarms, each write recorded.
        assert ("officer", "acknowledge", leak.alarm_id, "ok") in writes

        regulator = await log_in(browser, world, "regulator")
        row = regulator.locator(f'tr.incident:has(li[data-alarm-id="{leak.alarm_id}"])')
        await row.wait_for()
        assert await regulator.locator("button.ack, button.resolve, button.shelve").count() == 0
        assert "read-only" in await row.inner_text()
        csrf = await regulator.get_attribute("meta[name=csrf]", "content")
        assert csrf
        answer = await regulator.request.post(
            f"{world.url}/api/alarms/{leak.alarm_id}/acknowledge",
            data={"note": "trying"},
            headers={"X-CSRF-Token": csrf},
        )
        assert answer.status == 403
        await regulator.screenshot(path=SHOTS / "04-regulator-read-only.png", full_page=True)

        phone = await log_in(
            browser, world, "officer", viewport={"width": 390, "height": 844}, is_mobile=True
        )
        await phone.locator(f'li[data-alarm-id="{leak.alarm_id}"]').wait_for()
        await phone.screenshot(path=SHOTS / "05-officer-phone.png", full_page=True)
        await asyncio.sleep(0)  # let the pages' event streams settle before the gateway stops
    finally:
        for device in devices:
            await device.stop()
