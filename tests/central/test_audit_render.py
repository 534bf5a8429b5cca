"""The audit rendered: JSON, CSV that parses back, HTML in both languages with charts and no raw
codes; and the HTML looked at in Chromium (screenshots kept in the test's tmp dir)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from psycopg_pool import AsyncConnectionPool

from central.audit import AuditReport, audit_report
from central.audit_render import render, render_csv, render_html, render_json
from tests.central.audit_seed import BINHU, LIANGXI, NOW, create_schema, seed_city

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def report(pg_dsn: str) -> AsyncIterator[AuditReport]:
    create_schema(pg_dsn)
    seed_city(pg_dsn)
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=1, open=False) as pool:
        yield await audit_report(
            pool, district=None, since=None, now=NOW, tz=ZoneInfo("Asia/Shanghai")
        )


def _tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The CSV's sections, each a list of rows by column name."""
    tables: dict[str, list[dict[str, str]]] = {}
    rows = list(csv.reader(io.StringIO(text)))
    i = 0
    while i < len(rows):
        assert rows[i][0] == "section", rows[i]
        name, header = rows[i][1], rows[i + 1]
        body = []
        i += 2
        while rows[i]:
            body.append(dict(zip(header, rows[i], strict=True)))
            i += 1
        tables[name] = body
        i += 1
    return tables


def test_csv_parses_back(report: AuditReport) -> None:
    text = render_csv(report)
    assert text.startswith("\ufeff")
    tables = _tables(text.removeprefix("\ufeff"))
    meta = {row["key"]: row["value"] for row in tables["report"]}
    assert meta == {
        "made_at": "2026-12-04T14:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "district": "",
        "since": "",
        "silent_after_s": "900",
    }
    total = next(r for r in tables["coverage"] if r["scope"] == "total")
    assert (total["registered"], total["protected"], total["unknown"]) == ("8", "3", "4")
    assert total["protected_share"] == "0.375"
    binhu = next(
        r for r in tables["coverage"] if r["scope"] == "district" and r["district"] == BINHU
    )
    assert binhu["unknown_no_recent_report"] == "2"
    nov = next(
        r
        for r in tables["response"]
        if (r["scope"], r["month"], r["district"], r["category"])
        == ("month_district", "2026-11", LIANGXI, "emergency")
    )
    assert (nov["incidents"], nov["closed_loop"], nov["closed_loop_rate"]) == ("4", "1", "0.25")
    assert (nov["acknowledged_n"], nov["acknowledged_p50_s"], nov["acknowledged_p90_s"]) == (
        "4",
        "75",
        "237",
    )
    assert nov["on_site_p50_s"] == "900"
    october = next(
        r for r in tables["response"] if r["month"] == "2026-10" and r["scope"] == "month"
    )
    assert (october["acknowledged_n"], october["acknowledged_p50_s"]) == ("0", "")
    assert tables["causes"] == [
        {
            "category": "emergency",
            "cause": "aged_or_damaged_hose",
            "incidents": "1",
            "share": "0.5",
        },
        {"category": "emergency", "cause": "loose_connection", "incidents": "1", "share": "0.5"},
    ]


def test_csv_never_hands_a_formula_to_a_spreadsheet(report: AuditReport) -> None:
    evil = replace(report, district="=HYPERLINK(1)")
    meta = _tables(render_csv(evil).removeprefix("\ufeff"))["report"]
    assert {"key": "district", "value": "'=HYPERLINK(1)"} in meta


def test_json(report: AuditReport) -> None:
    data = json.loads(render_json(report))
    assert data["schema"] == "gasgate/central/audit/1"
    assert data["at"] == "2026-12-04T14:00:00+08:00"
    total = next(c for c in data["coverage"] if c["district"] is None and c["site_type"] is None)
    assert (total["registered"], total["unknown_no_recent_report"]) == (8, 2)
    row = next(
        r
        for r in data["responses"]
        if (r["month"], r["district"], r["category"]) == ("2026-11", LIANGXI, "emergency")
    )
    assert row["dispatched"] == {"n": 3, "p50_s": 240.0, "p90_s": pytest.approx(336.0)}
    rendered = render(report, "json")
    assert (rendered.media_type, rendered.filename) == (
        "application/json",
        "gasgate-audit-2026-12-04.json",
    )


