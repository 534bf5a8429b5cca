"""The control room's own words in Simplified Chinese (the default) and English. Words the
gateway's console already has come from :mod:`gateway.api.i18n`, codes (alarm types, states,
causes, valve states, ...) from :mod:`gateway.words`: one word means one thing everywhere."""

from __future__ import annotations

from typing import Final

from gateway.api.i18n import Lang, text

__all__ = ["pick_lang", "t"]

_WORDS: Final[dict[str, tuple[str, str]]] = {
    "center_title": ("燃气监控中心", "Gas monitoring center"),
    "queue": ("事件队列", "Incidents"),
    "no_incidents": ("没有未结案的事件", "No open incidents"),
    "open_only": ("未结案", "Open"),
    "all_states": ("全部（含已结案）", "All (closed too)"),  # noqa: RUF001 - Chinese punctuation
    "search": ("搜索：地点、地址、电话、设备", "Search: site, address, phone, device"),  # noqa: RUF001
    "district": ("区域", "District"),
    "any": ("全部", "any"),
    "filter": ("筛选", "Filter"),
    "valve": ("阀门", "Valve"),
    "no_valve": ("无联动阀门", "no linked valve"),
    "opened": ("发生", "Opened"),
    "incident": ("事件", "Incident"),
    "what": ("内容", "What"),
    "timeline": ("时间线", "Timeline"),
    "commands": ("发给网关的指令", "Commands to the gateway"),
    "cmd_pending": ("待发送（网关未连上）", "pending (gateway not reached yet)"),  # noqa: RUF001
    "cmd_sent": ("已发出，等待网关答复", "sent, waiting for the gateway"),  # noqa: RUF001
    "cmd_accepted": ("网关已执行", "done by the gateway"),
    # A command's steps on the timeline: queued at the center, sent (it left the center), answered.
    "cmd_queued": ("已排队", "queued"),
    "cmd_out": ("已发出", "sent"),
    "cmd_refused": ("网关拒绝", "refused by the gateway"),
    "crew": ("处置人员", "Crew or technician"),
    "eta_minutes": ("预计多少分钟到达", "Arrival in (minutes)"),
    "eta": ("预计到达", "ETA"),
    "cause": ("原因", "Cause"),
    "by": ("操作人", "By"),
    "gateway": ("网关", "Gateway"),
    "sites_unmonitored": ("失去监测的地点", "Sites no longer monitored"),
    "back": ("返回事件队列", "Back to the incidents"),
    "times_in": ("时间：{zone}", "Times: {zone}"),  # noqa: RUF001
    "active": ("报警中", "active"),
    "cleared": ("已恢复", "cleared"),
    "not_done": ("未执行", "Not done"),
    "not_found": ("没有这个事件", "No such incident"),
    "alarms_under": ("包含的报警", "Alarms in this incident"),
    "device": ("设备", "Device"),
    "progress": ("处置进度", "Progress"),
    "closed_at": ("结案", "Closed"),
    "kind_alarm_event": ("报警事件", "alarm event"),
    "kind_transition": ("处置", "officer step"),
    "kind_command": ("指令", "command"),
    "kind_reply": ("网关答复", "gateway answer"),
    "kind_note": ("备注", "note"),
    "kind_gateway": ("网关", "gateway"),
    "kind_site_answer": ("现场答复", "answer from the site"),
    "accepted": ("已执行", "done"),
    "refused": ("拒绝", "refused"),
    "role_duty_officer": ("值班员", "duty officer"),
    "role_supervisor": ("值班主管", "supervisor"),
    "role_regulator": ("监管人员", "regulator"),
    "role_installer": ("安装人员", "installer"),
    "live_down": ("实时更新已断开，正在重连", "live updates lost, reconnecting"),  # noqa: RUF001
    "choose": ("请选择", "choose"),
    "enable_sound": (
        "点击此处开启报警声音和桌面通知",
        "Click here to turn on the alarm sound and notifications",
    ),
    "new_emergency": ("新的紧急事件", "New emergency"),
    "need_crew": ("请填写处置人员", "Name the crew or technician sent"),
    "need_cause": ("请选择原因", "Choose a cause"),
    "gas_level": ("燃气浓度", "Gas level"),
    "gas_low_line": ("低报", "low alarm"),
    "gas_high_line": ("高报", "high alarm"),
    "gas_point": ("探测器 {device}：{pct} %LEL", "detector {device}: {pct} %LEL"),  # noqa: RUF001
    "gas_points_note": (
        "图中每个点是网关随报警事件发来的一次读数，不是连续记录：两点之间的浓度中心没有收到，"  # noqa: RUF001
        "连线只为便于看清先后。虚线是规则的默认报警值（低报 {low}、高报 {high} %LEL），"  # noqa: RUF001
        "某个地点的规则可能另有设置。时间：{zone}。",  # noqa: RUF001
        "Each point is one reading the gateway sent with an alarm event, not a continuous "
        "record: the center received no level between the points, and the line only joins them "
        "in time order. The dashed lines are the rules' default alarm levels (low {low}, high "
        "{high} %LEL); a site's own rules may set others. Times: {zone}.",
    ),
    "gas_none": (
        "中心没有收到本事件的燃气浓度读数。",
        "The center has received no gas reading for this incident.",
    ),
    "record": ("事件记录", "Incident record"),
    "record_link": ("打印事件记录", "Printable incident record"),
    "print": ("打印", "Print"),
    "printed_at": ("打印时间", "Printed"),
    "address": ("地址", "Address"),
    "valve_now": ("阀门（当前）", "Valve (now)"),  # noqa: RUF001
    "incident_no": ("事件编号", "Incident number"),
    "map": ("地图", "Map"),
    "map_state_emergency": ("紧急事件", "Emergency"),
    "map_state_offline": ("网关离线，状态不明", "Gateway offline: state unknown"),  # noqa: RUF001
    "map_state_maintenance": ("维护事项", "Maintenance"),
    "map_state_none": ("无未结案事件", "No open incident"),
    "map_no_coords": (
        "{n} 个地点在登记信息中没有坐标，不在地图上。",  # noqa: RUF001
        "Sites with no coordinates in the registry, so not on the map: {n}.",
    ),
    "map_no_sites": ("没有带坐标的地点", "No site with coordinates"),
    "map_blank": (
        "未配置底图：只显示地点和区域名称。",  # noqa: RUF001
        "No base map configured: sites and district names only.",
    ),
    "map_open_sites": ("有未结案事件的地点", "Sites with an open incident"),
    "map_open_incident": ("打开事件", "Open the incident"),
    "map_sites": ("地点数", "Sites"),
    "map_zoom_in": ("放大", "Zoom in"),
    "map_zoom_out": ("缩小", "Zoom out"),
    # Why the center itself moved an incident: central/ingest.py and central/watch.py write these
    # on the timeline in English, the page says them in words.
    "resolved, and every alarm closed": (
        "已处置，且所有报警已关闭",  # noqa: RUF001
        "resolved, and every alarm closed",
    ),
    "gateway back online": ("网关恢复在线", "gateway back online"),
    # A run of valve changes on the timeline, one line (central/api/timeline.py).
    "valve_run": ("阀门状态变化 {n} 条", "{n} valve state changes"),
    "valve_run_changes": ("{valve} 变化 {n} 次，现为{state}", "{valve}: changed {n}×, now {state}"),  # noqa: RUF001
    "bad_eta": ("预计到达请填 0 到 1440 分钟", "Arrival: 0 to 1440 minutes"),
}


def t(key: str, lang: Lang) -> str:
    """The word for ``key``: the center's own, else the gateway console's (else the key)."""
    pair = _WORDS.get(key)
    if pair is None:
        return text(key, lang)
    return pair[0] if lang == "zh-CN" else pair[1]


def pick_lang(asked: str | None, cookie: str | None, accept: str | None) -> Lang:
    """``?lang=`` first, then the page's cookie, then the browser's first language that is
    Chinese or English; Chinese by default."""
    for choice in (asked, cookie):
        if choice in ("zh-CN", "en"):
            return "en" if choice == "en" else "zh-CN"
    for part in (accept or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("en"):
            return "en"
        if tag.startswith("zh"):
            return "zh-CN"
    return "zh-CN"
