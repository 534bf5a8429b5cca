"""The coverage audit: is every registered site protected, and how were its alarms answered?

Per site: the kit complete or what is missing; electronic devices heard in the last 24 h;
parts past their service life; cylinders overdue for inspection; alarms raised in the period
with the time to acknowledge and to resolve them. Totals by district and by site type give
sites protected ÷ sites registered.

A site counts as *protected* when its kit is complete, every electronic device in it reported
in the 24 h before the audit, and no part is past its service life. Cylinder inspections are
shown but do not change the verdict (the cylinder belongs to the gas company, not the kit).

Read-only: it reads the registry, the alarms table and the devices' last-heard times
(:func:`gateway.api.devices.last_seen`) from the store. Output as JSON, CSV or printable HTML.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any, Final, Literal, Protocol

from gateway.api.devices import last_seen
from gateway.model import Alarm
from gateway.registry.model import Component, Cylinder, KitStatus, ServiceFinding, Site
from gateway.store import Store

__all__ = [
    "ONLINE_WINDOW",
    "AuditFormat",
    "AuditRegistry",
    "CoverageAudit",
    "Findings",
    "SiteAudit",
    "SiteCondition",
    "Totals",
    "parse_since",
    "run_audit",
]

ONLINE_WINDOW: Final = timedelta(hours=24)
AuditFormat = Literal["json", "csv", "html"]


@dataclass(frozen=True, slots=True)
class SiteAudit:
    site_id: str
    name: str
    district: str
    site_type: str
    kit: str
    kit_complete: bool
    missing: tuple[str, ...]
    devices: int
    devices_online_24h: int
    offline_devices: tuple[str, ...]
    past_service_life: tuple[str, ...]  # "component (device or model), expired on"
    cylinders_overdue: tuple[str, ...]
    alarms: int
    acknowledged: int
    resolved: int
    median_ack_s: float | None
    median_resolve_s: float | None

    @property
    def protected(self) -> bool:
        return _protected(
            self.kit_complete, self.devices, self.devices_online_24h, len(self.past_service_life)
        )


def _protected(kit_complete: bool, devices: int, online_24h: int, past_service_life: int) -> bool:
    """The verdict (module docstring): the one place it is decided."""
    return kit_complete and online_24h == devices and not past_service_life


class AuditRegistry(Protocol):
    """The registry's read side the audit needs (:class:`gateway.registry.Registry`)."""

    def sites(self) -> Sequence[Site]: ...

    def components(self, site_id: str) -> Sequence[Component]: ...

    def kit_status(self, site_id: str) -> KitStatus | None: ...

    def past_service_life(self, on: date) -> Sequence[ServiceFinding]: ...

    def inspection_overdue(self, on: date) -> Sequence[Cylinder]: ...


@dataclass(frozen=True, slots=True)
class SiteCondition:
    """One site's state at the audit time, alarms apart: what the verdict is made of."""

    kit_complete: bool
    missing: tuple[str, ...]
    devices: tuple[str, ...]
    offline: tuple[str, ...]  # not heard within ONLINE_WINDOW
    past_service_life: tuple[ServiceFinding, ...]
    cylinders_overdue: tuple[Cylinder, ...]

    @property
    def protected(self) -> bool:
        online = len(self.devices) - len(self.offline)
        return _protected(self.kit_complete, len(self.devices), online, len(self.past_service_life))


