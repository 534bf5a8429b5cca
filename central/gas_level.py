"""An incident's gas level as the center knows it: the ``readings.lel_pct`` the gateway sent with
the incident's alarm events, drawn as points over the incident's time span with the leak
thresholds as lines (inline SVG, drawn on the server like the audit's charts).

The center never receives a detector's stream, only the reading behind each alarm event (the
raise, a re-announced higher peak, the clear), so the plot shows points and says so; the lines
between them only join one detector's points in time order. The thresholds are the rules'
defaults (:class:`rules.schema.LeakRule`): a site's own rule file may set others, which no
gas company message carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any, Final
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from central.audit_svg import svg_open, svg_text
from rules.schema import LeakRule

__all__ = [
    "GAS_TYPES",
    "THRESHOLDS",
    "PlotWords",
    "Reading",
    "Thresholds",
    "level_plot",
    "readings",
]

# Alarm types raised on a gas level: an incident with one shows the plot, points or none.
GAS_TYPES: Final = frozenset({"leak_low", "leak_high", "gas_rising"})
_MAX_EVENTS: Final = 5000  # an incident's events; far more than any real one has
_COLOURS: Final = ("#1d3557", "#6a1b9a", "#00796b", "#5d4037")  # one per detector
_LOW_FILL: Final = "#fff4d6"
_HIGH_FILL: Final = "#fde2e2"


@dataclass(frozen=True, slots=True)
class Reading:
    at: datetime  # the event's own time (gateway clock), else when the center received it
    device_id: str
    lel_pct: float


@dataclass(frozen=True, slots=True)
class Thresholds:
    low: float
    high: float


THRESHOLDS: Final = Thresholds(LeakRule().low_lel_pct, LeakRule().high_lel_pct)


@dataclass(frozen=True, slots=True)
class PlotWords:
    """The plot's labels, translated by the caller."""

    title: str
    low: str  # the low threshold's name ("low alarm"); its level is written under it
    high: str
    reading: str  # a point's hover text: "{device} {pct} %LEL"


_SQL: Final = """
SELECT e.alarm_id, e.revision, e.received_at, e.event
FROM alarm_events e JOIN alarms a USING (alarm_id)
WHERE a.incident_id = %s AND jsonb_typeof(e.event -> 'readings' -> 'lel_pct') = 'number'
ORDER BY e.alarm_id, e.revision
LIMIT %s
"""


async def readings(conn: AsyncConnection[Any], incident_id: int) -> list[Reading]:
    """The incident's gas readings, oldest first, each once: an event repeats its alarm's
    readings (an escalation, an acknowledgement), so a detector's report (its ``seq``) counts
    once, at the first event that carried it."""
    cur = await conn.execute(_SQL, (incident_id, _MAX_EVENTS))
    seen: set[tuple[object, ...]] = set()
    out: list[Reading] = []
    for alarm_id, revision, received_at, event in await cur.fetchall():
        found = _reading(event, received_at)
        if found is None:
            continue
        seq = event["readings"].get("seq")
        key = (found.device_id, seq) if isinstance(seq, int) else (alarm_id, revision)
        if key not in seen:
            seen.add(key)
            out.append(found)
    return sorted(out, key=lambda r: r.at)


def _reading(event: dict[str, Any], received_at: datetime) -> Reading | None:
    value = event["readings"]["lel_pct"]
    if isinstance(value, bool):
        return None
    at = _event_time(event.get("times"), received_at)
    device = event.get("device_id") or event.get("source") or ""
    return Reading(at, str(device), min(max(float(value), 0.0), 100.0))


def _event_time(times: object, received_at: datetime) -> datetime:
    """The event's ``times.event_at``; a missing, malformed or zone-less one gives the center's
    own receive time."""
    raw = times.get("event_at") if isinstance(times, dict) else None
    try:
        at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        at = None
    return at if at is not None and at.tzinfo is not None else received_at


# --- the plot -------------------------------------------------------------------------------

_W: Final = 480.0  # narrow: a phone shows it at about 3/4 size, its labels still legible
_H: Final = 240.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 30.0, 64.0, 40.0, 24.0
_PLOT_W: Final = _W - _LEFT - _RIGHT
_PLOT_H: Final = _H - _TOP - _BOTTOM


