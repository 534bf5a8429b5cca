"""The incident page's gas level plot, the printable incident record and the map of sites, on
the control-room city (tests/central/control_seed.py) with coordinates and the readings its
alarm events carried; the map also in Chromium, served from the package with no internet."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import expect

import central
from central.settings import CentralSettings
from tests.central.control_seed import City, Settings, city_app
from tests.central.test_control_pages import _login
from tests.support.browser import chromium
from tests.support.services import free_port, wait_for_port

START = datetime.now(UTC) - timedelta(minutes=4)


def _event(alarm_id: str, revision: int, lel: float, seq: int, after_s: int, **more: Any) -> str:
    at = (START + timedelta(seconds=after_s)).isoformat()
    readings = {"lel_pct": lel, "seq": seq, "flags": []}
    return json.dumps({"alarm_id": alarm_id, "revision": revision, "device_id": "det-1",
                       "readings": readings, "times": {"event_at": at}} | more)  # fmt: skip


def _readings(city: City) -> None:
    """The leak_low rose at 23 %LEL (escalated with the same report: one point), the leak_high
    at 57, the clear at 4; one event with no number and one with a broken time."""
    rows = [
        ("gw1-a1", 1, "raised", _event("gw1-a1", 1, 23.0, 1, 0)),
        ("gw1-a1", 2, "escalated", _event("gw1-a1", 2, 23.0, 1, 60)),
        ("gw1-a2", 1, "raised", _event("gw1-a2", 1, 57.0, 2, 20)),
        ("gw1-a1", 3, "cleared", _event("gw1-a1", 3, 4.0, 3, 200)),
        ("gw1-a2", 2, "updated", json.dumps({"readings": {"lel_pct": "high"}})),
        ("gw1-a2", 3, "updated", _event("gw1-a2", 3, 31.5, 4, 0, times={"event_at": "soon"})),
        ("gw1-a3", 1, "raised", json.dumps({"readings": {"battery_mv": 2900}})),
    ]
    for alarm_id, revision, transition, event in rows:
        city.rows(
            "INSERT INTO alarm_events (alarm_id, revision, gateway_id, transition, received_at,"
            " received_by, event) VALUES (%s, %s, 'gw1', %s, now(), 'test', %s) RETURNING 1",
            alarm_id, revision, transition, event,
        )  # fmt: skip


def _place(city: City) -> None:
    """r1, r2 in Xuhui and m1 in Minhang have coordinates; m2 has none."""
    for site, lat, lon in (("r1", 31.19, 121.43), ("r2", 31.20, 121.44), ("m1", 31.11, 121.38)):
        city.rows(
            "UPDATE sites SET lat = %s, lon = %s WHERE site_id = %s RETURNING 1", lat, lon, site
        )


@pytest.fixture
async def city(pg_dsn: str) -> AsyncIterator[City]:
    async with city_app(pg_dsn) as c:
        _readings(c)
        _place(c)
        yield c


def _circles(page: str) -> list[str]:
    return re.findall(r"<circle [^>]*><title>([^<]*)</title>", page)


# --- the gas level ---------------------------------------------------------------------------


async def test_the_gas_level_as_points_with_the_thresholds(city: City) -> None:
    async with city.client() as browser:
        await _login(browser)
        page = (await browser.get(f"/incidents/{city.emergency}")).text
        assert '<figure class="gas">' in page
        hovers = _circles(page)
        # 23 (once, though two events carried it), 57, 31.5 (its broken time: when received), 4
        levels = sorted(float(re.findall(r"([\d.]+) %LEL", h)[0]) for h in hovers)
        assert levels == [4, 23, 31.5, 57], hovers
        assert re.search(r">低报</text><text [^>]*>20 %LEL<", page)
        assert re.search(r">高报</text><text [^>]*>50 %LEL<", page)
        assert "探测器 det-1：57 %LEL" in page  # noqa: RUF001
        assert "不是连续记录" in page  # the page says what the points are
        english = (await browser.get(f"/incidents/{city.emergency}?lang=en")).text
        assert re.search(r">high alarm</text><text [^>]*>50 %LEL<", english)
        assert "not a continuous record" in english
        assert "Times: Beijing time" in english  # as every time on the page says it
        first = (START + timedelta(seconds=0)).astimezone(city_zone()).strftime("%H:%M:%S")
        assert f"<title>{first} detector det-1: 23 %LEL</title>" in english  # local time


async def test_no_plot_without_gas_and_a_plain_word_without_readings(city: City) -> None:
    async with city.client() as browser:
        await _login(browser)
        maintenance = (await browser.get(f"/incidents/{city.maintenance}")).text
        assert '<figure class="gas">' not in maintenance  # a battery: nothing about gas
        city.rows("DELETE FROM alarm_events RETURNING 1")
        leak = (await browser.get(f"/incidents/{city.emergency}")).text
        assert "中心没有收到本事件的燃气浓度读数" in leak
        assert "<svg" not in leak
        live = (await browser.get(f"/incidents/{city.emergency}/live")).text
        assert "中心没有收到本事件的燃气浓度读数" in live  # the live part carries it too


def city_zone() -> Any:
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    return ZoneInfo(Settings().timezone)


# --- the printable record ------------------------------------------------------------------


async def test_the_printable_record_after_dispatch_and_resolve(city: City) -> None:
    city.rows("UPDATE alarms SET active = false WHERE alarm_id = 'gw1-a2' RETURNING 1")  # gas gone
    async with city.client() as browser:
        csrf = await _login(browser)
        base = f"/incidents/{city.emergency}"
        for action, form in (
            ("acknowledge", {"note": ""}),
            ("dispatch", {"crew": "Crew 3", "eta_minutes": "20", "note": ""}),
            ("resolve", {"cause": "aged_or_damaged_hose", "note": "hose replaced"}),
        ):
            answer = await browser.post(f"{base}/{action}", data=form | {"csrf": csrf})
            assert answer.status_code == 303, answer.text
        incident = (await browser.get(base)).text
        assert f'href="/console/incidents/{city.emergency}/record"' in incident
        record = await browser.get(f"/console/incidents/{city.emergency}/record")
        assert record.status_code == 200
        page = record.text
        facts = ("事件记录", "老王饭店", "somewhere", "gw1", "已关闭", "Crew 3", "wang",
                 "hose replaced", "北京时间", 'id="print"', "/static/record.js", "<svg",
                 "王老板", "13800000001")  # fmt: skip
        for fact in facts:
            assert fact in page, fact
        assert page.count(">wang<") >= 3  # acknowledged, dispatched, resolved: by whom
        assert "软管老化或破损" in page  # the cause in words
        assert "aged_or_damaged_hose" not in re.sub(r'(class|data-[a-z]+|value)="[^"]*"', "", page)
        english = (await browser.get(f"/console/incidents/{city.emergency}/record?lang=en")).text
        assert "Incident record" in english
        assert "Print" in english
        assert 'href="/console/incidents/' in english  # the language links stay on the record
        css = (await browser.get("/static/control.css")).text
        assert "size: A4" in css
        assert (await browser.get("/static/record.js")).status_code == 200


async def test_the_record_needs_a_login_and_the_officers_district(city: City) -> None:
    path = f"/console/incidents/{city.emergency}/record"
    async with city.client() as browser:
        page = await browser.get(path)
        assert page.status_code == 401
        assert f'name="next" value="{path}"' in page.text
        from tests.central.control_seed import PASSWORD  # noqa: PLC0415

        login = await browser.post("/login", data={"name": "wang", "password": PASSWORD,
                                                   "next": path})  # fmt: skip
        assert login.headers["location"] == path
        away = await browser.post("/login", data={"name": "wang", "password": PASSWORD,
                                                  "next": "//elsewhere.example/"})  # fmt: skip
        assert away.headers["location"] == "/"
    async with city.client() as li:  # Minhang only
        await _login(li, "li")
        assert (await li.get(path)).status_code == 404


# --- the map ---------------------------------------------------------------------------------


def _map_data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', page, re.S)
    assert found
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def test_the_map_colours_sites_by_their_state(city: City) -> None:
    async with city.client() as browser:
        await _login(browser)
        answer = await browser.get("/console/map")
        assert answer.status_code == 200
        page = answer.text
        data = _map_data(page)
        by_name = {s[4]: s for s in data["sites"]}
        assert set(by_name) == {"老王饭店", "小李面馆", "Minhang Noodles"}  # m2: no coordinates
        assert by_name["老王饭店"][2:4] == [0, city.emergency]  # emergency, its incident
        assert by_name["Minhang Noodles"][2:4] == [1, city.offline]  # its gateway is offline
        assert by_name["小李面馆"][2:4] == [2, city.maintenance]
        assert data["states"][1] == "网关离线，状态不明"  # noqa: RUF001
        assert data["tiles"] == ""
        assert "1 个地点在登记信息中没有坐标" in page
        assert "未配置底图" in page
        assert f'<a href="/incidents/{city.emergency}">老王饭店</a>' in page  # listed too
        assert 'href="/console/map"' in page  # the nav link
        assert "/static/vendor/leaflet/leaflet.js" in page
        assert "img-src 'self' data:;" in answer.headers["content-security-policy"]
        city.rows("UPDATE incidents SET state = 'closed' WHERE incident_id = %s RETURNING 1",
                  city.emergency)  # fmt: skip
        calm = _map_data((await browser.get("/console/map?lang=en")).text)
        assert {s[4]: s[2:4] for s in calm["sites"]}["老王饭店"] == [3, None]  # nothing open
        assert calm["states"][3] == "No open incident"
    async with city.client() as li:  # Minhang only
        await _login(li, "li")
        names = [s[4] for s in _map_data((await li.get("/console/map")).text)["sites"]]
        assert names == ["Minhang Noodles"]


async def test_a_tile_server_when_one_is_set(city: City) -> None:
    from central.api import create_app  # noqa: PLC0415

    url = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    city.app = create_app(city.pool, Settings(map_tile_url=url), city.hub)  # type: ignore[call-arg]
    async with city.client() as browser:
        await _login(browser)
        answer = await browser.get("/console/map")
        assert _map_data(answer.text)["tiles"] == url
        assert "https://*.tiles.example.org" in answer.headers["content-security-policy"]
        assert "未配置底图" not in answer.text


def test_the_tile_url_setting() -> None:
    base = {"db": "postgresql://x@127.0.0.1/x", "gasco_mqtt": "mqtt://127.0.0.1"}
    assert CentralSettings(**base).map_tile_url == ""
    url = "http://127.0.0.1:8081/tiles/{z}/{x}/{y}.png"
    assert CentralSettings(**base, map_tile_url=url).map_tile_url == url
    for bad in ("tiles/{z}/{x}/{y}.png", "https://tiles.example.org/map.png", "javascript:x"):
        with pytest.raises(ValueError, match="map_tile_url"):
            CentralSettings(**base, map_tile_url=bad)


def test_the_vendored_files_ship_in_the_package() -> None:
    """Every file under central/static/vendor matches a package-data pattern of pyproject."""
    root = Path(central.__file__).parent
    project = tomllib.loads((root.parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["central"]
    shipped = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    vendored = {p for p in (root / "static" / "vendor").rglob("*") if p.is_file()}
    assert len(vendored) >= 10
    assert vendored <= shipped, sorted(map(str, vendored - shipped))


# --- in a browser ------------------------------------------------------------------------------


@pytest.fixture
async def served(city: City) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(city.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_the_map_in_chromium_with_no_internet(served: str) -> None:
    """Leaflet from the package draws the sites; nothing is asked of any other host."""
    from tests.central.control_seed import PASSWORD  # noqa: PLC0415

    elsewhere: list[str] = []
    errors: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        page.on(
            "request",
            lambda r: None if r.url.startswith(served) else elsewhere.append(r.url),
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{served}/console/map")
        await page.fill("input[name=name]", "wang")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console/map")
        await expect(page.locator(".leaflet-marker-icon.pin-emergency")).to_have_count(1)
        await expect(page.locator(".district span")).to_have_count(2)  # Xuhui, Minhang
        await page.locator(".leaflet-marker-icon.pin-emergency").click()
        link = page.locator(".leaflet-popup-content a")
        await expect(link).to_have_text("打开事件")
        await link.click()
        await page.wait_for_url("**/incidents/*")
    assert elsewhere == []
    assert errors == []