class Findings:
    """What the audit knows of every site at ``at``, read once (devices' last-heard times,
    parts past service life, cylinders overdue); :meth:`site` is then one site's condition.
    The gas company's site summaries use it too, so the center and the edge agree."""

    def __init__(self, registry: AuditRegistry, store: Store, at: datetime) -> None:
        self._registry = registry
        self.at = at
        self._heard = {d: seen[0] for d, seen in last_seen(store).items()}
        today = at.astimezone(UTC).date()
        expired: dict[str, list[ServiceFinding]] = defaultdict(list)
        for f in registry.past_service_life(today):
            expired[f.site_id].append(f)
        overdue: dict[str, list[Cylinder]] = defaultdict(list)
        for c in registry.inspection_overdue(today):
            overdue[c.site_id].append(c)
        self._expired: Mapping[str, list[ServiceFinding]] = expired
        self._overdue: Mapping[str, list[Cylinder]] = overdue

    def site(self, site_id: str) -> SiteCondition:
        devices = tuple(c.device_id for c in self._registry.components(site_id) if c.device_id)
        heard, at = self._heard, self.at
        offline = tuple(d for d in devices if d not in heard or at - heard[d] > ONLINE_WINDOW)
        status = self._registry.kit_status(site_id)
        return SiteCondition(
            kit_complete=status is not None and status.complete,
            missing=tuple(str(m) for m in status.missing) if status else ("unknown kit",),
            devices=devices,
            offline=offline,
            past_service_life=tuple(self._expired.get(site_id, ())),
            cylinders_overdue=tuple(self._overdue.get(site_id, ())),
        )


@dataclass(frozen=True, slots=True)
class Totals:
    registered: int = 0
    protected: int = 0

    @property
    def ratio(self) -> float | None:
        return self.protected / self.registered if self.registered else None


@dataclass(frozen=True, slots=True)
class CoverageAudit:
    at: datetime
    since: datetime
    district: str | None
    sites: tuple[SiteAudit, ...]
    by_district: dict[str, Totals] = field(default_factory=dict)
    by_site_type: dict[str, Totals] = field(default_factory=dict)

    @property
    def total(self) -> Totals:
        return Totals(len(self.sites), sum(s.protected for s in self.sites))

    def render(self, fmt: AuditFormat) -> str:
        if fmt == "csv":
            return self.to_csv()
        if fmt == "html":
            return self.to_html()
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_dict(self) -> dict[str, Any]:
        def totals(t: Totals) -> dict[str, Any]:
            return {"registered": t.registered, "protected": t.protected, "ratio": t.ratio}

        return {
            "at": self.at.isoformat(),
            "since": self.since.isoformat(),
            "district": self.district,
            "total": totals(self.total),
            "by_district": {k: totals(v) for k, v in self.by_district.items()},
            "by_site_type": {k: totals(v) for k, v in self.by_site_type.items()},
            "sites": [asdict(s) | {"protected": s.protected} for s in self.sites],
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*_COLUMNS, "protected"])
        for s in self.sites:
            row = [_csv_text(_cell(getattr(s, c))) for c in _COLUMNS]
            writer.writerow([*row, _cell(s.protected)])
        return out.getvalue()

    def to_html(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in (*_COLUMNS, "protected"))
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{escape(_cell(getattr(s, c)))}</td>" for c in _COLUMNS)
            + f"<td>{'yes' if s.protected else '<b>NO</b>'}</td></tr>"
            for s in self.sites
        )
        summary = "".join(
            f"<tr><td>{escape(kind)}</td><td>{escape(key)}</td><td>{t.protected}</td>"
            f"<td>{t.registered}</td><td>{_pct(t.ratio)}</td></tr>"
            for kind, table in (("district", self.by_district), ("site type", self.by_site_type))
            for key, t in table.items()
        )
        total = self.total
        return _HTML.format(
            at=escape(self.at.isoformat(timespec="seconds")),
            since=escape(self.since.isoformat(timespec="seconds")),
            district=escape(self.district or "all"),
            protected=total.protected,
            registered=total.registered,
            pct=_pct(total.ratio),
            summary=summary,
            head=head,
            rows=rows,
        )


