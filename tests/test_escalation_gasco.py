"""The gas company link with real brokers: events, commands back, availability, summaries, and a
broker outage. Real time (SystemClock) with shortened policy delays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pydantic
import pytest

from firmware_bridge.ksp import DeviceKind, Event, ValveState
from gateway.alarms import Alarms
from gateway.bus import Bus
from gateway.clock import SystemClock
from gateway.contract import KitReport
from gateway.escalation import (
    EscalationService,
    EscalationSettings,
    PolicySet,
    audit,
    build,
    trail,
)
from gateway.escalation.gasco import GascoCommand, RefusalBudget
from gateway.events import ReportReceived
from gateway.linkage import Linkage
from gateway.model import Alarm
from gateway.store import Store
from tests.support.escalation_kit import (
    SITE_ID,
    VALVE,
    eventually,
    leak,
    registry,
    settings_for,
)
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto
from tests.test_bridge_mqtturl import _broker, _certificates

SCHEMAS = Path(__file__).parents[1] / "docs" / "schemas"
BASE = "gasco/v1/gw1"

# The built-in leak policy with its 2 min / 10 min shortened to 3 s / 5 s.
SHORT = PolicySet.model_validate(
    {
        "policies": [
            {
                "name": "leak",
                "steps": [
                    {
                        "after_s": 0,
                        "notify": [
                            {"to": "site_contacts", "via": ["sms"]},
                            {"to": "duty_room", "via": ["duty_room_im"]},
                        ],
                    },
                    {"after_s": 3, "notify": [{"to": "duty_supervisor", "via": ["sms", "email"]}]},
                    {"after_s": 5, "notify": [{"to": "emergency_dispatcher", "via": ["sms"]}]},
                ],
            }
        ]
    }
)


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


@dataclass
class GasCompany:
    """The gas company's side: a client on its broker recording everything under our prefix."""

    client: aiomqtt.Client
    base: str = BASE
    seen: list[tuple[str, Any, bool]] = field(default_factory=list)

    def on(self, suffix: str) -> list[Any]:
        return [p for t, p, _ in self.seen if t == f"{self.base}/{suffix}"]

    def events(self) -> list[dict[str, Any]]:
        return self.on("alarms/events")

    async def command(self, officer: str, **body: Any) -> None:
        await self.client.publish(f"{self.base}/cmd/{officer}", json.dumps(body), qos=1)


@contextlib.asynccontextmanager
async def gas_company(broker: Mosquitto, base: str = BASE) -> AsyncIterator[GasCompany]:
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier="duty-console")
    async with client:
        await client.subscribe(f"{base}/#", qos=1)
        company = GasCompany(client, base)

        async def record() -> None:
            async for m in client.messages:
                text = m.payload.decode() if isinstance(m.payload, bytes) else str(m.payload)
                try:
                    payload = json.loads(text)
                except ValueError:  # availability, and the malformed command a test sends
                    payload = text
                company.seen.append((str(m.topic), payload, m.retain))

        task = asyncio.get_running_loop().create_task(record())
        try:
            yield company
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@dataclass
class SiteQueue:
    """Stands in for the site MQTT queue the linkage commands valves through."""

    topics: list[str] = field(default_factory=list)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.topics.append(topic)
        if on_sent is not None:
            on_sent()


@dataclass
class Gateway:
    bus: Bus
    store: Store
    alarms: Alarms
    service: EscalationService
    linkage: Linkage | None = None

    async def valve_reports(self, valve: str, state: ValveState) -> None:
        report = KitReport(
            kind=DeviceKind.VALVE, seq=1, event=Event.STATE_CHANGE, valve={"state": state}
        )
        clock = SystemClock()
        self.bus.publish(ReportReceived(valve, report, clock.now(), clock.monotonic()))
        await self.bus.join()

    async def raise_leak(self) -> Alarm:
        self.bus.publish(leak(SystemClock().now()))
        await self.bus.join()
        (alarm,) = self.alarms.open_alarms()
        return alarm


def acknowledge(alarm_id: str, cmd_id: str, officer: str = "officer-7") -> dict[str, str]:
    """An officer's acknowledge command, as the gas company's console sends it."""
    return {"cmd_id": cmd_id, "alarm_id": alarm_id, "action": "acknowledge", "officer_id": officer}


