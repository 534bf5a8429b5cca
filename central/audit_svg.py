"""The audit report's charts as inline SVG, drawn on the server: no script, no CDN; they print
as sharply as the text (vector) and in the page's own font. Every label arrives translated and is
escaped here; the charts scale to the page's width (``viewBox``, no fixed size)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["Bar", "Series", "grouped_bars", "share_bars", "svg_open", "svg_text"]

# Colours that stay apart in greyscale print too: dark green, orange, mid grey (hatched).
PROTECTED: Final = "#1b7a3d"
UNPROTECTED: Final = "#e07b00"
UNKNOWN: Final = "#9a9a9a"
_LABELLED_BARS: Final = 16  # more bars than this: no room for a value above each
_HATCH: Final = (
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
    ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#d9d9d9"/>'
    f'<line x1="0" y1="0" x2="0" y2="6" stroke="{UNKNOWN}" stroke-width="2.5"/></pattern></defs>'
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of :func:`share_bars`: counts of protected, unprotected and unknown sites."""

    label: str
    protected: int
    unprotected: int
    unknown: int

    @property
    def registered(self) -> int:
        return self.protected + self.unprotected + self.unknown


@dataclass(frozen=True, slots=True)
class Series:
    """One series of :func:`grouped_bars`: a value (or None: nothing to show) per category."""

    name: str
    values: Sequence[float | None]
    colour: str


def svg_text(
    x: float, y: float, text: str, *, size: float = 11, anchor: str = "start", **kw: str
) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(text)}</text>"
    )


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> str:
    out = []
    for name, fill in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" fill="{fill}"/>')
        out.append(svg_text(x + 16, y + 1, name))
        x += 28 + 11 * _width(name)
    return "".join(out)


def _width(text: str) -> float:
    """Rough width in ems at 11 px: a CJK character is a full em, a Latin one about half."""
    return sum(1.0 if ord(c) > 0x2E80 else 0.55 for c in text)


def share_bars(
    bars: Sequence[Bar],
    *,
    legend: tuple[str, str, str],
    share_label: Callable[[Bar], str],
    title: str,
) -> str:
    """Horizontal bars, one per row, each 100 % of its registered sites: protected, then not
    protected, then unknown — hatched grey and apart at the bar's end, so it can never read as
    protected. ``share_label`` writes the words right of each bar."""
    label_w = max((11 * _width(b.label) for b in bars), default=40) + 12
    bar_w, right, row_h = 380.0, 190.0, 26
    top = 46
    height = top + row_h * max(len(bars), 1) + 10
    width = label_w + bar_w + right
    out = [
        svg_open(width, height, title),
        _HATCH,
        svg_text(0, 14, title, size=13, font_weight="bold"),
    ]
    out.append(
        _legend(0, 34, list(zip(legend, (PROTECTED, UNPROTECTED, "url(#hatch)"), strict=True)))
    )
    for i, bar in enumerate(bars):
        y = top + i * row_h
        out.append(svg_text(label_w - 8, y + 15, bar.label, anchor="end"))
        out.append(
            f'<rect x="{label_w:.1f}" y="{y + 3}" width="{bar_w}" height="16" fill="none"'
            ' stroke="#bbb" stroke-width="0.6"/>'
        )
        x = label_w
        parts = (
            (bar.protected, PROTECTED),
            (bar.unprotected, UNPROTECTED),
            (bar.unknown, "url(#hatch)"),
        )
        for count, fill in parts:
            if bar.registered and count:
                w = bar_w * count / bar.registered
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="16" fill="{fill}"/>'
                )
                x += w
        out.append(svg_text(label_w + bar_w + 8, y + 15, share_label(bar), size=10.5))
    out.append("</svg>")
    return "".join(out)


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    axis: Callable[[float], str],
    top: float | None = None,
    empty: str,
    label: Callable[[float], str] | None = None,
) -> str:
    """Vertical bars, one group per category (a month; a second line after "\\n", such as its
    year, goes under it), one bar per series, a y axis of four
    steps labelled by ``axis``. ``top`` fixes the axis' end (100 % for a rate); otherwise a round
    value above the highest bar. ``empty`` is said when no series has a value. ``label`` writes
    each bar's value above it (so a 0 % bar reads apart from a month with nothing), when the
    bars are few enough to leave room."""
    width, height = 340.0, 210.0
    left, bottom, head = 58.0, 36.0, 44.0
    plot_w, plot_h = width - left - 8, height - head - bottom
    values = [v for s in series for v in s.values if v is not None]
    out = [svg_open(width, height, title), svg_text(0, 14, title, size=12.5, font_weight="bold")]
    out.append(_legend(0, 32, [(s.name, s.colour) for s in series]))
    high = top if top is not None else _round_up(max(values, default=0.0))
    for k in range(5):
        y = head + plot_h - plot_h * k / 4
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" stroke="#ddd"'
            ' stroke-width="0.6"/>'
        )
        out.append(svg_text(left - 4, y + 3.5, axis(high * k / 4), size=9.5, anchor="end"))
    if not values:
        out.append(
            svg_text(left + plot_w / 2, head + plot_h / 2, empty, anchor="middle", fill="#555")
        )
    group_w = plot_w / max(len(categories), 1)
    bar_w = min(22.0, group_w * 0.8 / max(len(series), 1))
    for i, name in enumerate(categories):
        gx = left + group_w * i + (group_w - bar_w * len(series)) / 2
        for j, s in enumerate(series):
            value = s.values[i]
            if value is None or high <= 0:
                continue
            h = max(plot_h * min(value, high) / high, 0.8)
            x = gx + j * bar_w
            w = bar_w - min(1.0, bar_w * 0.15)  # a gap between bars, but never all gap
            out.append(
                f'<rect x="{x:.1f}" y="{head + plot_h - h:.1f}"'
                f' width="{w:.1f}" height="{h:.1f}" fill="{s.colour}"/>'
            )
            if label is not None and len(categories) * len(series) <= _LABELLED_BARS:
                out.append(
                    svg_text(
                        x + bar_w / 2, head + plot_h - h - 3, label(value), size=8, anchor="middle"
                    )
                )
        out.append(
            "".join(
                svg_text(
                    left + group_w * (i + 0.5),
                    height - bottom + 14 + 10 * k,
                    line,
                    size=9.5 - 2 * k,  # the year under the month: smaller, so 13 months fit
                    anchor="middle",
                )
                for k, line in enumerate(name.split("\n")[:2])
            )
        )
    out.append(
        f'<line x1="{left}" y1="{head + plot_h}" x2="{width - 8}" y2="{head + plot_h}"'
        ' stroke="#555" stroke-width="0.8"/>'
    )
    out.append("</svg>")
    return "".join(out)


def _round_up(value: float) -> float:
    """A round axis end at or above ``value`` whose quarters are round too: 1, 2, 4, 6, 8 or 10
    times a power of ten."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 4, 6, 8, 10) if m * power >= value)


def svg_open(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" role="img"'
        f' aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )
