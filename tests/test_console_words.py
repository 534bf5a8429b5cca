"""The console as a duty officer sees it, in Debian's Chromium (Playwright), issue 14:

* every page in zh-CN and en shows words, never a code (an alarm type, component, kit, state
  or transition of :mod:`gateway.words`), and the zh-CN page no English phrase (ASCII words
  only where they are ids, numbers, units or names from the registry); every page is
  photographed on a desktop and a phone (the test's tmp dir, copies at /tmp/gw-console-*.png);
* a new emergency rings (after the first click), counts in the tab title, raises a
  notification (permission asked once), and stays lit until acknowledged; the live queue keeps
  patching rows while a note is being typed, and the note survives;
* a refused write comes back as a page in the officer's language with the note kept;
* ``/docs`` renders with every request answered by the gateway itself.

The restaurant's leak closes one valve and not the other (it answers "ok" and stays open), so
the queue must say "closed, confirmed ..." for one and "OPEN — 3 close commands not answered
with closed" for the other."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, Page, Request, ViewportSize

from firmware_bridge import ksp
from gateway.words import catalogue
from tests.support import api_world
from tests.support.api_world import HOUSE, PARTIAL, PASSWORD, ROLES, World, running_world
from tests.support.browser import HOOKS, chromium
from tests.support.kit_site import SITE, VALVES, kit_devices
from tests.support.page_words import WORD, chinese_in_english, english_in_chinese, raw_codes
from tests.support.services import Mosquitto

TIMEOUT_MS: Final = 20_000
LATITUDE, LONGITUDE = 22.54321, 114.05789
DESKTOP: Final[ViewportSize] = {"width": 1366, "height": 900}
PHONE: Final[ViewportSize] = {"width": 390, "height": 844}
# Codes that must never reach a page as text (in either language).
CODE_KINDS: Final = ("alarm_type", "component", "kit", "alarm_state", "transition")
CODES: Final = frozenset(c for kind in CODE_KINDS for c in catalogue(kind))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def located(monkeypatch: pytest.MonkeyPatch) -> None:
    """The api_world registry, with the restaurant's coordinates."""
    original = api_world.write_world

    def write(directory: Path, interval_s: int = 60) -> Path:
        path = original(directory, interval_s)
        sites = path / "sites.csv"
        lines = sites.read_text(encoding="utf-8").splitlines()
        lines[0] += ",latitude,longitude"
        lines[1:] = [
            f"{line},{LATITUDE},{LONGITUDE}" if line.startswith(f"{SITE},") else f"{line},,"
            for line in lines[1:]
        ]
        sites.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    monkeypatch.setattr(api_world, "write_world", write)


@pytest.fixture
async def world(tmp_path: Path, own_mosquitto: Mosquitto, located: None) -> AsyncIterator[World]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "fast.yaml").write_text("isolation:\n  valve_closed_within_s: 2\n")
    url = own_mosquitto.url  # no retained valve state of another test
    async with running_world(tmp_path, url, valve_retry_s=0.3, rules_dir=rules) as w:
        yield w


async def log_in(browser: Browser, world: World, lang: str, **context: object) -> Page:
    page = await (await browser.new_context(**context)).new_page()  # type: ignore[arg-type]
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{world.url}/console/alarms?lang={lang}")
    await page.fill("input[name=name]", "officer")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form.login button[type=submit]")
    await page.wait_for_url("**/console/alarms")
    return page


def _registry_words(world: World) -> set[str]:
    """The ASCII words of the registry's proper names (site names, districts, addresses,
    contacts, device and cylinder ids, models) and the users' names: a Chinese page may show
    them as they are. Not its codes (site type, kit, component, language)."""
    directory = world.gateway.settings.registry
    assert directory is not None
    words: set[str] = set(ROLES)
    for table, columns in _NAMES.items():
        with (Path(directory) / table).open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for column in columns:
                    words.update(re.findall(WORD, row.get(column) or ""))
    return words


_NAMES: Final = {
    "sites.csv": ("name", "district", "address", "contact_name"),
    "components.csv": ("device_id", "model"),
    "cylinders.csv": ("cylinder_id",),
}


async def _wait_types(world: World, *types: str) -> None:
    async with asyncio.timeout(20):
        while not set(types) <= {a.alarm_type for a in world.gateway.alarms.open_alarms()}:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.05)