def level_plot(
    points: Sequence[Reading],
    *,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    words: PlotWords,
    thresholds: Thresholds = THRESHOLDS,
) -> str:
    """0-100 %LEL against local time from ``start`` to ``end`` (widened to take in every
    point), the band above each threshold shaded, one colour per detector."""
    first = min([start, *(p.at for p in points)])
    last = max([end, *(p.at for p in points)])
    span = max((last - first).total_seconds(), 60.0)

    def x(at: datetime) -> float:
        return _LEFT + _PLOT_W * (at - first).total_seconds() / span

    out = [
        svg_open(_W, _H, words.title),
        svg_text(0, 15, words.title, size=14, font_weight="bold"),
    ]
    out.append(_bands(thresholds, words))
    out.append(_axes(first, span, zone))
    devices = sorted({p.device_id for p in points})
    for k, device in enumerate(devices):
        colour = _COLOURS[k % len(_COLOURS)]
        mine = [p for p in points if p.device_id == device]
        out.append(_series(mine, x, colour, zone, words))
        # the detectors named top right, one a line, in their points' colour
        out.append(svg_text(_W - 4, 15 + 13 * k, device, size=11, anchor="end", fill=colour))
    out.append("</svg>")
    return "".join(out)


def _y(pct: float) -> float:
    return _TOP + _PLOT_H * (1 - pct / 100)


def _bands(thresholds: Thresholds, words: PlotWords) -> str:
    """The band above the low threshold amber, above the high one red, each edge a labelled
    dashed line."""
    right = _LEFT + _PLOT_W
    out = []
    for lower, upper, fill in (
        (thresholds.low, thresholds.high, _LOW_FILL),
        (thresholds.high, 100.0, _HIGH_FILL),
    ):
        out.append(
            f'<rect x="{_LEFT}" y="{_y(upper):.1f}" width="{_PLOT_W}"'
            f' height="{_y(lower) - _y(upper):.1f}" fill="{fill}"/>'
        )
    for pct, label, colour in (
        (thresholds.low, words.low, "#b26a00"),
        (thresholds.high, words.high, "#b00020"),
    ):
        y = _y(pct)
        out.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{colour}"'
            ' stroke-width="1.2" stroke-dasharray="5 3"/>'
        )
        # right of the plot, where no point can hide it: the name, its level under it
        out.append(svg_text(right + 4, y - 2, label, size=10.5, fill=colour))
        out.append(svg_text(right + 4, y + 11, f"{pct:g} %LEL", size=10.5, fill=colour))
    return "".join(out)


def _axes(first: datetime, span: float, zone: ZoneInfo) -> str:
    right, bottom = _LEFT + _PLOT_W, _TOP + _PLOT_H
    out = []
    for pct in (0, 25, 50, 75, 100):
        y = _y(pct)
        out.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"'
            ' stroke-width="0.6"/>'
        )
        out.append(svg_text(_LEFT - 4, y + 3.5, f"{pct}", size=10.5, anchor="end"))
    out.append(svg_text(0, _TOP - 10, "%LEL", size=10.5))
    days = span > 86400
    for k in range(5):
        at = (first + timedelta(seconds=span * k / 4)).astimezone(zone)
        label = at.strftime("%m-%d %H:%M" if days else "%H:%M:%S" if span < 600 else "%H:%M")
        tx = _LEFT + _PLOT_W * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"  # inside the frame
        out.append(svg_text(tx, bottom + 16, label, size=11, anchor=anchor))
    out.append(
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#555"'
        ' stroke-width="0.8"/>'
    )
    return "".join(out)


def _series(
    points: Sequence[Reading],
    x: Callable[[datetime], float],
    colour: str,
    zone: ZoneInfo,
    words: PlotWords,
) -> str:
    """One detector's points, joined in time order by a thin line (a guide for the eye, not
    a measured level between them)."""
    path = " ".join(f"{x(p.at):.1f},{_y(p.lel_pct):.1f}" for p in points)
    out = [
        f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1"'
        ' stroke-opacity="0.45"/>'
    ]
    for p in points:
        hover = words.reading.format(device=p.device_id, pct=f"{p.lel_pct:g}")
        stamp = p.at.astimezone(zone).strftime("%H:%M:%S")
        out.append(
            f'<circle cx="{x(p.at):.1f}" cy="{_y(p.lel_pct):.1f}" r="4" fill="{colour}">'
            f"<title>{escape(stamp)} {escape(hover)}</title></circle>"
        )
    return "".join(out)
