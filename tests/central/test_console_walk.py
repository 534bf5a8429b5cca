"""Every page of the center, in zh-CN and en, in Debian's Chromium (issue 14): no code of a word
catalogue shown raw, and no English word of four letters or more in a zh-CN page unless it is a
name (a site, an address, a district, a person), an id (it has a digit) or a unit.

The pages are the app's own routes (:func:`central.api.create_app`): every GET route kept out of
the API schema (the console, the alert page) and every API route that answers HTML (the audit),
so a page added later is walked without touching this test; a path parameter the walk cannot
fill fails it, naming the route. What is read is what a person sees: the rendered DOM's
``innerText`` after the page's scripts ran, plus ``title``, ``placeholder``, ``aria-label`` and
``alt`` attributes and the tab title. A part marked with another ``lang`` than the page's (the
invalid link page says it in both languages) is read as that language. Each page is also laid
out on a phone (390 px wide): nothing may make it scroll sideways (the failure names the page
and the element reaching furthest right).

Behind the pages, everything is real: a ``gasgate run`` gateway whose restaurant leaks with one
valve stuck open and is tampered with (tests/central/control_room.py), a small simulated fleet
(:mod:`central.fleet`, the gateway's own payload builders) with leaks, maintenance alarms and
a gateway gone offline, officer steps and a site's answer. Screenshots go to
``test-artifacts/central/walk-*.png`` (``walk-*-phone.png`` on the phone; the test prints the
directory)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.routing import APIRoute
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize
from psycopg_pool import AsyncConnectionPool
from starlette.routing import BaseRoute

from central import alert_words
from central.api import create_app
from central.api import words as center_words
from central.fleet import Fleet, FleetSpec, Publisher, simulate
from central.notify import Hub
from central.settings import CentralSettings
from firmware_bridge import ksp
from gateway.api import i18n
from gateway.words import KINDS, catalogue
from tests.central.control_room import PASSWORD, SHOTS, Room, api, room
from tests.support.escalation_kit import eventually
from tests.support.kit_site import kit_devices
from tests.support.page_words import WORD, chinese_in_english, english_in_chinese, raw_codes
from tests.support.services import Mosquitto

pytestmark = pytest.mark.timeout(420)

TIMEOUT_MS: Final = 20_000
DESKTOP: Final[ViewportSize] = {"width": 1366, "height": 900}
PHONE: Final[ViewportSize] = {"width": 390, "height": 844}
LANGS: Final = ("zh-CN", "en")
# Every code of the word catalogues, and every key of the words themselves (a missing word
# shows as its key).
CODES: Final = frozenset(
    [c for kind in KINDS for c in catalogue(kind)]
    + list(center_words._WORDS)
    + list(i18n._WORDS)
    + list(alert_words._WORDS)
)
# ASCII a Chinese page may show besides names and ids: units, the product's name.
ALLOWED: Final = frozenset({"ETA", "API", "SMS", "LEL", "gasgate"})
# Not pages: the API browser is the vendored Swagger UI in its own English; a sound.
NOT_PAGES: Final = {"/docs", "/sound/alarm.wav"}
# More than one view of a page: its tabs and filters.
VARIANTS: Final[dict[str, tuple[dict[str, str], ...]]] = {
    "/": ({}, {"tab": "maintenance"}, {"state": "all"}),
    "/console/rows": ({}, {"state": "all"}),
    "/api/audit": ({"format": "html"},),
    "/a/{token}": ({}, {"thanks": "call_me"}),
}
RULES: Final = "isolation:\n  valve_closed_within_s: 2\n"  # the stuck valve told at once
# Visible text of the page (a fragment: in the language asked), the parts in another language
# than the page's read apart.
READ: Final = """(asked) => {
  const own = document.documentElement.lang || asked;  // a fragment of a page has none
  const foreign = [...document.body.querySelectorAll("[lang]")].filter((e) => e.lang !== own);
  const apart = foreign.map((e) => [e.lang, e.innerText]);
  foreign.forEach((e) => { e.dataset.walkDisplay = e.style.display; e.style.display = "none"; });
  const names = ["title", "placeholder", "aria-label", "alt"];
  const attrs = [...document.querySelectorAll(names.map((a) => "[" + a + "]").join(","))]
    .filter((e) => e.checkVisibility())
    .flatMap((e) => names.map((a) => e.getAttribute(a) || ""));
  const text = [document.title, document.body.innerText, ...attrs].join("\\n");
  foreign.forEach((e) => { e.style.display = e.dataset.walkDisplay; });
  return [own, text, apart];
}"""
# How far the page reaches past the window's right edge, and the element reaching furthest
# (the innermost of those that reach as far: the one to fix); null when nothing does.
SIDEWAYS: Final = """() => {
  const width = window.innerWidth;
  const over = document.documentElement.scrollWidth - width;
  if (over <= 0) return null;
  let worst = null, right = width;
  for (const e of document.body.querySelectorAll("*")) {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right >= right) { worst = e; right = r.right; }
  }
  const name = worst ? worst.tagName.toLowerCase() + (worst.id ? "#" + worst.id : "")
    + [...worst.classList].map((c) => "." + c).join("") : "?";
  const text = worst ? (worst.innerText || "").trim().slice(0, 40) : "";
  return [over, name, Math.round(right), text];
}"""


def page_routes(dsn: str) -> list[str]:
    """The app's pages: GET routes out of the API schema, and API routes answering HTML."""
    settings = CentralSettings(db=dsn, gasco_mqtt="mqtt://127.0.0.1")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, open=False)  # never opened
    app = create_app(pool, settings, Hub(dsn))
    paths = []
    for route in _flat(app.routes):
        if not isinstance(route, APIRoute) or "GET" not in (route.methods or ()):
            continue
        html = any("text/html" in str(r.get("content", {})) for r in route.responses.values())
        if (not route.include_in_schema or html) and route.path not in NOT_PAGES:
            paths.append(route.path)
    return paths