async def test_every_page_says_words_in_both_languages(
    browser: Browser, world: World, tmp_path: Path
) -> None:
    async with kit_devices(world.mqtt_url, stuck=True) as detector:
        detector.set_lel(55.0)
        await _wait_types(world, "leak_high", "valve_failed_to_close", "leak_not_isolated")
        detector.set_flags(ksp.DetectorFlag.TAMPER)
        await _wait_types(world, "tamper", "past_service_life", "inspection_overdue")
        allowed = _registry_words(world)
        pages = {
            "queue": "/console/alarms",
            "maintenance": "/console/alarms?tab=maintenance",
            "site": f"/console/sites/{SITE}",
            "household": f"/console/sites/{HOUSE}",
            "partial": f"/console/sites/{PARTIAL}",
            "fleet": "/console/fleet",
        }
        problems: list[str] = []
        for lang in ("zh-CN", "en"):
            for device, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                page = await log_in(browser, world, lang, viewport=viewport)
                for name, path in pages.items():
                    joiner = "&" if "?" in path else "?"
                    await page.goto(f"{world.url}{path}{joiner}lang={lang}")
                    problems += await _look(
                        page, f"{name}-{lang}-{device}", lang, allowed, tmp_path
                    )
                problems += await _refused_write(page, world, lang, device, allowed, tmp_path)
                await page.context.close()
        login = await (await browser.new_context(viewport=DESKTOP)).new_page()
        for lang in ("zh-CN", "en"):
            await login.goto(f"{world.url}/login?lang={lang}")
            problems += await _look(login, f"login-{lang}-desktop", lang, allowed, tmp_path)
    assert problems == []


async def _look(page: Page, name: str, lang: str, allowed: set[str], shots: Path) -> list[str]:
    """The visible text's problems; a screenshot kept in the tmp dir and in /tmp."""
    await page.wait_for_load_state("load")
    await page.evaluate("document.fonts.ready")
    text = await page.inner_text("body")
    return await _look_text(page, text, name, lang, allowed, shots)


async def _refused_write(
    page: Page, world: World, lang: str, device: str, allowed: set[str], shots: Path
) -> list[str]:
    """Acknowledging an alarm someone else acknowledged: a page saying who and when, in the
    officer's language, with the note kept and the way back."""
    leak = next(a for a in world.gateway.alarms.open_alarms() if a.alarm_type == "leak_high")
    if leak.acked_by is None:
        async with world.client("super") as client:
            done = await client.post(f"/api/alarms/{leak.alarm_id}/acknowledge", json={})
            assert done.status_code == 200
    await page.goto(f"{world.url}/console/alarms?lang={lang}")
    csrf = await page.get_attribute("meta[name=csrf]", "content")
    await page.evaluate(
        """([path, csrf]) => {
            const f = document.createElement("form");
            f.method = "post"; f.action = path;
            for (const [k, v] of [["csrf", csrf], ["note", "打过电话 called the owner"]]) {
                const i = document.createElement("input"); i.name = k; i.value = v; f.append(i);
            }
            document.body.append(f); f.submit();
        }""",
        [f"/console/alarms/{leak.alarm_id}/acknowledge", csrf],
    )
    await page.wait_for_selector(".error-page")
    reason = await page.inner_text(".reason")
    expected = "已由 super 于" if lang == "zh-CN" else "already acknowledged by super at"
    assert expected in reason, reason
    assert re.search(r"\d\d:\d\d:\d\d (北京时间|Beijing time)", reason), reason  # local, labelled
    assert await page.input_value("textarea[name=note]") == "打过电话 called the owner"
    assert await page.locator("a.back[href='/console/alarms']").count() == 1
    text = (await page.inner_text("body")).replace("called the owner", "")  # the officer's own
    return await _look_text(page, text, f"refused-{lang}-{device}", lang, allowed, shots)


async def _look_text(
    page: Page, text: str, name: str, lang: str, allowed: set[str], shots: Path
) -> list[str]:
    shot = shots / f"gw-console-{name}.png"
    await page.screenshot(path=shot, full_page=True)
    shutil.copy(shot, Path("/tmp") / shot.name)
    problems = [f"{name}: code {c!r}" for c in raw_codes(text, CODES)]
    if lang == "zh-CN":
        problems += [f"{name}: English {w!r}" for w in english_in_chinese(text, allowed)]
    else:
        problems += [f"{name}: Chinese {w!r}" for w in chinese_in_english(text)]
    return problems


