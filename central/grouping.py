"""How alarms become incidents, in pure functions: category, severity ranking, valve summary,
lock keys and titles. The rules are the plan's "Incident rules" (docs/central.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gateway.alarm_types import EMERGENCY_TYPES, SEVERITIES, Category, category

__all__ = [
    "CAUSES",
    "EMERGENCY_TYPES",
    "GATEWAY_OFFLINE",
    "SEVERITIES",
    "Category",
    "category",
    "districts_by_size",
    "group_key",
    "highest",
    "offline_key",
    "offline_title",
    "severity_rank",
    "site_title",
    "valve_summary",
]

GATEWAY_OFFLINE: Final = "gateway_offline"
_RANK: Final = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}
# Resolution causes an officer picks from (gateway/words.py names them in zh-CN and en).
CAUSES: Final = (
    "aged_or_damaged_hose",
    "loose_connection",
    "valve_fault",
    "detector_fault",
    "cooking_or_false_alarm",
    "user_error",
    "other",
)
# An incident's valve state is its least safe alarm's: gas still flowing beats everything.
_VALVE_DANGER: Final = ("open", "mixed", "fault", "moving", "unknown", "closed")


def severity_rank(severity: str) -> int:
    """Higher is more urgent; a word this code does not know ranks below ``info``."""
    return _RANK.get(severity, 0)


def highest(severities: Iterable[str]) -> str:
    """The most urgent of some severities (the first met on a tie); ``info`` for none."""
    return max(severities, key=severity_rank, default="info")


def valve_summary(states: Iterable[str | None]) -> str | None:
    """One word for several alarms' valve states: the least safe one (``open`` wins,
    ``closed`` only when every valve said closed); None when no alarm has a valve."""
    known = {s for s in states if s is not None}
    if not known:
        return None
    # a word this code does not know counts as "unknown" (ties: by name, whatever the order)
    unknown = _VALVE_DANGER.index("unknown")
    return min(known, key=lambda s: (_VALVE_DANGER.index(s) if s in _VALVE_DANGER else unknown, s))


def group_key(gateway_id: str, site_id: str | None, category: str) -> str:
    """The text whose ``hashtext`` serialises one group's incidents across instances. Gateway
    and site ids are MQTT topic levels, so they never contain ``/``."""
    return f"{gateway_id}/{site_id or ''}/{category}"


def offline_key(gateway_id: str) -> str:
    """The lock text of a gateway's offline incident: its row's own key (the gateway, no site,
    ``emergency``), which is what an officer's step on it locks too."""
    return group_key(gateway_id, None, "emergency")


def site_title(
    alarm_title: Mapping[str, Any] | None, alarm_type: str, site_name: str
) -> dict[str, str]:
    """A site incident's title: its most urgent alarm's title at the site's name."""
    words = alarm_title or {}
    zh = str(words.get("zh") or alarm_type)
    en = str(words.get("en") or alarm_type)
    if not site_name:
        return {"zh": zh, "en": en}
    return {"zh": f"{site_name}：{zh}", "en": f"{en} at {site_name}"}  # noqa: RUF001


def districts_by_size(districts: Sequence[str]) -> list[str]:
    """The districts of some sites (one entry per site), most sites first, then by name."""
    counts = Counter(d for d in districts if d)
    return sorted(counts, key=lambda d: (-counts[d], d))


def offline_title(gateway_id: str, sites: int, districts: Sequence[str]) -> dict[str, str]:
    """A gateway offline incident's title in plain words: how many sites, which district(s)."""
    named = districts_by_size(districts)
    if sites == 0:
        return {
            "zh": f"网关离线：{gateway_id}（未登记场所）",  # noqa: RUF001
            "en": f"Gateway {gateway_id} offline (no sites known)",
        }
    noun = "site" if sites == 1 else "sites"
    if not named:
        return {
            "zh": f"网关离线：{sites} 个场所无人监测（区域未知）",  # noqa: RUF001
            "en": f"{sites} {noun} unmonitored (gateway {gateway_id} offline, district unknown)",
        }
    where = ("district " if len(named) == 1 else "districts ") + ", ".join(named)
    return {
        "zh": f"网关离线：{'、'.join(named)} 区 {sites} 个场所无人监测",  # noqa: RUF001
        "en": f"{sites} {noun} unmonitored in {where}",
    }