def _flat(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes of included routers too (FastAPI 0.165 keeps each included router whole)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is None:
            yield route
        else:
            yield from _flat(inner.routes)


async def test_every_page_in_both_languages_says_words(
    browser: Browser, tmp_path: Path, pg_dsn: str, own_mosquitto: Mosquitto
) -> None:
    with Mosquitto(tmp_path).running() as gasco:
        async with (
            room(tmp_path, pg_dsn, gasco, own_mosquitto, rules=RULES, valve_retry_s=0.3) as r,
            kit_devices(r.site_mqtt, stuck=True) as detector,
        ):
            await _a_busy_shift(r, gasco, detector)
            urls = _urls(r, page_routes(pg_dsn))
            allowed = _names(r)
            problems: list[str] = []
            for lang in LANGS:
                context = await _logged_in(browser, r, lang)
                page = await context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                for name, url in urls:
                    problems += await _look(page, f"{r.url}{url}", f"{name}-{lang}", lang, allowed)
                problems += await _refused(page, r, lang, allowed)
                await context.close()
                outside = await (await browser.new_context(locale=lang)).new_page()
                for name, url in (("login", "/login"), ("login-asked", "/")):
                    target = f"{r.url}{url}?lang={lang}"
                    problems += await _look(outside, target, f"{name}-{lang}", lang, allowed)
                await outside.context.close()
    assert problems == [], "\n".join(problems)


async def _a_busy_shift(r: Room, gasco: Mosquitto, detector: Any) -> None:
    """The restaurant's leak with a valve stuck open, its detector tampered with (its gas still
    there: on site, the resolve waiting); a fleet's leaks and maintenance alarms, one gateway
    gone; officer steps, a site's answer, and a fleet leak resolved."""
    detector.set_lel(55.0)
    await _types(r, "leak_high", "valve_failed_to_close", "leak_not_isolated")
    detector.set_flags(ksp.DetectorFlag.TAMPER)
    await _types(r, "tamper")
    await simulate(gasco.url, FleetSpec(2, 3, name="fleet"), events_per_s=20, duration_s=1.0)
    gone = FleetSpec(1, 2, name="gone", seed=99)  # elsewhere on the map than the fleet
    await simulate(gasco.url, gone)
    async with Publisher(gasco.url, connections=1, name="gone-off") as publisher:
        await Fleet(gone, publisher).offline()
    await eventually(lambda: bool(r.rows("SELECT 1 FROM incidents WHERE kind = 'gateway_offline'")),
                     20, "the fleet's gateway offline")  # fmt: skip
    ((leak,),) = r.rows(
        "SELECT incident_id FROM alarms WHERE alarm_type = 'leak_high' AND site_id = 'rest-e2e'"
    )
    steps = f"/api/incidents/{leak}"
    await api(r, "zhang", "POST", f"{steps}/acknowledge", {"note": "已联系店主"})
    await api(r, "zhang", "POST", f"{steps}/dispatch", {"crew": "抢修三组", "eta_minutes": 20})
    await api(r, "zhang", "POST", f"{steps}/on-site", {})
    await _answer(r)
    fleet_leaks = r.rows(
        "SELECT DISTINCT incident_id FROM alarms WHERE gateway_id LIKE 'fleet-%%'"
        " AND alarm_type = 'leak_high' ORDER BY 1"
    )
    for (incident,) in fleet_leaks[:1]:
        await api(r, "zhang", "POST", f"/api/incidents/{incident}/acknowledge", {})
        r.rows(  # its gas gone (the simulated fleet may stop before its leaks clear)
            "UPDATE alarms SET active = false, state = CASE state WHEN 'unack_active'"
            " THEN 'unack_cleared' WHEN 'ack_active' THEN 'ack_cleared' ELSE state END"
            " WHERE incident_id = %s RETURNING 1",
            incident,
        )
        await api(r, "zhang", "POST", f"/api/incidents/{incident}/resolve",
                  {"cause": "aged_or_damaged_hose", "note": "换了软管"})  # fmt: skip


async def _types(r: Room, *types: str) -> None:
    def arrived() -> bool:
        found = {t for (t,) in r.rows("SELECT DISTINCT alarm_type FROM alarms")}
        return set(types) <= found

    await eventually(arrived, 30, f"{types} at the center")


async def _answer(r: Room) -> None:
    async with httpx.AsyncClient(base_url=r.url) as client:
        answered = await client.post(f"/a/{r.token()}/answer", json={"answer": "call_me"})
        assert answered.status_code == 200, answered.text


def _urls(r: Room, paths: list[str]) -> list[tuple[str, str]]:
    """(name, url) of every view of every page, its path parameters filled from the world."""
    incidents = [(str(i), str(i)) for (i,) in r.rows("SELECT incident_id FROM incidents")]
    fill = {
        "incident_id": [*incidents, ("missing", "999999")],
        "token": [("zh", r.token()), ("en", r.token(lang="en")),
                  ("forged", r.token(secret="forged")), ("expired", r.token(ttl_s=-120))],
    }  # fmt: skip
    urls = []
    for path in paths:
        names = re.findall(r"{(\w+)}", path)
        unknown = [n for n in names if n not in fill]
        assert not unknown, f"{path}: the walk cannot fill {unknown}; add them to fill"
        for label, filled in _fillings(path, names, fill):
            for query in VARIANTS.get(path, ({},)):
                name = re.sub(r"\W+", "_", label.strip("/")) or "queue"
                suffix = "_".join(query.values())
                urls.append((f"{name}{'-' + suffix if suffix else ''}", _with(filled, query)))
    return urls


def _fillings(
    path: str, names: list[str], fill: dict[str, list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    """(the path with labels, the path with values) for every combination of values."""
    paths = [(path, path)]
    for name in names:
        key = f"{{{name}}}"
        paths = [(label.replace(key, tag), p.replace(key, value))
                 for label, p in paths for tag, value in fill[name]]  # fmt: skip
    return paths


def _with(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def _names(r: Room) -> set[str]:
    """Names a page shows as they are: sites, addresses, districts, contacts, users, and what
    officers typed."""
    words: set[str] = {"wang", "zhang"}
    for row in r.rows("SELECT name, address, district FROM sites"):
        for value in row:
            words.update(re.findall(WORD, value or ""))
    for (contacts,) in r.rows("SELECT event -> 'site' -> 'contacts' FROM alarms"):
        for contact in contacts or []:
            words.update(re.findall(WORD, contact.get("name") or ""))
    devices = r.rows("SELECT DISTINCT event ->> 'device_id' FROM alarms")
    words.update(d for (d,) in devices if d)
    typed = r.rows(  # what officers typed, in their language, shown as typed
        "SELECT crew FROM incidents UNION SELECT resolution_note FROM incidents"
        " UNION SELECT detail ->> 'note' FROM timeline"
    )
    return words | {text for (text,) in typed if text}


async def _logged_in(browser: Browser, r: Room, lang: str) -> BrowserContext:
    context = await browser.new_context(locale=lang, viewport=DESKTOP)
    page = await context.new_page()
    await page.goto(f"{r.url}/login?lang={lang}")
    await page.fill("input[name=name]", "zhang")  # a supervisor: the audit too
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form.login button[type=submit]")
    await page.wait_for_url(f"{r.url}/")
    await page.close()
    return context


async def _look(page: Page, url: str, name: str, lang: str, allowed: set[str]) -> list[str]:
    joiner = "&" if "?" in url else "?"
    answer = await page.goto(f"{url}{joiner}lang={lang}")
    assert answer is not None
    if "text/html" not in (answer.headers.get("content-type") or ""):
        return []  # JSON beside a page (the alert page's status): not read by people as such
    await page.wait_for_load_state("load")
    await page.evaluate("document.fonts.ready")
    await page.screenshot(path=SHOTS / f"walk-{name}.png", full_page=True)
    problems = _problems(name, *(await page.evaluate(READ, lang)), lang=lang, allowed=allowed)
    return problems + await _on_a_phone(page, name)


async def _on_a_phone(page: Page, name: str) -> list[str]:
    """The page laid out 390 px wide: nothing reaches past the right edge (no sideways
    scrolling); photographed as ``walk-{name}-phone.png``. A fragment (the live parts: no
    ``<html lang>``, no stylesheet) is laid out within its page, walked as that."""
    if not await page.evaluate("document.documentElement.lang"):
        return []
    await page.set_viewport_size(PHONE)
    try:
        await page.evaluate("new Promise((laid) => requestAnimationFrame(() => laid()))")
        await page.screenshot(path=SHOTS / f"walk-{name}-phone.png", full_page=True)
        over = await page.evaluate(SIDEWAYS)
    finally:
        await page.set_viewport_size(DESKTOP)
    if over is None:
        return []
    by, widest, right, text = over
    return [
        f"{name}: scrolls sideways on a phone by {by} px: {widest} reaches {right} px ({text!r})"
    ]


def _problems(
    name: str, own: str, text: str, apart: list[list[str]], *, lang: str, allowed: set[str]
) -> list[str]:
    problems = [f"{name}: code {c!r}" for c in raw_codes(text, CODES)]
    problems += [f"{name}: code {c!r}" for _, part in apart for c in raw_codes(part, CODES)]
    assert own.startswith(lang[:2]), f"{name}: a {lang} page says it is {own}"
    parts = [(own, text), *((part_lang, part) for part_lang, part in apart)]
    for part_lang, part in parts:
        if part_lang.startswith("zh"):
            english = english_in_chinese(part, allowed | ALLOWED, min_letters=4)
            problems += [f"{name}: English {w!r}" for w in english]
        else:
            problems += [f"{name}: Chinese {w!r}" for w in chinese_in_english(part, allowed)]
    return problems


async def _refused(page: Page, r: Room, lang: str, allowed: set[str]) -> list[str]:
    """The error pages of the forms: a step already taken (409), a resolve while the gas is
    still there (409), a resolve without a cause (422), with the note kept."""
    ((leak,),) = r.rows(
        "SELECT incident_id FROM alarms WHERE alarm_type = 'leak_high' AND site_id = 'rest-e2e'"
    )
    problems = []
    for action, fields, status in (
        ("acknowledge", {"note": "打过电话"}, "409"),
        ("resolve", {"note": "打过电话", "cause": "valve_fault"}, "409"),
        ("resolve", {"note": "打过电话", "cause": ""}, "422"),
    ):
        await page.goto(f"{r.url}/incidents/{leak}?lang={lang}")
        csrf = await page.get_attribute("meta[name=csrf]", "content")
        await page.evaluate(
            """([path, fields]) => {
                const f = document.createElement("form");
                f.method = "post"; f.action = path;
                for (const [k, v] of Object.entries(fields)) {
                    const i = document.createElement("input"); i.name = k; i.value = v; f.append(i);
                }
                document.body.append(f); f.submit();
            }""",
            [f"/incidents/{leak}/{action}", {"csrf": csrf, **fields}],
        )
        await page.wait_for_selector("p.error")
        assert "打过电话" in await page.content()  # the note kept
        name = f"refused-{action}-{status}-{lang}"
        await page.screenshot(path=SHOTS / f"walk-{name}.png", full_page=True)
        problems += _problems(name, *(await page.evaluate(READ, lang)), lang=lang, allowed=allowed)
        problems += await _on_a_phone(page, name)
    return problems
