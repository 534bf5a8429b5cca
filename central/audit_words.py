# ruff: noqa: RUF001 - full-width Chinese punctuation on purpose
"""The audit report's own words in Simplified Chinese and English: plain words a regulator
hands on. Codes (site types, categories, states) are not here but in :mod:`gateway.words`, so
one word means one thing on every page."""

from __future__ import annotations

from typing import Final

__all__ = ["WORDS"]

WORDS: Final[dict[str, tuple[str, str]]] = {
    "title": ("燃气安全监测覆盖与处置审计报告", "Gas safety coverage and response audit"),
    "made_at": ("生成时间", "Made at"),
    "scope": ("范围", "Scope"),
    "every_district": ("全部区", "every district"),
    "period": ("事件统计期间", "Incidents counted"),
    "coverage_at": ("覆盖情况", "Coverage"),
    "as_made": ("生成时的状态", "as it stood at the time made"),
    "prepared_by": ("编制", "Prepared by"),
    "reviewed_by": ("审核", "Reviewed by"),
    "date": ("日期", "Date"),
    "all_incidents": ("截至生成时间的全部事件", "every incident up to the time made"),
    "from_day": ("自 {day} 起至生成时间", "from {day} up to the time made"),
    "key_figures": ("要点", "Key figures"),
    "registered": ("登记场所", "Registered sites"),
    "protected": ("受保护", "Protected"),
    "unprotected": ("未受保护", "Not protected"),
    "unknown": ("状态不明", "Unknown"),
    "unknown_no_recent_report": ("无近期上报", "no recent report"),
    "unknown_no_verdict": ("未报保护状态", "no verdict given"),
    "share": ("保护率", "Protected share"),
    "parts_past_life": ("超过使用年限的部件", "Parts past service life"),
    "cylinders_overdue": ("逾期未检的钢瓶", "Cylinders overdue for inspection"),
    "at_sites": ("涉及 {n} 个场所", "at {n} sites"),
    "at_site": ("涉及 {n} 个场所", "at {n} site"),
    "of_all": ("离线或失联 / 全部", "offline or silent / all"),
    "gateways": ("网关", "Gateways"),
    "gateways_unreachable": ("离线或失联的网关", "Gateways offline or silent"),
    "emergencies": ("紧急事件", "Emergencies"),
    "closed_loop_rate": ("闭环率", "Closed-loop rate"),
    "closed_loop_def": (
        "已处置并填写原因的事件 ÷ 全部事件",
        "incidents resolved with a cause ÷ incidents",
    ),
    "median_on_site": ("报警到人员到场（中位数）", "Alarm to crew on site (median)"),
    "coverage_by_district": ("各区覆盖情况", "Coverage by district"),
    "coverage_by_type": ("按场所类型", "Coverage by site type"),
    "coverage_by_district_type": ("按区和场所类型", "Coverage by district and site type"),
    "district": ("区", "District"),
    "site_type": ("场所类型", "Site type"),
    "all": ("合计", "All"),
    "no_district": ("（未填写区）", "(no district given)"),
    "no_sites": ("没有登记的场所", "No registered site"),
    "response": ("响应时间与闭环率", "Response times and closed-loop rate"),
    "response_by_month": ("按月（全部区）", "By month (every district in scope)"),
    "response_by_district": ("按区（整个期间）", "By district (whole period)"),
    "month": ("月份", "Month"),
    "category": ("类别", "Category"),
    "incidents": ("事件数", "Incidents"),
    "closed_loop": ("闭环", "Closed loop"),
    "acknowledged": ("报警→接警", "Alarm → acknowledged"),
    "dispatched": ("报警→派人", "Alarm → dispatched"),
    "on_site": ("报警→到场", "Alarm → on site"),
    "resolved": ("报警→处置完毕", "Alarm → resolved"),
    "p50": ("中位数", "median"),
    "p90": ("90% 在此之内", "90% within"),
    "unknown_split": ("无近期上报 / 未报状态", "no recent report / no verdict"),
    "h_registered": ("登记", "Registered"),
    "h_protected": ("受保护", "Protected"),
    "h_unprotected": ("未受保护", "Not protected"),
    "h_unknown": ("状态不明", "Unknown"),
    "h_gateways": ("离线或失联网关", "Gateways offline or silent"),
    "h_parts": ("超期部件", "Parts past service life"),
    "h_cylinders": ("逾期钢瓶", "Cylinders overdue"),
    "note_small": (
        "表中小字 “n / N”：达到这一步（或符合这一项）的数量 / 总数。尚未达到某一步的事件不计入"
        "该步的时间，n 小于 N 时请一并看待。“–” 表示没有可统计的事件。",
        'Small figures "n / N": how many reached that step (or count that way) / how many in '
        "all. An incident that has not reached a step is not in that step's times: read them "
        'together with n / N. "–": nothing to measure.',
    ),
    "no_incidents": ("此期间没有事件", "No incidents in this period"),
    "chart_coverage": (
        "各区保护率（斜线：状态不明，不计为受保护）",
        "Protected share by district (hatched: unknown, never counted as protected)",
    ),
    "chart_closed_loop": ("闭环率（按月）", "Closed-loop rate by month"),
    "chart_response": ("紧急事件{step}（按月）", "Emergencies: {step}, by month"),
    "share_label": ("保护率 {p} · 不明 {u}", "protected {p} · unknown {u}"),
    "causes": ("处置原因（已闭环的事件）", "Causes found (closed-loop incidents)"),
    "cause": ("原因", "Cause"),
    "cause_share": ("占该类别闭环事件", "Share of the category's closed loop"),
    "no_causes": ("此期间没有已闭环的事件", "No closed-loop incident in this period"),
    "notes": ("说明", "How this report counts"),
    "note_protected": (
        "“受保护”由网关依据场所登记信息判定：套件齐全、所有电子设备 24 小时内有上报、"
        "没有部件超过使用年限。",
        "'Protected' is the gateway's verdict from its site register: the kit is complete, every "
        "electronic device reported within 24 hours and no part is past its service life.",
    ),
    "note_unknown": (
        "“状态不明”从不计为受保护，分两种。“无近期上报”：网关离线，或超过 {silent} 没有任何消息"
        "（失联），或该场所的状态超过 {silent} 未更新（网关已不再上报该场所）。“未报状态”："
        "网关的上报中没有保护状态（较早版本的网关）。",
        "Unknown is never counted as protected; there are two kinds. No recent report: the "
        "gateway is offline, or nothing was heard from it for {silent} (silent), or the site's "
        "own summary was not renewed for {silent} (its gateway no longer reports it). No verdict "
        "given: the gateway's summary says nothing about protection (an older gateway).",
    ),
    "note_times": (
        "响应时间从监测中心收到报警起计，到值班人员记录接警、派人、到场、处置完毕为止，"
        "均按监测中心时钟；"
        "中位数即一半事件在此时间之内，“90% 在此之内”即九成事件在此时间之内。"
        "只统计场所事件；网关离线事件计入覆盖情况。月份按{tz}划分。",
        "Response times run from the alarm reaching the monitoring center to the duty officer "
        "recording acknowledged, dispatched, on site and resolved, all on the center's clock; half "
        "the incidents took at most the median, nine in ten at most the '90% within' time. Only "
        "site incidents are counted; a gateway going offline counts under coverage. Months follow "
        "{tz}.",
    ),
    "source": ("数据来源：gasgate 监测中心", "Source: gasgate monitoring center"),
}