def _visible(html: str) -> str:
    """What a reader sees: the text outside tags, styles and SVG titles' attributes."""
    body = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", body)


def test_html_in_both_languages(report: AuditReport) -> None:
    zh, en = render_html(report, "zh-CN"), render_html(report, "en")
    assert '<html lang="zh-CN">' in zh
    assert '<html lang="en">' in en
    for html in (zh, en):
        assert html.count("<svg") == 6  # coverage, four response times, closed loop
        assert "@page" in html
        assert "size: A4" in html
        assert "<script" not in html
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in html
    assert "2026-12-04 14:00 (北京时间, UTC+08:00)" in zh  # the zone as the SMS says it
    assert "2026-12-04 14:00 (Beijing time, UTC+08:00)" in en
    for text in (
        "燃气安全监测覆盖与处置审计报告",
        "状态不明",
        "餐饮场所",
        "居民用户",
        "紧急事件",
        "闭环率",
    ):
        assert text in zh, text
    for text in (
        "Gas safety coverage and response audit",
        "Unknown",
        "restaurant",
        "Closed-loop rate",
    ):
        assert text in en, text
    visible = _visible(zh)
    assert "接口松动" in zh  # loose_connection, worded
    for code in (
        "leak_high",
        "loose_connection",
        "aged_or_damaged_hose",
        "restaurant",
        "household",
        "emergency",
        "maintenance",
        "on_site",
        "unknown",
        "None",
    ):
        assert not re.search(rf"\b{code}\b", visible), code
    assert "1 min 15 s" in en
    assert "1 分 15 秒" in zh


def test_html_escapes_what_people_typed(report: AuditReport) -> None:
    evil = "<img src=x onerror=alert(1)>"
    rows = tuple(replace(c, district=evil) if c.district == LIANGXI else c for c in report.coverage)
    html = render_html(replace(report, coverage=rows), "en")
    assert evil not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 3  # the chart and two tables


def test_render_names_the_media_type(report: AuditReport) -> None:
    csv_ = render(report, "csv")
    assert (csv_.media_type, csv_.filename) == (
        "text/csv; charset=utf-8",
        "gasgate-audit-2026-12-04.csv",
    )
    assert csv_.body.startswith(b"\xef\xbb\xbf")
    html = render(report, "html", "en")
    assert html.media_type == "text/html; charset=utf-8"
    assert b'<html lang="en">' in html.body
    assert b'<html lang="zh-CN">' in render(report, "html", "zh").body


def test_a_long_period_names_fewer_months(report: AuditReport) -> None:
    long = replace(report, since=date(2022, 1, 1))
    html = render_html(long, "en")
    assert len(long.months()) == 60
    # Every 6th month named: January and July of 5 years, in each of the 5 charts by month.
    assert html.count(">Jan</text>") == 5 * 5
    assert html.count(">Jul</text>") == 5 * 5
    assert ">Feb</text>" not in html


def test_html_renders_an_empty_report(report: AuditReport) -> None:
    empty = replace(
        report, coverage=(replace(report.total, registered=0, protected=0),), responses=()
    )
    html = render_html(empty, "en")
    assert "No incidents in this period" in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")
async def test_html_looks_right_in_chromium(report: AuditReport, tmp_path: Path) -> None:
    """Screenshots for a person to look at; the test checks that the page lays out on A4."""
    playwright = pytest.importorskip("playwright.async_api")
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for lang in ("zh-CN", "en"):
                page = await browser.new_page(viewport={"width": 794, "height": 1123})
                html = render_html(report, lang)
                (tmp_path / f"audit-{lang}.html").write_text(html)
                await page.set_content(html)
                shot = tmp_path / f"audit-{lang}.png"
                await page.screenshot(path=str(shot), full_page=True)
                pdf = await page.pdf(format="A4", print_background=True)
                assert pdf.startswith(b"%PDF")
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 794, f"{lang}: {width} px wide, wider than A4"
                await page.close()
        finally:
            await browser.close()