async def take_the_broker_down(gw: Gateway, broker: Mosquitto) -> float:
    """Stop the gas company broker once the link is up; the monotonic time it went down."""
    await eventually(gw.service.gasco.connected.is_set)
    broker.stop()
    down_since = time.monotonic()
    await eventually(lambda: not gw.service.gasco.connected.is_set(), what="link down")
    return down_since


@contextlib.asynccontextmanager
async def gateway(
    path: Path,
    http: HttpReceiver,
    smtp: SmtpReceiver,
    broker: Mosquitto,
    *,
    linkage: bool = False,
    **extra: Any,
) -> AsyncIterator[Gateway]:
    """The alarms and escalation rooms; with ``linkage`` the real linkage room too (its valve
    commands go to a :class:`SiteQueue`), as in the gateway."""
    bus, store, clock = Bus(), Store(path / "gasgate.db"), SystemClock()
    store.open()
    alarms = Alarms(bus, store, clock, "gw1")
    valves = Linkage(bus, registry(), SiteQueue(), store, clock) if linkage else None
    settings = EscalationSettings.model_validate(
        settings_for(http.url, smtp.port, broker.url, **extra)
    )
    service = build(
        settings,
        bus=bus,
        store=store,
        clock=clock,
        registry=registry(),
        desk=alarms,
        valves=valves,
        gateway_id="gw1",
        policies=SHORT,
    )
    await alarms.start()
    if valves is not None:
        await valves.start()
    await service.start()
    try:
        yield Gateway(bus, store, alarms, service, valves)
    finally:
        await service.stop()
        if valves is not None:
            await valves.stop()
        await alarms.stop()
        await bus.stop()
        store.close()