_COLUMNS: Final = tuple(name for name in SiteAudit.__dataclass_fields__ if name != "protected")
_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gasgate coverage audit {at}</title>
<style>
body {{ font: 11pt sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #888; padding: 2px 6px; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
@media print {{ body {{ margin: 0; font-size: 8pt; }} tr {{ break-inside: avoid; }} }}
</style></head><body>
<h1>Coverage audit</h1>
<p>At {at}; alarms since {since}; district: {district}.</p>
<p><b>{protected} of {registered} sites protected ({pct}).</b></p>
<table><tr><th>by</th><th></th><th>protected</th><th>registered</th><th>share</th></tr>
{summary}</table>
<table><tr>{head}</tr>
{rows}</table>
</body></html>
"""


def _csv_text(text: str) -> str:
    """A cell a spreadsheet shows as text: registry names are typed by people, and one starting
    like a formula (``=HYPERLINK(...)``) would run when a regulator opens the file (OWASP)."""
    return f"'{text}" if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def _cell(value: object) -> str:
    if isinstance(value, tuple):
        return "; ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}"
    return "" if value is None else str(value)


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.0%}"


def run_audit(
    registry: AuditRegistry,
    store: Store,
    at: datetime,
    since: datetime | None = None,
    district: str | None = None,
) -> CoverageAudit:
    """The audit at ``at`` (UTC) of every site (or one district's), alarms since ``since``
    (default: 30 days before ``at``)."""
    since = since or at - timedelta(days=30)
    findings = Findings(registry, store, at)
    alarms = _alarms_by_site(store, since, at)
    sites = []
    for site in registry.sites():
        if district is not None and site.district != district:
            continue
        found = findings.site(site.site_id)
        site_alarms = alarms.get(site.site_id, [])
        sites.append(
            SiteAudit(
                site_id=site.site_id,
                name=site.name,
                district=site.district,
                site_type=site.site_type.value,
                kit=site.kit,
                kit_complete=found.kit_complete,
                missing=found.missing,
                devices=len(found.devices),
                devices_online_24h=len(found.devices) - len(found.offline),
                offline_devices=found.offline,
                past_service_life=tuple(
                    f"{f.component} ({f.device_id or f.model}), {f.expired_on}"
                    for f in found.past_service_life
                ),
                cylinders_overdue=tuple(
                    f"{c.cylinder_id} (due {c.next_inspection_due})"
                    for c in found.cylinders_overdue
                ),
                alarms=len(site_alarms),
                acknowledged=sum(a.acked_at is not None for a in site_alarms),
                resolved=sum(a.closed_at is not None for a in site_alarms),
                median_ack_s=_median([(a.raised_at, a.acked_at) for a in site_alarms]),
                median_resolve_s=_median([(a.raised_at, a.closed_at) for a in site_alarms]),
            )
        )
    return CoverageAudit(
        at, since, district, tuple(sites), _totals(sites, "district"), _totals(sites, "site_type")
    )


def _alarms_by_site(store: Store, since: datetime, until: datetime) -> dict[str, list[Alarm]]:
    by_site: dict[str, list[Alarm]] = defaultdict(list)
    if store.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alarms'").fetchone() is None:
        return by_site  # the gateway never ran on this store: no alarms yet
    for row in store.db.execute("SELECT snapshot FROM alarms"):
        alarm = Alarm.from_json(row[0])
        if alarm.site_id is not None and since <= alarm.raised_at < until:
            by_site[alarm.site_id].append(alarm)
    return by_site


def _median(spans: list[tuple[datetime, datetime | None]]) -> float | None:
    """Median seconds from raise to the end of each span that ended (None: none did)."""
    seconds = [(end - start).total_seconds() for start, end in spans if end is not None]
    return statistics.median(seconds) if seconds else None


def _totals(sites: list[SiteAudit], key: str) -> dict[str, Totals]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in sites:
        entry = counts[getattr(s, key)]
        entry[0] += 1
        entry[1] += s.protected
    return {k: Totals(v[0], v[1]) for k, v in sorted(counts.items())}


def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (UTC if it names no zone)."""
    value = (
        datetime.fromisoformat(text)
        if "T" in text
        else datetime.combine(date.fromisoformat(text), datetime.min.time())
    )
    return value if value.tzinfo else value.replace(tzinfo=UTC)
