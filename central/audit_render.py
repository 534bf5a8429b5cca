"""The audit report (:mod:`central.audit`) as JSON, CSV and printable HTML.

JSON (``schema`` ``gasgate/central/audit/1``): the report's fields, ``coverage`` and
``responses`` rows as in :mod:`central.audit` plus their shares; a ``None`` district, site type
or month means "every one" (a total row); months are ``YYYY-MM`` (local); times ISO 8601.

CSV: UTF-8 with a byte-order mark (Excel then reads Chinese district names right), four tables
one after the other, each introduced by a row ``section,<name>`` and its header row, and ended
by an empty row. Codes (site type, category) are kept as codes for machines; the HTML words them.

* ``report``: ``key,value`` — ``made_at`` (local, ISO 8601 with offset), ``timezone``,
  ``district`` (empty: every one), ``since`` (empty: every incident), ``silent_after_s``.
* ``coverage``: ``scope`` (``total``, ``district``, ``site_type``, ``district_site_type``),
  ``district``, ``site_type``, ``registered``, ``protected``, ``unprotected``, ``unknown``,
  ``unknown_no_recent_report`` (its gateway offline or silent, or its summary stale),
  ``unknown_no_verdict``,
  ``protected_share`` and ``unknown_share`` (0 to 1, 4 decimals), ``gateways``,
  ``gateways_unreachable``, ``sites_past_service_life``, ``parts_past_service_life``,
  ``sites_cylinders_overdue``, ``cylinders_overdue``.
* ``response``: ``scope`` (``total``, ``month``, ``district``, ``month_district``), ``month``
  (``YYYY-MM``, local), ``district``, ``category`` (``emergency``/``maintenance``),
  ``incidents``, ``closed_loop`` (resolved with a cause), ``closed_loop_rate`` (0 to 1), then for
  each milestone ``acknowledged``, ``dispatched``, ``on_site``, ``resolved``: ``<m>_n`` (incidents
  that reached it), ``<m>_p50_s`` and ``<m>_p90_s`` (seconds from the raise, 1 decimal; empty
  when none reached it).
* ``causes``: ``category``, ``cause`` (a code of central.grouping.CAUSES), ``incidents``
  (closed-loop incidents put down to it), ``share`` (of the category's closed-loop incidents).

HTML: a report a regulator hands on, in Simplified Chinese or English, local times with the
zone's label, A4 print CSS, charts as inline SVG (:mod:`central.audit_svg`); no script, nothing
fetched from elsewhere.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from central.audit import MILESTONES, AuditReport, CauseCount, Coverage, Percentiles, Response
from central.audit_svg import PROTECTED, Bar, Series, grouped_bars, share_bars
from central.audit_words import WORDS
from gateway.api.i18n import zone_label
from gateway.words import word

__all__ = [
    "FORMATS",
    "SCHEMA",
    "AuditFormat",
    "Lang",
    "Rendered",
    "render",
    "render_csv",
    "render_html",
    "render_json",
]

SCHEMA: Final = "gasgate/central/audit/1"
AuditFormat = Literal["json", "csv", "html"]
FORMATS: Final[tuple[AuditFormat, ...]] = ("json", "csv", "html")
Lang = Literal["zh-CN", "en"]
_NAMED_MONTHS: Final = 13  # month names an axis has room for
_NONE: Final = "\u2013"  # an en dash: no value (nobody reached that step, no site)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered report ready to send or save (what ``GET /api/audit`` answers)."""

    body: bytes
    media_type: str
    filename: str


def render(report: AuditReport, fmt: AuditFormat, lang: str = "zh-CN") -> Rendered:
    """The report in ``fmt``; ``lang`` (``zh``, ``zh-CN`` or ``en``) matters for HTML only."""
    stem = f"gasgate-audit-{_local(report, report.at).date().isoformat()}"
    if fmt == "csv":
        return Rendered(render_csv(report).encode(), "text/csv; charset=utf-8", f"{stem}.csv")
    if fmt == "html":
        html = render_html(report, lang)
        return Rendered(html.encode(), "text/html; charset=utf-8", f"{stem}.html")
    return Rendered(render_json(report).encode(), "application/json", f"{stem}.json")


# ---------------------------------------------------------------------------------------- JSON


