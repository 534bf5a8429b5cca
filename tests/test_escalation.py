"""Escalation with the real alarms room, a real store, a real HTTP receiver and a real SMTP
server; time moved by a ManualClock (the receivers answer in real time)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.alarms import Alarms
from gateway.alert_link import AlertGrant, InvalidAlertLink, verify
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.errors import ConfigError
from gateway.escalation import (
    DEFAULT_POLICIES,
    EscalationService,
    EscalationSettings,
    build,
    load_policies,
    status,
    trail,
)
from gateway.events import AlarmChanged, Severity
from gateway.model import Alarm
from gateway.store import Store
from tests.support.escalation_kit import eventually, leak, registry, settings_for
from tests.support.receivers import HttpReceiver, SmtpReceiver


@dataclass
class World:
    bus: Bus
    store: Store
    clock: ManualClock
    alarms: Alarms
    service: EscalationService

    async def raise_leak(self) -> Alarm:
        self.bus.publish(leak(self.clock.now()))
        await self.bus.join()
        (alarm,) = [a for a in self.alarms.open_alarms() if a.alarm_type == "leak_high"]
        return alarm

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.bus.join()


@contextlib.asynccontextmanager
async def world(
    path: Path,
    settings: dict[str, Any],
    clock: ManualClock | None = None,
    first: Callable[[AlarmChanged], None] | None = None,
) -> AsyncIterator[World]:
    bus, store, clock = Bus(), Store(path / "gasgate.db"), clock or ManualClock()
    store.open()
    alarms = Alarms(bus, store, clock, "gw1")
    service = build(
        EscalationSettings.model_validate(settings),
        bus=bus,
        store=store,
        clock=clock,
        registry=registry(),
        desk=alarms,
        gateway_id="gw1",
    )
    await alarms.start()
    if first is not None:  # a handler that runs before escalation's
        bus.subscribe(AlarmChanged, first)
    await service.start()
    try:
        yield World(bus, store, clock, alarms, service)
    finally:
        await service.stop()
        await alarms.stop()
        await bus.stop()
        store.close()


def settled(w: World) -> bool:
    """No notification to a person left queued (gas company events wait: no broker here)."""
    return w.service.outbox.pending() == w.service.outbox.pending("gasco")


def phones(http: HttpReceiver) -> list[str]:
    return [r.json()["phone"] for r in http.received("/sms")]


async def test_leak_tells_site_and_duty_room_at_once_then_supervisor_after_2_min(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: len(http.received()) == 3, what="site SMS x2 + duty room")
        assert sorted(phones(http)) == ["13800000001", "13800000002"]
        by_phone = {r.json()["phone"]: r.json()["text"] for r in http.received("/sms")}
        zh, en = by_phone["13800000001"], by_phone["13800000002"]
        assert "老王饭店" in zh
        assert "漕溪北路 88 号" in zh
        assert "离开现场" in zh
        assert "96777" in zh
        assert "关闭燃气切断阀" in zh  # what the gateway did: commanded the valve closed
        assert "leave the premises" in en
        assert "no flames" in en
        assert "Xuhui" in en
        (robot,) = http.received("/wecom")
        assert robot.json()["msgtype"] == "text"
        assert "老王饭店" in robot.json()["text"]["content"]

        await w.advance(119)
        await eventually(lambda: w.service.outbox.pending("sms") == 0)
        assert len(http.received("/sms")) == 2
        assert smtp.messages() == []

        await w.advance(1)  # 2 min without acknowledgement: the supervisor
        await eventually(lambda: len(smtp.messages()) == 1, what="supervisor e-mail")
        await eventually(lambda: "13900000001" in phones(http), what="supervisor SMS")
        (mail,) = smtp.messages()
        assert mail["To"] == "zhang@gasco.example"
        assert "已报警2分钟，仍无人确认" in mail.get_content()  # noqa: RUF001
        assert (
            mail["X-Gasgate-Delivery"].strip()
            == f"{alarm.alarm_id}/e1/s1/email/zhang@gasco.example"
        )

        await eventually(lambda: settled(w))
        kinds = [(e.kind, e.result) for e in trail(w.store, alarm.alarm_id)]
        assert kinds.count(("step", "fired")) == 2
        assert kinds.count(("notification", "sent")) == 5


async def test_acknowledgement_stops_next_steps_and_queued_notifications(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    http.status = 503  # the SMS provider is down: the site's texts wait in the outbox
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: w.service.outbox.counts["error.sms"] >= 1, what="SMS retry")
        assert w.service.outbox.pending("sms") == 2

        result = w.alarms.acknowledge(alarm.alarm_id, "officer-7", "on my way")
        assert isinstance(result, Alarm)
        await w.bus.join()
        assert w.service.outbox.pending("sms") == 0  # cancelled, not sent later

        http.status = 200
        await w.advance(3600)  # every step's time passes
        await eventually(lambda: settled(w))
        assert phones(http) == []
        assert smtp.messages() == []
        entries = trail(w.store, alarm.alarm_id)
        cancelled = [e for e in entries if e.result == "cancelled"]
        assert len(cancelled) == 3
        assert all("officer-7" in e.detail for e in cancelled)
        assert any(e.kind == "escalation" and e.result == "stopped" for e in entries)
        assert not any(e.kind == "step" and "step 1" in e.detail for e in entries)
        where = status(w.store, alarm.alarm_id)
        assert where is not None
        assert (where.policy, where.episode, where.last_step) == ("leak", 1, 0)
        assert where.stop_reason == "acknowledged by officer-7"
        assert status(w.store, "gw1-NEVER") is None


async def test_a_step_due_while_the_gateway_was_down_fires_once_at_restart(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    clock = ManualClock()
    settings = settings_for(http.url, smtp.port)
    async with world(tmp_path, settings, clock) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: len(http.received()) == 3)
    clock.advance(300)  # down for 5 min: the 2-min step came due meanwhile
    async with world(tmp_path, settings, clock) as w:
        await eventually(lambda: "13900000001" in phones(http), what="supervisor SMS")
        await eventually(lambda: len(smtp.messages()) == 1)
        await w.advance(100)  # well before the 10-min step
        await eventually(lambda: settled(w))
    clock.advance(5)
    async with world(tmp_path, settings, clock) as w:  # a second restart fires nothing again
        await w.advance(1)
        await eventually(lambda: settled(w))
    assert phones(http).count("13900000001") == 1
    assert len(smtp.messages()) == 1
    assert "13900000002" not in phones(http)  # dispatcher: 10 min, not yet
    store = Store(tmp_path / "gasgate.db")
    store.open()
    steps = [e.detail for e in trail(store, alarm.alarm_id) if e.kind == "step"]
    store.close()
    assert [s.split(":")[0] for s in steps] == ["policy leak step 0", "policy leak step 1"]


async def test_repeats_missed_while_down_are_sent_once(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    clock = ManualClock()
    settings = settings_for(http.url, smtp.port)
    async with world(tmp_path, settings, clock) as w:
        await w.raise_leak()
        await eventually(lambda: len(http.received()) == 3)
    clock.advance(3 * 3600)  # every step and all three repeats came due
    async with world(tmp_path, settings, clock) as w:
        # supervisor (step 1), regulator (step 2), regulator again (one repeat of step 2)
        await eventually(lambda: len(smtp.messages()) == 3, what="supervisor + regulator x2")
        await eventually(lambda: settled(w))
    # supervisor (step 1), dispatcher (step 2) and one repeat of step 2: not three.
    assert phones(http).count("13900000002") == 2
    assert phones(http).count("13900000001") == 1


async def test_webhook_is_signed_and_carries_its_delivery_key(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: len(http.received("/sms")) == 2)
    for request in http.received("/sms"):
        headers = {k.lower(): v for k, v in request.headers.items()}
        stamp = headers["x-gasgate-timestamp"]
        expected = hmac.new(b"s3cret", stamp.encode() + b"." + request.body, hashlib.sha256)
        assert headers["x-gasgate-signature"] == f"sha256={expected.hexdigest()}"
        assert headers["x-gasgate-delivery"] == request.json()["reference"]
        assert headers["x-gasgate-delivery"].startswith(f"{alarm.alarm_id}/e1/s0/sms/")


async def test_a_refused_notification_is_given_up_recorded_and_does_not_block_the_lane(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    http.status = 400
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: settled(w), what="rows given up")
        failed = [e for e in trail(w.store, alarm.alarm_id) if e.result == "failed"]
        assert len(failed) == 3
        assert all(e.detail == "HTTP 400" for e in failed)


async def test_dingtalk_robot_is_signed_its_way(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    settings = settings_for(http.url, smtp.port)
    settings["channels"]["duty_room_im"] = {
        "kind": "webhook",
        "url": http.url("/robot/send?access_token=t"),
        "template": "dingtalk",
        "secret": "SECdemo",
    }
    clock = ManualClock()
    async with world(tmp_path, settings, clock) as w:
        await w.raise_leak()
        await eventually(lambda: len(http.received("/robot")) == 1)
    (request,) = http.received("/robot")
    millis = str(int(clock.now().timestamp() * 1000))
    assert f"timestamp={millis}&sign=" in request.path
    body = request.json()
    assert body["msgtype"] == "text"
    assert body["at"] == {"atMobiles": [], "isAtAll": False}


def test_policy_file_problems_are_located(tmp_path: Path) -> None:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(
        "policies:\n"
        "  - name: leak\n"
        "    steps:\n"
        "      - after_s: 120\n"
        "        notify: [{to: duty_room, via: [sms]}]\n"
        "      - after_s: -5\n"
        "        notify: [{to: nobody, via: [sms]}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policies(policy_file)
    message = str(caught.value)
    assert f"{policy_file}:6:18: policies.0.steps.1.after_s" in message
    assert f"{policy_file}:7:23: policies.0.steps.1.notify.0.to" in message


def test_policy_file_loads_and_defaults_match_safety_domain(tmp_path: Path) -> None:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(
        "policies:\n"
        "  - name: all\n"
        "    stop_on: [acknowledged, cleared]\n"
        "    steps:\n"
        "      - {after_s: 0, notify: [{to: duty_room, via: [duty_room_im]}]}\n"
        "    repeat: {every_s: 60, times: 2}\n"
    )
    policy = load_policies(policy_file).policies[0]
    assert [(s.index, s.after_s) for s in policy.schedule()] == [(0, 0), (1, 60), (2, 120)]
    leak_policy = DEFAULT_POLICIES.for_alarm("leak_high", Severity.CRITICAL)
    assert leak_policy is not None
    assert [(s.after_s, [n.to.value for n in s.notify]) for s in leak_policy.steps] == [
        (0, ["site_contacts", "duty_room"]),
        (120, ["duty_supervisor"]),
        (600, ["emergency_dispatcher", "district_regulator"]),
    ]
    maintenance = DEFAULT_POLICIES.for_alarm("low_battery", Severity.LOW)
    assert maintenance is not None
    assert maintenance.name == "maintenance"
    assert timedelta(seconds=leak_policy.steps[1].after_s) == timedelta(minutes=2)


async def test_shelving_stops_escalation_and_unshelving_starts_a_new_episode(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    offline = dataclasses.replace(
        leak(ManualClock().now()),
        alarm_type="device_offline",
        severity=Severity.HIGH,
        rule_id="supervision.offline",
        message="device offline",
    )
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        w.bus.publish(offline)
        await w.bus.join()
        (alarm,) = w.alarms.open_alarms()
        await eventually(lambda: len(http.received("/wecom")) == 1, what="duty room, episode 1")
        shelved = w.alarms.shelve(alarm.alarm_id, "officer-7", "technician on site", 3600)
        assert isinstance(shelved, Alarm)
        await w.advance(900)  # past the urgent policy's 10-min supervisor step: shelved, silent
        await eventually(lambda: settled(w))
        assert phones(http) == []
        assert isinstance(w.alarms.unshelve(alarm.alarm_id, "officer-7"), Alarm)
        await w.bus.join()
        await eventually(lambda: len(http.received("/wecom")) == 2, what="duty room, episode 2")
        keys = [r.headers["X-Gasgate-Delivery"] for r in http.received("/wecom")]
        assert [k.split("/")[1] for k in keys] == ["e1", "e2"]


async def test_maintenance_alarm_makes_a_work_order_and_a_daily_digest(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    settings = settings_for(http.url, smtp.port)
    settings["channels"]["work_order"] = {"kind": "webhook", "url": http.url("/tickets")}
    settings["service_team"] = [{"name": "Service team", "email": "service@gasco.example"}]
    low_battery = dataclasses.replace(
        leak(ManualClock().now()),
        alarm_type="low_battery",
        severity=Severity.LOW,
        rule_id="maintenance.battery",
        message="battery 2.1 V",
    )
    clock = ManualClock()  # 10:00 UTC = 18:00 in Shanghai: today's 08:00 digest is past
    async with world(tmp_path, settings, clock) as w:
        w.bus.publish(low_battery)
        await w.bus.join()
        (alarm,) = w.alarms.open_alarms()
        await eventually(lambda: len(http.received("/tickets")) == 1, what="work order")
        order = http.received("/tickets")[0].json()
        assert order["alarm_id"] == alarm.alarm_id
        assert order["target"] == "service_team"
        assert "电池电量低" in order["title"]
        assert smtp.messages() == []
        await w.advance(14 * 3600)  # 08:00 local the next day
        await eventually(lambda: len(smtp.messages()) == 1, what="digest")
    (digest,) = smtp.messages()
    assert digest["To"] == "service@gasco.example"
    assert "2026-11-29" in digest["Subject"]
    assert "待处理维护告警 1 条" in digest["Subject"]
    assert "老王饭店" in digest.get_content()
    assert "电池电量低" in digest.get_content()
    clock.advance(3600)
    async with world(tmp_path, settings, clock) as w:  # restarted the same day: not again
        await w.advance(60)
        await eventually(lambda: settled(w))
    assert len(smtp.messages()) == 1


async def test_an_alarm_change_the_store_refuses_is_retried_not_lost(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    holder: list[World] = []

    def disk_trouble(_: AlarmChanged) -> None:
        holder[0].store.db.execute("PRAGMA query_only = ON")  # every write now fails

    async with world(tmp_path, settings_for(http.url, smtp.port), first=disk_trouble) as w:
        holder.append(w)
        alarm = await w.raise_leak()
        assert w.service.room.counts["change_errors"] == 1
        assert http.received() == []
        w.store.db.execute("PRAGMA query_only = OFF")
        await w.advance(5)
        await eventually(lambda: len(http.received("/sms")) == 2, what="site SMS after retry")
        assert trail(w.store, alarm.alarm_id)[0].kind == "alarm_changed"


async def test_a_webhook_down_for_a_while_gets_everything_in_order_once(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    http.status = 503
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        first = await w.raise_leak()
        w.bus.publish(leak(w.clock.now(), source="9f9f9f9f"))
        await w.bus.join()
        for _ in range(3):  # three failed attempts (backoff runs on the manual clock)
            failures = w.service.outbox.counts["error.sms"]
            await eventually(lambda: w.service.outbox.counts["error.sms"] > failures)  # noqa: B023
            await w.advance(1)
        assert w.service.outbox.pending("sms") == 4
        http.status = 200
        for _ in range(10):
            await w.advance(1)
            await asyncio.sleep(0.05)
        await eventually(lambda: settled(w), what="backlog delivered")
    keys = [r.headers["X-Gasgate-Delivery"] for r in http.received("/sms")]
    assert len(keys) == len(set(keys)) == 4
    assert [k.startswith(first.alarm_id) for k in keys] == [True, True, False, False]


async def test_a_raise_killed_before_escalation_saw_it_is_escalated_after_restart(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    clock = ManualClock()
    bus, store = Bus(), Store(tmp_path / "gasgate.db")
    store.open()
    alarms = Alarms(bus, store, clock, "gw1")  # the alarm is committed; escalation never ran
    await alarms.start()
    bus.publish(leak(clock.now()))
    await bus.join()
    await alarms.stop()
    await bus.stop()
    store.close()
    clock.advance(180)  # restarted 3 min later: the site and the supervisor are both due
    async with world(tmp_path, settings_for(http.url, smtp.port), clock) as w:
        w.alarms.announce_restored()  # as gateway/app.py does once every room has started
        await w.bus.join()
        await eventually(lambda: len(smtp.messages()) == 1, what="supervisor e-mail")
        await eventually(lambda: sorted(phones(http)) == SITE_AND_SUPERVISOR, what="SMS")


SITE_AND_SUPERVISOR = ["13800000001", "13800000002", "13900000001"]


async def test_a_policy_that_stops_on_clear_stops_when_the_condition_clears(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    offline = dataclasses.replace(
        leak(ManualClock().now()),
        alarm_type="device_offline",
        severity=Severity.HIGH,
        rule_id="supervision.offline",
        message="device offline",
    )
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        w.bus.publish(offline)
        await w.bus.join()
        (alarm,) = w.alarms.open_alarms()
        await eventually(lambda: len(http.received("/wecom")) == 1, what="duty room")
        await eventually(lambda: settled(w))  # the first step all sent: nothing to cancel
        w.bus.publish(dataclasses.replace(offline, active=False, at=w.clock.now()))
        await w.bus.join()
        await w.advance(900)  # the urgent policy's supervisor step (10 min) would be due
        await eventually(lambda: settled(w))
        assert phones(http) == []
        stopped = [e for e in trail(w.store, alarm.alarm_id) if e.result == "stopped"]
        assert [e.detail for e in stopped] == ["cleared; 0 cancelled"]
        # A latched leak is not stopped by its gas clearing: only a person stops it.
        leak_alarm = await w.raise_leak()
        w.bus.publish(leak(w.clock.now(), active=False))
        await w.bus.join()
        await w.advance(120)
        await eventually(lambda: "13900000001" in phones(http), what="supervisor still told")
        assert not any(e.result == "stopped" for e in trail(w.store, leak_alarm.alarm_id))


async def test_finished_outbox_rows_are_pruned_after_keep_days_pending_never(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: settled(w))
        assert isinstance(w.alarms.acknowledge(alarm.alarm_id, "officer-7"), Alarm)
        await w.bus.join()
        outbox = w.service.outbox
        assert outbox.pending("gasco") == 2  # no gas company broker here: they wait
        await w.advance(29 * 86400)
        assert outbox.prune() == 0
        await w.advance(2 * 86400)  # the daily pass removed the delivered rows
        remaining = w.store.db.execute("SELECT status FROM outbox").fetchall()
        assert [r[0] for r in remaining] == ["pending", "pending"]  # gas company events stay
        assert any(e.result == "sent" for e in trail(w.store, alarm.alarm_id))


@pytest.mark.parametrize("jump_s", [-3600.0, 3600.0])
async def test_a_wall_clock_step_neither_fires_nor_starves_a_step(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, jump_s: float
) -> None:
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        await w.raise_leak()
        await eventually(lambda: len(http.received("/sms")) == 2)
        w.clock.jump_wall(jump_s)  # NTP steps the clock an hour back or forward
        await w.advance(119)
        await eventually(lambda: settled(w))
        assert smtp.messages() == []  # not fired early by a forward jump
        await w.advance(1)
        await eventually(lambda: len(smtp.messages()) == 1, what="supervisor on time")
        await eventually(lambda: settled(w))
        assert "13900000002" not in phones(http)  # the 10-min dispatcher step: not yet


async def test_a_site_contacts_first_sms_links_to_the_alert_page_signed_for_them(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    secret = "alert-page-secret-0123456789"
    page = {"base_url": "https://gc.example", "secret": secret, "ttl_s": 3600}
    async with world(tmp_path, settings_for(http.url, smtp.port, alert_page=page)) as w:
        alarm = await w.raise_leak()
        await eventually(lambda: len(http.received("/sms")) == 2, what="site SMS x2")
        by_phone = {r.json()["phone"]: r.json()["text"] for r in http.received("/sms")}
        grants = {}
        for phone, text in by_phone.items():
            token = text.rsplit("https://gc.example/a/", 1)[1].split()[0]
            grants[phone] = verify(secret.encode(), token, w.clock.now())
        # contact 0 is 王老板 (zh), contact 1 Sam Lee (en), in the registry's order
        assert grants["13800000001"] == AlertGrant(
            alarm.alarm_id, 0, "zh", w.clock.now() + timedelta(hours=1)
        )
        assert (grants["13800000002"].contact, grants["13800000002"].lang) == (1, "en")
        assert "查看详情并回复" in by_phone["13800000001"]
        assert "tell us you are safe" in by_phone["13800000002"]
        with pytest.raises(InvalidAlertLink, match="expired"):
            verify(secret.encode(), token, w.clock.now() + timedelta(hours=1))

        await w.advance(120)  # the supervisor's SMS: no site link in it
        await eventually(lambda: "13900000001" in phones(http), what="supervisor SMS")
        supervisor = [r.json()["text"] for r in http.received("/sms")][-1]
        assert "/a/" not in supervisor
        (robot,) = http.received("/wecom")
        assert "/a/" not in robot.json()["text"]["content"]


async def test_no_alert_page_configured_no_link(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    async with world(tmp_path, settings_for(http.url, smtp.port)) as w:
        await w.raise_leak()
        await eventually(lambda: len(http.received("/sms")) == 2, what="site SMS x2")
        assert all("/a/" not in r.json()["text"] for r in http.received("/sms"))