async def test_the_queue_says_the_valves_real_state(browser: Browser, world: World) -> None:
    async with kit_devices(world.mqtt_url, stuck=True) as detector:
        page = await log_in(browser, world, "en", viewport=DESKTOP)
        detector.set_lel(55.0)
        await _wait_types(world, "leak_high", "valve_failed_to_close", "leak_not_isolated")
        row = page.locator(f'tr.incident[data-key="{SITE}/emergency"]')
        await row.locator("li[data-alarm-id]").nth(2).wait_for()  # live, one row
        stuck = row.locator(f'.valve[data-valve="{VALVES[0]}"]')
        await stuck.filter(has_text="3 close commands not answered with closed").wait_for()
        assert "OPEN" in await stuck.inner_text()
        closed = row.locator(f'.valve[data-valve="{VALVES[1]}"]')
        closed_at = r"closed, confirmed \d\d:\d\d:\d\d Beijing time"
        assert re.search(closed_at, await closed.inner_text())
        did = await row.locator("td.did-cell").inner_text()
        said = f"close command sent 3\u00d7 → {VALVES[0]}: received 3\u00d7"
        assert said in did  # the answer "ok" is "received", not "closed"
        assert await page.locator("tr.incident").count() == 1  # the leak's alarms: one row
        types = await row.locator("li[data-alarm-id]").all_inner_texts()
        assert any("Shut-off valve failed to close" in t for t in types), types
        age = row.locator("td.what time")
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Beijing time", await age.get_attribute("title") or ""
        )
        await page.goto(f"{world.url}/console/sites/{SITE}?lang=en")
        geo = page.locator("a.geo")
        assert await geo.get_attribute("href") == f"geo:{LATITUDE},{LONGITUDE}"
        await page.goto(f"{world.url}/console/alarms?q=13800138000&lang=en")  # by phone
        assert await page.locator("tr.incident").count() == 1
        await page.goto(f"{world.url}/console/alarms?q={VALVES[0]}&lang=en")  # by device id
        assert await page.locator("tr.incident").count() == 1
        await page.goto(f"{world.url}/console/alarms?district=Nanshan&lang=en")
        assert await page.locator("tr.incident").count() == 0
        await page.goto(f"{world.url}/console/alarms?tab=maintenance&lang=en")
        counts = await page.locator("nav.tabs .count").all_inner_texts()
        assert counts[0] == "1", counts
        assert int(counts[1]) >= 1, counts
        await page.context.close()


async def test_a_new_emergency_rings_counts_and_stays_lit_while_a_note_is_typed(
    browser: Browser, world: World
) -> None:
    page = await log_in(browser, world, "zh-CN", viewport=DESKTOP)
    sound = await page.request.get(f"{world.url}/static/alarm.wav")
    with wave.open(io.BytesIO(await sound.body())) as wav:  # shipped, short
        assert 0.3 < wav.getnframes() / wav.getframerate() < 2.0
    await page.add_init_script(HOOKS)
    await page.reload()
    banner = page.locator("#sound-banner")
    assert await banner.is_visible()  # sound needs a click first: the officer is told so
    await banner.click()
    await page.locator("#sound-banner[hidden]").wait_for(state="attached")
    assert await page.evaluate("window.__asked") == 1  # notification permission, on the click
    await page.click("h1")
    assert await page.evaluate("window.__asked") == 1  # asked once
    async with kit_devices(world.mqtt_url, stuck=True) as detector:
        detector.set_lel(55.0)
        row = page.locator(f'tr.incident.unacked[data-key="{SITE}/emergency"]')
        await row.wait_for()
        await page.wait_for_function("window.__played >= 1")
        await page.wait_for_function("document.title.startsWith('(1) ')")
        notes = await page.evaluate("window.__notes")
        assert notes, "no notification"
        assert "Golden Wok" in notes[0][1], notes
        note = row.locator("input[name=note]")
        await note.click()
        await note.type("已联系")  # typing, mid-word: the queue must keep patching
        await _wait_types(world, "valve_failed_to_close", "leak_not_isolated")
        await row.locator("li[data-alarm-id]").nth(2).wait_for()  # patched while typing
        await note.type("店主")
        assert await page.evaluate("document.activeElement.name") == "note"
        assert await row.locator("input[name=note]").input_value() == "已联系店主"
        await row.locator("button.ack").click()
        await page.wait_for_url("**/console/alarms")
        await page.locator(f'tr.incident[data-key="{SITE}/emergency"]:not(.unacked)').wait_for()
        await page.wait_for_function("!document.title.startsWith('(')")
        leak = next(a for a in world.gateway.alarms.open_alarms() if a.alarm_type == "leak_high")
        assert world.gateway.alarms.history(leak.alarm_id)[-1].note == "已联系店主"
    await page.context.close()


async def test_docs_render_with_no_internet(browser: Browser, world: World) -> None:
    page = await (await browser.new_context()).new_page()
    elsewhere: list[str] = []

    async def only_the_gateway(route: object, request: Request) -> None:
        if not request.url.startswith(world.url):
            elsewhere.append(request.url)
            await route.abort()  # type: ignore[attr-defined]
        else:
            await route.continue_()  # type: ignore[attr-defined]

    await page.route("**/*", only_the_gateway)
    await page.goto(f"{world.url}/docs")
    await page.locator(".swagger-ui .info .title").wait_for(timeout=TIMEOUT_MS)
    assert "gasgate" in await page.inner_text(".swagger-ui .info .title")
    await page.locator(".opblock").first.wait_for()
    assert elsewhere == []
    await page.screenshot(path=Path("/tmp/gw-console-docs.png"))
    await page.context.close()