def render_json(report: AuditReport) -> str:
    return json.dumps(_as_dict(report), ensure_ascii=False, indent=2)


def _as_dict(report: AuditReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "at": _local(report, report.at).isoformat(),
        "timezone": report.tz,
        "district": report.district,
        "since": report.since.isoformat() if report.since else None,
        "silent_after_s": report.silent_after_s,
        "coverage": [_coverage_dict(c) for c in report.coverage],
        "responses": [_response_dict(r) for r in report.responses],
        "causes": [_cause_dict(report, c) for c in report.causes],
    }


def _cause_dict(report: AuditReport, c: CauseCount) -> dict[str, Any]:
    return {
        "category": c.category,
        "cause": c.cause,
        "incidents": c.incidents,
        "share": _cause_share(report, c),
    }


def _cause_share(report: AuditReport, c: CauseCount) -> float:
    """Of the category's closed-loop incidents (every cause counted is one)."""
    return c.incidents / sum(o.incidents for o in report.causes if o.category == c.category)


def _coverage_dict(c: Coverage) -> dict[str, Any]:
    return {
        "district": c.district,
        "site_type": c.site_type,
        "registered": c.registered,
        "protected": c.protected,
        "unprotected": c.unprotected,
        "unknown": c.unknown,
        "unknown_no_recent_report": c.unknown_no_recent_report,
        "unknown_no_verdict": c.unknown_no_verdict,
        "protected_share": c.protected_share,
        "unknown_share": c.unknown_share,
        "gateways": c.gateways,
        "gateways_unreachable": c.gateways_unreachable,
        "sites_past_service_life": c.sites_past_service_life,
        "parts_past_service_life": c.parts_past_service_life,
        "sites_cylinders_overdue": c.sites_cylinders_overdue,
        "cylinders_overdue": c.cylinders_overdue,
    }


def _response_dict(r: Response) -> dict[str, Any]:
    def stats(p: Percentiles) -> dict[str, Any]:
        return {"n": p.n, "p50_s": p.p50_s, "p90_s": p.p90_s}

    return {
        "month": _month_code(r.month),
        "district": r.district,
        "category": r.category,
        "incidents": r.incidents,
        "closed_loop": r.closed_loop,
        "closed_loop_rate": r.closed_loop_rate,
    } | {m: stats(r.milestone(m)) for m in MILESTONES}


def _month_code(month: date | None) -> str | None:
    return month.strftime("%Y-%m") if month else None


# ----------------------------------------------------------------------------------------- CSV

_COVERAGE_COLUMNS: Final = (
    "scope",
    "district",
    "site_type",
    "registered",
    "protected",
    "unprotected",
    "unknown",
    "unknown_no_recent_report",
    "unknown_no_verdict",
    "protected_share",
    "unknown_share",
    "gateways",
    "gateways_unreachable",
    "sites_past_service_life",
    "parts_past_service_life",
    "sites_cylinders_overdue",
    "cylinders_overdue",
)
_RESPONSE_COLUMNS: Final = (
    "scope",
    "month",
    "district",
    "category",
    "incidents",
    "closed_loop",
    "closed_loop_rate",
    *(f"{m}_{s}" for m in MILESTONES for s in ("n", "p50_s", "p90_s")),
)


_CAUSE_COLUMNS: Final = ("category", "cause", "incidents", "share")