async def test_leak_reaches_the_gas_company_with_site_people_and_schema(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with (
        gas_company(own_mosquitto) as company,
        gateway(tmp_path, http, smtp, own_mosquitto) as gw,
    ):
        await eventually(lambda: company.on("availability") == ["online"], what="online")
        await eventually(lambda: len(company.on(f"sites/{SITE_ID}/summary")) == 1)
        alarm = await gw.raise_leak()
        await eventually(lambda: len(company.events()) == 1, what="raised event")
        (event,) = company.events()
        jsonschema.validate(event, schema("gasco-alarm-event"))
        assert (event["alarm_id"], event["revision"], event["transition"]) == (
            alarm.alarm_id,
            1,
            "raised",
        )
        assert event["site"]["address"] == "漕溪北路 88 号"
        assert event["site"]["contacts"][0]["phone"] == "13800000001"
        assert event["readings"] == {"lel_pct": 55.0}
        assert event["valves"] == [{"device_id": "5e6f7a8b", "state": "unknown"}]
        await eventually(lambda: len(http.received("/sms")) == 2, what="site SMS")
        await eventually(lambda: len(smtp.messages()) == 1, what="supervisor e-mail at 3 s")
        await eventually(lambda: len(company.events()) == 2, what="escalated event")
        escalated = company.events()[1]
        jsonschema.validate(escalated, schema("gasco-alarm-event"))
        assert escalated["transition"] == "escalated"
        assert escalated["revision"] == 2
        assert escalated["alarm_revision"] == 1
        assert escalated["escalation"] == {
            "policy": "leak",
            "step": 1,
            "targets": ["duty_supervisor"],
        }
        summary = company.on(f"sites/{SITE_ID}/summary")[0]
        jsonschema.validate(summary, schema("gasco-site-summary"))
        assert summary["kit"] == {
            "complete": False,
            "missing": ["metal_hose", "overflow_regulator or smart_regulator"],
        }
    retained = [(t, p) for t, p, r in company.seen if t == f"{BASE}/availability"]
    assert retained[-1] == (f"{BASE}/availability", "offline")


async def test_a_valve_closing_under_an_open_leak_is_told_at_once(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    """The center's valve state is never stale: the leak's linked valve reports closed after
    the leak raised, and a valve_changed event (next revision, same alarm_revision, the valve
    closed) reaches the gas company at once; nothing once the alarm is closed."""
    async with (
        gas_company(own_mosquitto) as company,
        gateway(tmp_path, http, smtp, own_mosquitto, linkage=True) as gw,
    ):
        await eventually(lambda: company.on("availability") == ["online"], what="online")
        alarm = await gw.raise_leak()
        await eventually(lambda: len(company.events()) == 1, what="raised event")
        raised = company.events()[0]
        assert raised["valves"] == [{"device_id": VALVE, "state": "unknown"}]
        reported = time.monotonic()
        await gw.valve_reports(VALVE, ValveState.CLOSED)
        await eventually(lambda: _transitions(company)[-1:] == ["valve_changed"], within=5)
        took = time.monotonic() - reported
        changed = company.events()[-1]
        jsonschema.validate(changed, schema("gasco-alarm-event"))
        assert (changed["alarm_id"], changed["revision"], changed["alarm_revision"]) == (
            alarm.alarm_id,
            2,
            raised["alarm_revision"],
        )
        assert changed["valves"] == [{"device_id": VALVE, "state": "closed"}]
        assert (changed["valve_state"], changed["state"]) == ("closed", "unack_active")
        assert took < 1.0, f"valve_changed after {took:.2f} s"
        await gw.valve_reports(VALVE, ValveState.CLOSED)  # no change: nothing to tell
        gw.bus.publish(leak(SystemClock().now(), active=False))
        await gw.bus.join()
        assert isinstance(gw.alarms.resolve(alarm.alarm_id, "officer-7"), Alarm)
        await eventually(lambda: _transitions(company)[-1:] == ["resolved"], what="resolved")
        await gw.valve_reports(VALVE, ValveState.OPEN)  # opened by hand once it is over
        await asyncio.sleep(0.5)
        transitions = _transitions(company)
        assert transitions.count("valve_changed") == 1, transitions
        assert [e["revision"] for e in company.events()] == list(range(1, len(transitions) + 1))
        assert company.events()[-1]["valve_state"] == "closed"  # the resolve saw it closed
        notes = [e for e in trail(gw.store, alarm.alarm_id) if e.kind == "valve"]
        assert [(n.result, n.detail) for n in notes] == [
            ("valve_changed", f"valve {VALVE}: unknown -> closed")
        ]


def _transitions(company: GasCompany) -> list[str]:
    return [e["transition"] for e in company.events()]


async def test_acknowledgement_over_mqtt_stops_the_steps(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with (
        gas_company(own_mosquitto) as company,
        gateway(tmp_path, http, smtp, own_mosquitto) as gw,
    ):
        await eventually(lambda: company.on("availability") == ["online"])
        alarm = await gw.raise_leak()
        await eventually(lambda: len(company.events()) == 1)
        await company.command(
            "officer-7",
            cmd_id="c1",
            alarm_id=alarm.alarm_id,
            action="acknowledge",
            officer_id="officer-7",
            note="派人前往",
        )
        await eventually(lambda: len(company.on("reply/officer-7")) == 1, what="reply")
        (reply,) = company.on("reply/officer-7")
        jsonschema.validate(reply, schema("gasco-command-reply"))
        assert reply["accepted"] is True
        assert reply["state"] == "ack_active"
        assert reply["cmd_id"] == "c1"
        await eventually(lambda: len(company.events()) == 2, what="acknowledged event")
        acked = company.events()[1]
        assert (acked["transition"], acked["by"], acked["note"]) == (
            "acknowledged",
            "officer-7",
            "派人前往",
        )
        await asyncio.sleep(6)  # past the supervisor (3 s) and dispatcher (5 s) steps
        assert smtp.messages() == []
        phones = {r.json()["phone"] for r in http.received("/sms")}
        assert phones <= {"13800000001", "13800000002"}  # the site only: nobody escalated
        assert [e["transition"] for e in company.events()] == ["raised", "acknowledged"]
        commands = [e for e in trail(gw.store, alarm.alarm_id) if e.kind == "command"]
        assert [(c.recipient, c.result) for c in commands] == [("officer-7", "accepted")]


async def test_bad_commands_are_refused_with_a_reason(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with (
        gas_company(own_mosquitto) as company,
        gateway(
            tmp_path,
            http,
            smtp,
            own_mosquitto,
            gasco={"url": own_mosquitto.url, "officers": ["officer-7", "mallory"]},
        ) as gw,
    ):
        await eventually(lambda: company.on("availability") == ["online"])
        alarm = await gw.raise_leak()
        await company.command(
            "officer-7",
            cmd_id="c1",
            alarm_id="gw1-NOSUCHALARM",
            action="acknowledge",
            officer_id="officer-7",
        )
        await company.command(
            "mallory",
            cmd_id="c2",
            alarm_id=alarm.alarm_id,
            action="acknowledge",
            officer_id="officer-7",
        )
        await company.command(
            "stranger",
            cmd_id="c3",
            alarm_id=alarm.alarm_id,
            action="acknowledge",
            officer_id="stranger",
        )
        await company.command(
            "officer-7",
            cmd_id="c4",
            alarm_id=alarm.alarm_id,
            action="resolve",
            officer_id="officer-7",
        )
        await company.client.publish(f"{BASE}/cmd/officer-7", b"{not json", qos=1)
        await company.client.publish(f"{BASE}/cmd/officer-7/x", b"{}", qos=1)
        await eventually(lambda: len(company.on("reply/officer-7")) == 3, what="3 replies")
        await eventually(lambda: len(company.on("reply/mallory")) == 1)
        await eventually(lambda: len(company.on("reply/stranger")) == 1)
        replies = [
            *company.on("reply/officer-7"),
            *company.on("reply/mallory"),
            *company.on("reply/stranger"),
        ]
        for reply in replies:
            jsonschema.validate(reply, schema("gasco-command-reply"))
            assert reply["accepted"] is False
        reasons = {(r["cmd_id"], r["reason"]) for r in replies}
        assert reasons == {
            ("c1", "unknown_alarm"),
            ("c2", "unauthorised_topic"),
            ("c3", "unknown_officer"),
            ("c4", "wrong_state"),
            (None, "bad_json"),
        }
        await eventually(lambda: gw.service.gasco.counts["refused.unauthorised_topic"] == 2)
        still = gw.alarms.get(alarm.alarm_id)
        assert still is not None
        assert still.state.value == "unack_active"


async def test_broker_outage_loses_nothing_and_delivers_in_order(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
        await take_the_broker_down(gw, own_mosquitto)
        alarm = await gw.raise_leak()
        # Escalation goes on meanwhile: people are still told.
        await eventually(lambda: len(smtp.messages()) == 1, what="supervisor e-mail")
        await eventually(
            lambda: any(r.json()["phone"] == "13900000002" for r in http.received("/sms")),
            what="dispatcher SMS",
        )
        result = gw.alarms.acknowledge(alarm.alarm_id, "officer-9", "seen on the console")
        assert isinstance(result, Alarm)
        await gw.bus.join()
        assert gw.service.outbox.pending("gasco") == 4  # raised, 2 x escalated, acknowledged
        own_mosquitto.start()
        async with gas_company(own_mosquitto) as company:
            await eventually(
                lambda: gw.service.outbox.pending("gasco") == 0, within=40, what="backlog delivered"
            )
            await eventually(lambda: len(company.events()) >= 4)
    revisions = [e["revision"] for e in company.events()]
    assert sorted(set(revisions)) == [1, 2, 3, 4]
    assert revisions == sorted(revisions)  # in order (a repeat after a lost PUBACK is allowed)
    assert [e["transition"] for e in company.events()][-1] == "acknowledged"
    sms = [r.json()["reference"] for r in http.received("/sms")]
    assert len(sms) == len(set(sms)) == 4  # 2 site contacts, supervisor, dispatcher: once each


async def test_commands_sent_while_the_gateway_is_away_wait_in_its_session(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with gas_company(own_mosquitto) as company:
        async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
            await eventually(lambda: company.on("availability") == ["online"])
            alarm = await gw.raise_leak()
            await eventually(lambda: len(company.events()) == 1)
        # The gateway is away (clean stop); its MQTT v5 session stays at the broker.
        await eventually(lambda: company.on("availability")[-1:] == ["offline"])
        await company.command(
            "officer-7",
            cmd_id="late",
            alarm_id=alarm.alarm_id,
            action="acknowledge",
            officer_id="officer-7",
        )
        async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
            await eventually(lambda: company.on("reply/officer-7"), what="queued command")
            assert company.on("reply/officer-7")[0]["accepted"] is True
            acked = gw.alarms.get(alarm.alarm_id)
            assert acked is not None
            assert acked.acked_by == "officer-7"


def _users(tmp_path: Path, **passwords: str) -> Path:
    users = tmp_path / "passwords"
    for user, password in passwords.items():
        flags = ["-b"] if users.exists() else ["-c", "-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(users), user, password], check=True)
    return users


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_mqtts_with_credentials_and_a_private_ca(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    ca, cert, key = _certificates(tmp_path)
    users = _users(tmp_path, gw1="gw-secret", console="c0nsole")
    config = (
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\n"
        f"password_file {users}\n"
    )
    with _broker(tmp_path, config).running() as broker:
        tls = {
            "url": f"mqtts://127.0.0.1:{broker.port}",
            "username": "gw1",
            "password": "gw-secret",
            "tls_ca": str(ca),
            "client_id": "gw1-tls",
        }
        console = aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username="console",
            password="c0nsole",
            tls_params=aiomqtt.TLSParameters(str(ca)),
        )
        async with console, gateway(tmp_path, http, smtp, broker, gasco=tls) as gw:
            await console.subscribe(f"{BASE}/availability", qos=1)
            async with asyncio.timeout(20):
                async for message in console.messages:
                    assert message.payload == b"online"
                    break
            await eventually(lambda: gw.service.gasco.counts["connects"] == 1)
        wrong = {**tls, "password": "guess"}
        async with gateway(tmp_path, http, smtp, broker, gasco=wrong) as gw:
            await asyncio.sleep(1.5)
            assert not gw.service.gasco.connected.is_set()
            assert gw.service.gasco.counts["disconnects"] >= 1


@pytest.mark.parametrize(
    "command",
    [
        {"cmd_id": "c1", "alarm_id": "gw1-A", "action": "acknowledge", "officer_id": "o-7"},
        {
            "cmd_id": "c1",
            "alarm_id": "gw1-A",
            "action": "resolve",
            "officer_id": "o-7",
            "note": "阀门已人工复位",
        },
        {"cmd_id": "c1", "alarm_id": "gw1-A", "action": "open_valve", "officer_id": "o-7"},
        {"cmd_id": "c1", "alarm_id": "gw1-A", "action": "acknowledge"},
        {"cmd_id": "", "alarm_id": "gw1-A", "action": "acknowledge", "officer_id": "o-7"},
        {"cmd_id": "c1", "alarm_id": "gw1-A", "action": "acknowledge", "officer_id": "o 7"},
        {
            "cmd_id": "c1",
            "alarm_id": "gw1-A",
            "action": "acknowledge",
            "officer_id": "o-7",
            "extra": 1,
        },
        {
            "cmd_id": "c1",
            "alarm_id": "gw1-A",
            "action": "acknowledge",
            "officer_id": "o-7",
            "note": "x" * 1001,
        },
    ],
)
def test_the_command_schema_and_the_gateway_agree(command: dict[str, Any]) -> None:
    try:
        jsonschema.validate(command, schema("gasco-command"))
        by_schema = True
    except jsonschema.ValidationError:
        by_schema = False
    try:
        GascoCommand.model_validate(command)
        by_gateway = True
    except pydantic.ValidationError:
        by_gateway = False
    assert by_schema == by_gateway


ACL = """\
user gw1
topic write gasco/v1/gw1/alarms/events
topic write gasco/v1/gw1/reply/+
topic write gasco/v1/gw1/availability
topic write gasco/v1/gw1/sites/+/summary
topic read gasco/v1/gw1/cmd/#

pattern write gasco/v1/+/cmd/%u
pattern read gasco/v1/+/reply/%u
pattern read gasco/v1/+/alarms/events
"""


async def test_the_documented_broker_acl_lets_only_an_officer_command_as_themselves(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    users = _users(tmp_path, gw1="gw-secret", **{"officer-7": "o7", "mallory": "m"})
    (tmp_path / "acl").write_text(ACL)
    config = f"allow_anonymous false\npassword_file {users}\nacl_file {tmp_path / 'acl'}\n"
    with _broker(tmp_path, config).running() as broker:
        creds = {"url": broker.url, "username": "gw1", "password": "gw-secret"}
        officer = aiomqtt.Client("127.0.0.1", broker.port, username="officer-7", password="o7")
        mallory = aiomqtt.Client("127.0.0.1", broker.port, username="mallory", password="m")
        async with officer, mallory, gateway(tmp_path, http, smtp, broker, gasco=creds) as gw:
            await eventually(gw.service.gasco.connected.is_set)
            await officer.subscribe(f"{BASE}/reply/officer-7", qos=1)
            alarm = await gw.raise_leak()
            await eventually(lambda: gw.service.outbox.pending("gasco") == 0, what="event out")
            forged = {
                "cmd_id": "m1",
                "alarm_id": alarm.alarm_id,
                "action": "acknowledge",
                "officer_id": "officer-7",
            }
            await mallory.publish(f"{BASE}/cmd/officer-7", json.dumps(forged), qos=1)
            real = {**forged, "cmd_id": "o1"}
            await officer.publish(f"{BASE}/cmd/officer-7", json.dumps(real), qos=1)
            async with asyncio.timeout(20):
                async for message in officer.messages:
                    assert isinstance(message.payload, bytes)
                    reply = json.loads(message.payload)
                    break
            assert (reply["cmd_id"], reply["accepted"]) == ("o1", True)
            await asyncio.sleep(0.5)  # mallory's forgery, had it passed, would be handled now
            assert gw.service.gasco.counts["accepted"] == 1
            assert sum(v for k, v in gw.service.gasco.counts.items() if "refused" in k) == 0


async def test_a_command_delivered_twice_is_applied_once_and_answered_alike(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with (
        gas_company(own_mosquitto) as company,
        gateway(tmp_path, http, smtp, own_mosquitto) as gw,
    ):
        await eventually(lambda: company.on("availability") == ["online"])
        alarm = await gw.raise_leak()
        command = acknowledge(alarm.alarm_id, "c9")
        await company.command("officer-7", **command)
        await company.command("officer-7", **command)  # as a QoS 1 redelivery would
        await eventually(lambda: len(company.on("reply/officer-7")) == 2, what="two replies")
        first, second = company.on("reply/officer-7")
        assert first["accepted"] is True
        assert {**first, "at": None} == {**second, "at": None}
        assert gw.service.gasco.counts["repeated"] == 1
        history = [e.transition for e in gw.alarms.history(alarm.alarm_id)]
        assert history.count("acknowledged") == 1


@contextlib.asynccontextmanager
async def online(
    path: Path, http: HttpReceiver, smtp: SmtpReceiver, broker: Mosquitto, **extra: Any
) -> AsyncIterator[tuple[GasCompany, Gateway]]:
    """The gas company and a gateway whose link has said it is online."""
    async with gas_company(broker) as company, gateway(path, http, smtp, broker, **extra) as gw:
        await eventually(lambda: company.on("availability") == ["online"], what="online")
        yield company, gw


def _refused_commands(store: Store, alarm_id: str) -> list[tuple[str, str]]:
    """(officer, detail) of every refused command the trail holds under ``alarm_id``."""
    return [
        (e.recipient, e.detail)
        for e in trail(store, alarm_id)
        if (e.kind, e.result) == ("command", "refused")
    ]


async def test_a_command_published_retained_is_refused_answered_and_recorded(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    """Under MQTT 5 the broker clears the retain flag of a live delivery unless the subscription
    asks for Retain-As-Published: a retained acknowledge must still be seen as retained."""
    async with online(tmp_path, http, smtp, own_mosquitto) as (company, gw):
        alarm = await gw.raise_leak()
        command = acknowledge(alarm.alarm_id, "r1")
        await company.client.publish(
            f"{BASE}/cmd/officer-7", json.dumps(command), qos=1, retain=True
        )
        await eventually(lambda: len(company.on("reply/officer-7")) == 1, what="reply")
        (reply,) = company.on("reply/officer-7")
        jsonschema.validate(reply, schema("gasco-command-reply"))
        assert (reply["cmd_id"], reply["accepted"], reply["reason"]) == (
            "r1",
            False,
            "retained_command",
        )
        still = gw.alarms.get(alarm.alarm_id)
        assert still is not None
        assert still.state.value == "unack_active"
        ((officer, detail),) = _refused_commands(gw.store, alarm.alarm_id)
        assert officer == "officer-7"
        assert "retained_command" in detail
        assert f"{BASE}/cmd/officer-7" in detail


async def test_a_retained_command_waiting_at_the_broker_is_answered_on_connect(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with gas_company(own_mosquitto) as company:
        stale = {
            "cmd_id": "old-1",
            "alarm_id": "gw1-LONGGONE",
            "action": "resolve",
            "officer_id": "officer-7",
        }
        await company.client.publish(f"{BASE}/cmd/officer-7", json.dumps(stale), qos=1, retain=True)
        async with gateway(tmp_path, http, smtp, own_mosquitto) as gw:
            await eventually(lambda: company.on("reply/officer-7"), what="reply to the replay")
            (reply,) = company.on("reply/officer-7")
            jsonschema.validate(reply, schema("gasco-command-reply"))
            assert (reply["cmd_id"], reply["alarm_id"], reply["reason"]) == (
                "old-1",
                "gw1-LONGGONE",
                "retained_command",
            )
            await eventually(lambda: bool(_refused_commands(gw.store, "gw1-LONGGONE")))
            assert gw.service.gasco.counts["refused.retained_command"] == 1


async def test_refusals_before_the_alarm_lookup_are_in_the_audit_trail(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    """An unlisted officer trying to acknowledge a leak shows in the leak's trail (the console,
    the API and ``gasgate escalation trail``); refusals that name no alarm are kept too."""
    officers = {"url": own_mosquitto.url, "officers": ["officer-7", "mallory"]}
    async with online(tmp_path, http, smtp, own_mosquitto, gasco=officers) as (company, gw):
        started = SystemClock().now()
        alarm = await gw.raise_leak()
        attempt = {"alarm_id": alarm.alarm_id, "action": "acknowledge"}
        await company.command("stranger", cmd_id="s1", officer_id="stranger", **attempt)
        await company.command("mallory", cmd_id="m1", officer_id="officer-7", **attempt)
        await company.command("officer-7", cmd_id="b1", officer_id="officer-7", action="open")
        await company.client.publish(f"{BASE}/cmd/officer-7", b"{not json", qos=1)
        await company.client.publish(f"{BASE}/cmd/officer-7/x", b"{}", qos=1)
        await eventually(lambda: len(_refused_commands(gw.store, alarm.alarm_id)) == 2)
        by_officer = dict(_refused_commands(gw.store, alarm.alarm_id))
        assert "acknowledge: unknown_officer" in by_officer["stranger"]
        assert "acknowledge: unauthorised_topic" in by_officer["mallory"]
        assert "officer-7" in by_officer["mallory"]  # whom mallory claimed to be

        def nameless() -> list[str]:
            until = SystemClock().now() + timedelta(seconds=1)
            rows = audit.between(gw.store, started, until)
            return [e.detail for e in rows if e.kind == "command" and e.alarm_id == ""]

        await eventually(lambda: len(nameless()) == 3, what="the refusals that name no alarm")
        assert any(d.startswith("open: bad_command: alarm_id: ") for d in nameless())
        assert any("bad_json" in d for d in nameless())
        assert any("unauthorised_topic" in d and f"{BASE}/cmd/officer-7/x" in d for d in nameless())


async def test_a_flood_of_refused_commands_is_recorded_within_a_budget_and_counted(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, own_mosquitto: Mosquitto
) -> None:
    async with online(tmp_path, http, smtp, own_mosquitto) as (company, gw):
        link = gw.service.gasco
        link.refusals = RefusalBudget(SystemClock(), burst=10, per_s=2.0)  # the default, smaller
        started = SystemClock().now()
        for n in range(100):
            await company.client.publish(f"{BASE}/cmd/officer-7", f"junk {n}".encode(), qos=1)
        await eventually(lambda: link.counts["refused.bad_json"] == 100, what="all refused")

        def rows() -> list[audit.AuditEntry]:
            until = SystemClock().now() + timedelta(seconds=1)
            return [e for e in audit.between(gw.store, started, until) if e.kind == "command"]

        assert len(rows()) < 60  # the budget (10 at once, then 2 a second), not 100
        assert link.counts["refusals_unrecorded"] > 40

        def accounted() -> bool:
            """Every refusal is either a row or counted in a held-back row."""
            refused = sum(v for k, v in link.counts.items() if k.startswith("refused."))
            recorded = len([e for e in rows() if e.result == "refused"])
            held = sum(int(e.detail.split()[0]) for e in rows() if e.result == "unrecorded")
            return recorded + held == refused

        for _ in range(40):  # once the budget refills, the next refusal says what was held back
            if accounted():
                break
            await company.client.publish(f"{BASE}/cmd/officer-7", b"late junk", qos=1)
            await asyncio.sleep(0.6)  # a little over the budget's refill of one
        assert accounted(), "the trail does not say how many refusals it held back"
        assert any(e.result == "unrecorded" for e in rows())
