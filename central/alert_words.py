# ruff: noqa: RUF001 - Chinese text is written with Chinese punctuation on purpose
"""The alert page's own words, Simplified Chinese and English, for a frightened person on a phone:
short sentences, no codes, no jargon. Alarm titles, answers and causes come from
:mod:`gateway.words` (the SMS titles): the page says what the SMS said."""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["TODO_CALM", "TODO_EMERGENCY", "AlertLang", "say"]

AlertLang = Literal["zh", "en"]

_WORDS: Final[dict[str, tuple[str, str]]] = {
    "page_title": ("燃气报警", "Gas alarm"),
    "kicker": ("燃气报警", "Gas alarm"),
    "headline": ("请立即离开！", "Leave now!"),
    "headline_maintenance": ("燃气设备需要检修", "Your gas safety kit needs service"),
    "headline_over": ("此次报警已处理完毕", "This alarm is over"),
    "what_happened": ("{site}：{at} 发生{title}", "{title} at {site}, {at}"),
    "what_happened_unknown": (
        "您的燃气报警器发出了报警。",
        "Your gas alarm went off.",
    ),
    "todo_heading": ("现在请这样做", "What to do now"),
    "call": ("到室外后拨打燃气公司 {hotline}", "Once outside, call the gas company: {hotline}"),
    "call_119": ("到室外后拨打 119", "Once outside, call 119"),
    "call_calm": ("拨打燃气公司电话 {number}", "Call the gas company: {number}"),
    "valve_closed": ("燃气已自动切断", "Gas supply shut off"),
    "valve_open": ("燃气还没有切断！", "Gas supply NOT shut off yet!"),
    "valve_failed": (
        "自动切断阀没有关上，燃气还没有切断！",
        "The shut-off valve did NOT close: gas supply NOT shut off!",
    ),
    "valve_unknown": ("还不能确认燃气已切断", "Gas supply NOT confirmed shut off yet"),
    "valve_hint": (
        "离开时如能安全做到，请顺手关闭气瓶角阀或燃气表前阀。",
        "If you can do it safely on your way out, close the gas at the cylinder or meter.",
    ),
    "gas_gone": (
        "探测器已检测不到燃气。燃气公司说安全之前，请不要回去。",
        "The detector no longer senses gas. Do not go back in until the gas company says so.",
    ),
    "company_heading": ("燃气公司处理进度", "The gas company"),
    "being_told": ("正在通知燃气公司……", "The gas company is being told…"),
    "received": ("燃气公司已收到报警 {at}", "The gas company received the alarm at {at}"),
    "waiting_officer": ("正在等值班员处理", "Waiting for a duty officer"),
    "seen": ("燃气公司已看到报警 {at}", "Seen by the gas company at {at}"),
    "on_the_way": ("维修人员正在赶来", "A technician is on the way"),
    "on_the_way_eta": (
        "维修人员正在赶来，预计 {at} 到达",
        "A technician is on the way, ETA {at}",
    ),
    "on_site": ("维修人员已到场 {at}", "The technician arrived at {at}"),
    "resolved": ("燃气公司已处理完毕 {at}", "Dealt with by the gas company at {at}"),
    "resolved_cause": (
        "燃气公司已处理完毕 {at}：{cause}",
        "Dealt with by the gas company at {at}: {cause}",
    ),
    "closed": ("此次报警已结束", "This alarm is closed"),
    "answers_heading": ("告诉燃气公司您的情况", "Tell the gas company"),
    "answers_hint": ("点一下就会发给值班员", "One tap sends it to the duty officer"),
    "told_heading": ("已发给燃气公司的答复", "Answers sent to the gas company"),
    "thanks_left": (
        "已收到：所有人已撤离。谢谢！请留在室外，燃气公司说安全之前不要回去。",
        "Received: everyone has left. Thank you! "
        "Stay outside until the gas company says it is safe.",
    ),
    "thanks_false_alarm": (
        "已收到：是烹饪或误报。燃气公司仍会核实，期间请不要点火。",
        "Received: cooking or a false alarm. "
        "The gas company will still check: no flames until then.",
    ),
    "thanks_call_me": (
        "已收到：燃气公司会给您回电话。请到室外接听。",
        "Received: the gas company will call you. Take the call outside.",
    ),
    "thanks_need_help": (
        "已收到：正在为您安排帮助。有危险请立即拨打 119。",
        "Received: help is being arranged. If anyone is in danger, call 119 now.",
    ),
    "sending": ("正在发送……", "Sending…"),
    "times": ("时间为{zone}", "Times are {zone}"),
    "other_lang": ("English", "中文"),
    "invalid_title": ("此链接已失效", "This link is no longer valid"),
    "expired_title": ("此链接已过期", "This link has expired"),
    "invalid_body": (
        "如果您闻到燃气味：立即离开，不要点火，不要开关电器，到室外再打电话。",
        "If you smell gas: leave now, no flames, do not switch anything, and phone from outside.",
    ),
    "busy_title": ("已收到您的多次答复", "We already have your answers"),
    "busy_body": (
        "请稍后再发。如有危险，请立即拨打 {call}。",
        "Please wait a few minutes before sending more. If anyone is in danger, call {call} now.",
    ),
    "not_sent_title": ("没能发送您的答复", "Your answer could not be sent"),
    "not_sent_body": (
        "请直接打电话告诉燃气公司：{call}。",
        "Please phone the gas company instead: {call}.",
    ),
    "back": ("返回", "Back"),
    "bad_answer": ("无法识别的答复", "Unknown answer"),
}

# What to do now, in the order a person should do it (leave first); `{call}` is the number.
TODO_EMERGENCY: Final[tuple[tuple[str, str], ...]] = (
    ("所有人立即离开，到室外安全的地方。", "Everyone leave now, to a safe place outside."),
    ("不要点火，不要吸烟。", "No flames, no smoking."),
    (
        "不要开关任何电器：电灯、排风扇、插头都不要动。",
        "Do not switch anything on or off: lights, fans, plugs.",
    ),
    (
        "如果顺路且安全，打开门窗；不要为了开窗回去。",
        "Open doors and windows only on your way out, if it is safe. Do not go back for them.",
    ),
    ("不要在室内打电话。", "Do not use a phone inside."),
)
# Maintenance, or an alarm the gas company has closed: nothing to run from, unless gas is smelt.
TODO_CALM: Final[tuple[tuple[str, str], ...]] = (
    (
        "燃气公司会跟进，如需检修会联系您。",
        "The gas company follows it up and will contact you if a service visit is needed.",
    ),
    (
        "如果闻到燃气味：立即离开，不要点火，不要开关电器。",
        "If you smell gas: leave at once, no flames, do not switch anything.",
    ),
)


def say(key: str, lang: AlertLang, **values: str) -> str:
    pair = _WORDS[key]
    text = pair[1] if lang == "en" else pair[0]
    return text.format(**values) if values else text