def render_csv(report: AuditReport) -> str:
    """The four tables (module docstring), starting with the UTF-8 byte-order mark."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(
        [
            ["section", "report"],
            ["key", "value"],
            ["made_at", _local(report, report.at).isoformat(timespec="seconds")],
            ["timezone", report.tz],
            ["district", _csv_text(report.district or "")],
            ["since", report.since.isoformat() if report.since else ""],
            ["silent_after_s", _number(report.silent_after_s)],
            [],
            ["section", "coverage"],
            list(_COVERAGE_COLUMNS),
        ]
    )
    for c in report.coverage:
        d = _coverage_dict(c)
        writer.writerow([_coverage_scope(c)] + [_cell(d[k]) for k in _COVERAGE_COLUMNS[1:]])
    writer.writerows([[], ["section", "response"], list(_RESPONSE_COLUMNS)])
    for r in report.responses:
        d = _response_dict(r)
        flat = d | {f"{m}_{k}": v for m in MILESTONES for k, v in d[m].items()}
        writer.writerow([_response_scope(r)] + [_cell(flat[k]) for k in _RESPONSE_COLUMNS[1:]])
    writer.writerows([[], ["section", "causes"], list(_CAUSE_COLUMNS)])
    for cause in report.causes:
        d = _cause_dict(report, cause)
        writer.writerow([_cell(d[k]) for k in _CAUSE_COLUMNS])
    writer.writerow([])
    return out.getvalue()


def _coverage_scope(c: Coverage) -> str:
    if c.district is None:
        return "total" if c.site_type is None else "site_type"
    return "district" if c.site_type is None else "district_site_type"


def _response_scope(r: Response) -> str:
    if r.month is None:
        return "total" if r.district is None else "district"
    return "month" if r.district is None else "month_district"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _number(value)
    return _csv_text(str(value))


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _csv_text(text: str) -> str:
    """District names are typed by people; one starting like a formula (``=HYPERLINK(...)``)
    would run when the regulator opens the file in a spreadsheet (OWASP CSV injection)."""
    return f"'{text}" if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


# ---------------------------------------------------------------------------------------- HTML

_ENV: Final = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _lang(lang: str) -> Lang:
    return "en" if lang == "en" else "zh-CN"


class _Words:
    """Everything the template says, in one language."""

    def __init__(self, report: AuditReport, lang: Lang) -> None:
        self.lang = lang
        self._report = report

    def __call__(self, key: str, **values: object) -> str:
        pair = WORDS[key]
        return (pair[1] if self.lang == "en" else pair[0]).format(**values)

    def district(self, name: str | None) -> str:
        if name is None:
            return self("all")
        return name or self("no_district")

    def site_type(self, code: str | None) -> str:
        return self("all") if code is None else word("site_type", code, self.lang)

    def category(self, code: str) -> str:
        return word("category", code, self.lang)

    def cause(self, code: str) -> str:
        return word("cause", code, self.lang)

    def pct(self, ratio: float | None) -> str:
        return _NONE if ratio is None else f"{ratio:.1%}"

    def count(self, n: int) -> str:
        return f"{n:,}"

    def at_sites(self, n: int) -> str:
        return self("at_site" if n == 1 else "at_sites", n=self.count(n))

    def duration(self, seconds: float | None) -> str:
        """Plain words: 45 秒 / 4 分 30 秒 / 2 小时 5 分 / 3 天 4 小时."""
        if seconds is None:
            return _NONE
        s = round(seconds)
        units = ("天", "小时", "分", "秒") if self.lang == "zh-CN" else ("d", "h", "min", "s")
        days, rest = divmod(s, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        parts = [(days, units[0]), (hours, units[1]), (minutes, units[2]), (secs, units[3])]
        first = next((i for i, (v, _) in enumerate(parts) if v), 3)
        return " ".join(f"{v} {u}" for v, u in parts[first : first + 2] if v or first == 3)

    def month(self, month: date | None) -> str:
        if month is None:
            return self("all")
        return f"{month.year}年{month.month}月" if self.lang == "zh-CN" else month.strftime("%b %Y")

    def month_axis(self, months: tuple[date, ...]) -> list[str]:
        """Month names for a chart's axis; the first and every January also name the year,
        on a second line, so two Decembers never look alike. Past 13 months only every
        k-th month is named (each with its year; k divides a year), so names never overlap."""
        step = next(k for k in (1, 2, 3, 4, 6, 12, len(months)) if len(months) <= k * _NAMED_MONTHS)
        out = []
        for i, m in enumerate(months):
            name = f"{m.month}月" if self.lang == "zh-CN" else m.strftime("%b")
            with_year = i == 0 or m.month == 1 or step > 1
            out.append("" if i % step else f"{name}\n{m.year}" if with_year else name)
        return out

    def time(self, at: datetime) -> str:
        local = _local(self._report, at)
        offset = local.strftime("%z")
        return f"{local:%Y-%m-%d %H:%M} ({self.zone()}, UTC{offset[:3]}:{offset[3:]})"

    def zone(self) -> str:
        """The zone as people say it ("北京时间"), as the SMS and the alert page say it."""
        return zone_label(_local(self._report, self._report.at), self.lang)


def render_html(report: AuditReport, lang: str = "zh-CN") -> str:
    words = _Words(report, _lang(lang))
    months = report.months()
    emergency = [report.response("emergency", m, None) for m in months]
    return _ENV.get_template("audit.html").render(
        r=report,
        t=words,
        html_lang=words.lang,
        total=report.total,
        milestones=MILESTONES,
        months=months,
        by_month=[
            row
            for m in months
            for row in (report.response(c, m, None) for c in ("emergency", "maintenance"))
            if row is not None
        ],
        by_district=sorted(
            (r for r in report.responses if r.month is None and r.district is not None),
            key=lambda r: (r.district or "", r.category),
        ),
        whole=report.response("emergency", None, None),
        causes=[(c, _cause_share(report, c)) for c in report.causes],
        coverage_chart=Markup(_coverage_chart(report, words)),  # noqa: S704 - escaped in audit_svg
        response_charts=[
            Markup(_response_chart(m, months, emergency, words))  # noqa: S704 - escaped in audit_svg
            for m in MILESTONES
        ],
        closed_loop_chart=Markup(_closed_loop_chart(report, months, words)),  # noqa: S704
    )


def _coverage_chart(report: AuditReport, t: _Words) -> str:
    rows = [report.total, *report.by_district()] if report.district is None else [report.total]
    bars = [
        Bar(
            t.district(c.district) if c is not report.total else t("all"),
            c.protected,
            c.unprotected,
            c.unknown,
        )
        for c in rows
    ]
    return share_bars(
        bars,
        legend=(t("protected"), t("unprotected"), t("unknown")),
        share_label=lambda b: t(
            "share_label",
            p=t.pct(b.protected / b.registered if b.registered else None),
            u=t.pct(b.unknown / b.registered if b.registered else None),
        ),
        title=t("chart_coverage"),
    )


def _response_chart(
    milestone: str, months: tuple[date, ...], rows: list[Response | None], t: _Words
) -> str:
    stats = [r.milestone(milestone) if r else None for r in rows]
    p50 = [s.p50_s if s else None for s in stats]
    p90 = [s.p90_s if s else None for s in stats]
    top = max((v for v in p90 if v is not None), default=0.0)
    divisor, unit = _unit(top, t.lang)
    return grouped_bars(
        t.month_axis(months),
        [
            Series(t("p50"), [None if v is None else v / divisor for v in p50], PROTECTED),
            Series(t("p90"), [None if v is None else v / divisor for v in p90], "#8fc7a0"),
        ],
        title=t("chart_response", step=t(milestone)),
        axis=lambda v: f"{v:g} {unit}",
        empty=t("no_incidents"),
        label=lambda v: f"{v:.0f}" if v >= 10 else f"{v:.1f}".removesuffix(".0"),
    )


def _unit(seconds: float, lang: Lang) -> tuple[float, str]:
    """The axis unit for times up to ``seconds``: seconds, minutes, hours or days."""
    zh = lang == "zh-CN"
    if seconds < 120:
        return 1.0, "秒" if zh else "s"
    if seconds < 2 * 3600:
        return 60.0, "分" if zh else "min"
    if seconds < 2 * 86400:
        return 3600.0, "小时" if zh else "h"
    return 86400.0, "天" if zh else "d"


def _closed_loop_chart(report: AuditReport, months: tuple[date, ...], t: _Words) -> str:
    def rates(category: str) -> list[float | None]:
        rows = [report.response(category, m, None) for m in months]
        return [
            None if r is None or r.closed_loop_rate is None else r.closed_loop_rate * 100
            for r in rows
        ]

    return grouped_bars(
        t.month_axis(months),
        [
            Series(t.category("emergency"), rates("emergency"), "#b03a2e"),
            Series(t.category("maintenance"), rates("maintenance"), "#4a6fa5"),
        ],
        title=t("chart_closed_loop"),
        axis=lambda v: f"{v:.0f}%",
        top=100.0,
        empty=t("no_incidents"),
        label=lambda v: f"{v:.0f}%",
    )


def _local(report: AuditReport, at: datetime) -> datetime:
    return at.astimezone(ZoneInfo(report.tz))
