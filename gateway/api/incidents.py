"""The console's queue as incidents: one row per site episode, the way the monitoring center
groups them (docs/central.md "Incident rules"): a site's open alarms of one category are one
incident, with its alarms listed inside. Emergencies (gas may be escaping, or nobody would
know if it were) apart from maintenance (a coverage gap handled by a work order)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from gateway.alarm_types import EMERGENCY_TYPES, SEVERITIES, Category, category
from gateway.api.views import AlarmView, CommandLine, ContactView, NoticeLine, ValveLine

__all__ = [
    "EMERGENCY_TYPES",
    "Category",
    "Filters",
    "Incident",
    "category",
    "group",
    "select",
]

# An incident's state is its least handled alarm's: an unacknowledged one beats the rest.
_STATE_ORDER: Final = ("unack_active", "unack_cleared", "ack_active", "normal")
# The valve's state that matters most first: gas still flowing beats everything.
_VALVE_DANGER: Final = ("open", "fault", "moving", None, "closed")


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(slots=True)
class Incident:
    """A site's open alarms of one category (or one alarm without a site)."""

    key: str
    category: Category
    alarms: list[AlarmView] = field(default_factory=list)

    @property
    def first(self) -> AlarmView:
        return self.alarms[0]

    @property
    def severity(self) -> str:
        return min((a.severity for a in self.alarms), key=_rank)

    @property
    def opened_at(self) -> datetime:
        return min(a.raised_at for a in self.alarms)

    @property
    def state(self) -> str:
        return min((a.state for a in self.alarms), key=_STATE_ORDER.index)

    @property
    def unacknowledged(self) -> list[AlarmView]:
        return [a for a in self.alarms if a.state in ("unack_active", "unack_cleared")]

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys(a.alarm_type for a in self.alarms))

    @property
    def contacts(self) -> list[ContactView]:
        return self.first.contacts

    @property
    def valves(self) -> list[ValveLine]:
        """Each valve once, the alarm line saying the most (commands not answered)."""
        lines: dict[str, ValveLine] = {}
        for a in self.alarms:
            for v in a.valve_lines:
                if self.category == "maintenance" and v.valve_id != a.device_id:
                    continue  # a detector's tamper is not about its valves: no red "OPEN"
                old = lines.get(v.valve_id)
                if old is None or v.unanswered > old.unanswered:
                    lines[v.valve_id] = v
        return sorted(
            lines.values(),
            key=lambda v: _VALVE_DANGER.index(v.state) if v.state in _VALVE_DANGER else 3,
        )

    @property
    def commands(self) -> list[CommandLine]:
        """Each valve's commands once: alarms of one source share their close commands."""
        lines: dict[str, CommandLine] = {}
        for a in self.alarms:
            for c in a.commands:
                if c.valve_id not in lines or c.sent > lines[c.valve_id].sent:
                    lines[c.valve_id] = c
        return list(lines.values())

    @property
    def notices(self) -> list[NoticeLine]:
        lines: dict[tuple[str, str, str], NoticeLine] = {}
        for a in self.alarms:
            for n in a.notices:
                key = (n.kind, n.channel, n.recipient)
                if key not in lines or n.at > lines[key].at:
                    lines[key] = n
        return sorted(lines.values(), key=lambda n: n.at)

    @property
    def lel_trend(self) -> list[float]:
        return next((a.lel_trend for a in self.alarms if a.lel_trend), [])

    def devices(self) -> set[str]:
        ids = {a.device_id for a in self.alarms if a.device_id} | {a.source for a in self.alarms}
        return ids | {v.valve_id for v in self.valves}


def group(alarms: Iterable[AlarmView]) -> list[Incident]:
    """Incidents, most severe first, then the oldest; alarms inside likewise."""
    found: dict[str, Incident] = {}
    for a in alarms:
        kind = category(a.alarm_type, a.severity)
        key = f"{a.site_id or a.source}/{kind}"
        found.setdefault(key, Incident(key, kind)).alarms.append(a)
    for incident in found.values():
        incident.alarms.sort(key=lambda a: (_rank(a.severity), a.raised_at))
    return sorted(found.values(), key=lambda i: (_rank(i.severity), i.opened_at))


@dataclass(frozen=True, slots=True)
class Filters:
    """What the officer narrowed the queue to (empty: everything)."""

    tab: Category = "emergency"
    district: str = ""
    severity: str = ""
    alarm_type: str = ""
    state: str = ""
    search: str = ""

    def keeps(self, incident: Incident) -> bool:
        first = incident.first
        if self.district and first.district != self.district:
            return False
        if self.severity and incident.severity != self.severity:
            return False
        if self.alarm_type and self.alarm_type not in incident.types:
            return False
        if self.state and self.state not in {a.state for a in incident.alarms}:
            return False
        return not self.search or self._found(incident)

    def _found(self, incident: Incident) -> bool:
        first = incident.first
        words = [first.site_name or "", first.address or "", first.site_id or ""]
        words += [c.phone or "" for c in incident.contacts] + [c.name for c in incident.contacts]
        words += sorted(incident.devices())
        needle = self.search.strip().casefold()
        return any(needle in w.casefold() for w in words)


def select(incidents: Sequence[Incident], filters: Filters) -> list[Incident]:
    """The incidents of the filters' tab that pass them."""
    return [i for i in incidents if i.category == filters.tab and filters.keeps(i)]
