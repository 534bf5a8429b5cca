"""The gas company link over MQTT (docs/gas-company-contract.md).

Topics, under ``{prefix}/{gateway_id}`` (prefix ``gasco/v1`` by default):

* ``alarms/events`` (out, QoS 1): one event per alarm change, from the outbox, in order.
* ``cmd/{officer_id}`` (in, QoS 1): a duty officer's acknowledge / resolve. The broker's ACL is
  expected to let officer X publish only to ``cmd/X``; the payload's officer must match.
* ``reply/{officer_id}`` (out, QoS 1): the answer: accepted with the new state, or refused with
  a reason.
* ``availability`` (out, retained, last will): ``online`` / ``offline``.
* ``sites/{site_id}/summary`` (out, retained, periodic): the site's coverage summary.

The session is MQTT v5 with a session expiry and a stable client id, so commands published
while the gateway is away wait at the broker. The command subscription asks for
Retain-As-Published: without it a v5 broker clears the retain flag of a live delivery, and a
retained (stale) command could not be told from a person acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.alarms import Refused
from gateway.clock import Clock
from gateway.escalation import audit
from gateway.escalation.config import GascoSettings
from gateway.escalation.outbox import DeliveryFailed, OutboxItem
from gateway.escalation.ports import AlarmDesk
from gateway.model import Alarm
from gateway.mqtturl import parse_mqtt_url
from gateway.store import Store
from gateway.tasks import STOP_RECANCEL_S, cancel_and_wait

__all__ = [
    "RECONNECT_CAP_S",
    "GascoCommand",
    "GascoLink",
    "GascoTopics",
    "RefusalBudget",
    "reconnect_delay",
]

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 8 * 1024
ANSWERS_KEPT = 1024  # (officer, cmd_id) → answer, for repeated deliveries of one command
_ID = r"^[A-Za-z0-9_.:@-]{1,64}$"
RECONNECT_FIRST_S = 1.0
# Events queued during an outage wait for the reconnect: a few seconds at most, not 30 s.
RECONNECT_CAP_S = 5.0
# The audit trail takes refused commands 50 at once, then one per 10 s (a row is < 1 KB, so a
# flood that never stops adds < 10 MB a day); the rest are counted, not lost from sight.
REFUSALS_BURST = 50
REFUSALS_PER_S = 0.1
_ECHOED_CHARS = 128  # ids echoed from a refused payload: as long as a valid alarm id, no longer
_TOPIC_CHARS = 200  # a command topic as recorded in the trail

# What each refusal decided before the alarm is looked up tells the officer's console.
_WHY = {
    "unauthorised_topic": "the topic is not cmd/{officer_id}",
    "retained_command": "a retained message is not a person acting: publish with retain=false",
    "bad_payload": f"not a payload of at most {MAX_COMMAND_BYTES} bytes",
    "bad_json": "not JSON",
    "unknown_officer": "not an officer listed in escalation.gasco.officers",
}


def reconnect_delay(failures: int, rng: random.Random | None = None) -> float:
    """The wait before the next connection attempt, after ``failures`` failed ones in a row:
    doubling from 1 s up to :data:`RECONNECT_CAP_S`, each a random draw from its upper half, so
    a district's gateways that lost the gas company broker together do not return in step."""
    ceiling = min(RECONNECT_FIRST_S * 2 ** min(failures, 16), RECONNECT_CAP_S)
    return (rng or random).uniform(ceiling / 2, ceiling)


class RefusalBudget:
    """How many refused commands the audit trail takes: ``burst`` at once, then ``per_s``
    (a token bucket on the monotonic clock), so a flood of bad commands cannot fill the disk.
    What it holds back is counted, and said in one row beside the next refusal it takes."""

    def __init__(
        self, clock: Clock, *, burst: int = REFUSALS_BURST, per_s: float = REFUSALS_PER_S
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._per_s = per_s
        self._tokens = float(burst)
        self._since = clock.monotonic()
        self.held_back = 0  # since the last row that said so

    @property
    def terms(self) -> str:
        return f"{self._burst} at once, then {self._per_s:g} a second"

    def take(self) -> bool:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._since) * self._per_s)
        self._since = now
        if self._tokens < 1:
            self.held_back += 1
            return False
        self._tokens -= 1
        return True


class GascoCommand(BaseModel):
    """docs/schemas/gasco-command.schema.json"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cmd_id: Annotated[str, Field(min_length=1, max_length=64)]
    alarm_id: Annotated[str, Field(min_length=1, max_length=128)]
    action: Literal["acknowledge", "resolve"]
    officer_id: Annotated[str, Field(pattern=_ID)]
    note: Annotated[str, Field(max_length=1000)] = ""


class GascoTopics:
    def __init__(self, prefix: str, gateway_id: str) -> None:
        self.base = f"{prefix.rstrip('/')}/{gateway_id}"

    @property
    def events(self) -> str:
        return f"{self.base}/alarms/events"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def commands(self) -> str:
        """The subscription: deeper topics are caught to be refused, not ignored."""
        return f"{self.base}/cmd/#"

    def command(self, officer_id: str) -> str:
        return f"{self.base}/cmd/{officer_id}"

    def reply(self, officer_id: str) -> str:
        return f"{self.base}/reply/{officer_id}"

    def summary(self, site_id: str) -> str:
        return f"{self.base}/sites/{site_id}/summary"

    def officer_of(self, topic: str) -> str | None:
        """The officer a command topic names; None for any other topic under cmd/."""
        rest = topic.removeprefix(f"{self.base}/cmd/")
        return rest if rest != topic and rest and "/" not in rest else None


SummarySource = Callable[[], Sequence[Mapping[str, Any]]]


class GascoLink:
    """The gas company channel: drains the ``gasco`` outbox lane and answers commands.

    ``desk`` is the alarms room (acknowledge / resolve); ``summaries`` returns the current
    per-site summaries (each with a ``site_id``); ``on_connected`` is called after each
    (re)connection, so the outbox can retry at once instead of after its backoff.
    """

    name = "gasco"
    gives_up = False

    def __init__(
        self,
        settings: GascoSettings,
        gateway_id: str,
        *,
        store: Store,
        clock: Clock,
        desk: AlarmDesk | None,
        summaries: SummarySource,
        on_connected: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._gateway_id = gateway_id
        self._store = store
        self._clock = clock
        self._desk = desk
        self._summaries = summaries
        self._on_connected = on_connected
        self.topics = GascoTopics(settings.topic_prefix, gateway_id)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._summary_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._summaries_due = asyncio.Event()
        self._answered: OrderedDict[tuple[str, str], Alarm | Refused] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.refusals = RefusalBudget(clock)

    @property
    def configured(self) -> bool:
        """A gas company broker is set: this link runs (else events wait in the outbox)."""
        return self._settings.url is not None

    async def start(self) -> None:
        if not self.configured:
            log.warning("no gas company broker configured: alarm events wait in the outbox")
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gasco-link")
        self._summary_task = asyncio.get_running_loop().create_task(
            self._summary_loop(), name="gasco-summary"
        )

    async def stop(self) -> None:
        client = self._client
        if client is not None and self.connected.is_set():
            try:
                await client.publish(
                    self.topics.availability, "offline", qos=1, retain=True, timeout=2.0
                )
            except aiomqtt.MqttError as exc:
                log.warning("could not publish offline availability: %s", exc)
        # Not cancel() and gather(): a PUBACK (a summary's, a reply's, ``online``'s) or the
        # CONNACK that comes with the cancel swallows it (asyncio.wait_for on 3.11,
        # gateway/tasks.py); the task went on to its next summary round or command, and this
        # waited for good (gateway.stop() with it). Summaries end first, then the link.
        for task in (self._summary_task, self._task):
            if task is not None:
                await cancel_and_wait([task], recancel_s=STOP_RECANCEL_S)
        self._task = self._summary_task = None

    async def send(self, item: OutboxItem) -> str:
        if not self.connected.is_set():
            # Briefly: at start the first event is usually queued before the link is up.
            try:
                await asyncio.wait_for(self.connected.wait(), self._settings.publish_timeout_s)
            except TimeoutError:
                raise DeliveryFailed("gas company broker not connected") from None
        client = self._client
        if client is None:
            raise DeliveryFailed("gas company broker not connected")
        body = json.dumps(item.payload["message"], ensure_ascii=False, sort_keys=True)
        try:
            await client.publish(
                self.topics.events, body, qos=1, timeout=self._settings.publish_timeout_s
            )
        except aiomqtt.MqttError as exc:
            raise DeliveryFailed(f"publish failed: {exc}") from None
        return f"PUBACK on {self.topics.events}"

    # --- connection ------------------------------------------------------------------------

    def _logged_url(self) -> str:
        """The broker URL for logs: its password replaced by ***."""
        return str(parse_mqtt_url(self._settings.url)) if self._settings.url else "(none)"

    def _client_for(self) -> aiomqtt.Client:
        settings = self._settings
        assert settings.url is not None  # start() does not run the link without one
        url = parse_mqtt_url(settings.url)
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = settings.session_expiry_s
        password = settings.password.get_secret_value() if settings.password else url.password
        return aiomqtt.Client(
            url.host,
            url.port,
            username=settings.username or url.username,
            password=password,
            identifier=settings.client_id or f"gasgate-{self._gateway_id}-gasco",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect,
            keepalive=settings.keepalive_s,
            timeout=settings.publish_timeout_s,
            will=aiomqtt.Will(self.topics.availability, "offline", qos=1, retain=True),
            tls_context=self._tls_context(url.ca_file) if url.tls else None,
            tls_insecure=settings.tls_insecure if url.tls else None,
        )

    def _tls_context(self, url_ca: Path | None) -> ssl.SSLContext:
        settings = self._settings
        ca = settings.tls_ca or url_ca
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if settings.tls_cert:
            context.load_cert_chain(
                str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None
            )
        return context

    async def _run(self) -> None:
        failures = 0
        while True:
            delay = reconnect_delay(failures)
            try:
                async with self._client_for() as client:
                    failures, delay = 0, reconnect_delay(0)
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                self.counts["disconnects"] += 1
                log.warning(
                    "gas company broker %s: %s; retrying in %.1f s", self._logged_url(), exc, delay
                )
            except Exception:  # a bug or a bad TLS file must not end the link for good
                self.counts["link_errors"] += 1
                log.exception("gas company link failed; retrying in %.1f s", delay)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            failures += 1

    async def _session(self, client: aiomqtt.Client) -> None:
        # Retain-As-Published: the retain flag as the officer's console set it, so the
        # retained_command check sees it on live deliveries too. Retained messages only when the
        # subscription is new: a stale one is refused once, not at every reconnect.
        options = SubscribeOptions(
            qos=1,
            retainAsPublished=True,
            retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB,
        )
        await client.subscribe(self.topics.commands, options=options)
        await client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._client = client
        self.connected.set()
        self.counts["connects"] += 1
        log.info("connected to the gas company broker %s", self._logged_url())
        self._on_connected()
        self._summaries_due.set()
        async for message in client.messages:
            try:
                await self._command(str(message.topic), message.payload, retained=message.retain)
            except aiomqtt.MqttError:
                raise
            except Exception:  # one bad command (or a store error) must not end the session
                self.counts["command_errors"] += 1
                log.exception("gas company command on %s failed", message.topic)

    # --- summaries -------------------------------------------------------------------------

    async def publish_summaries(self) -> None:
        client = self._client
        if client is None:
            return
        for summary in self._summaries():
            body = json.dumps(summary, ensure_ascii=False, sort_keys=True)
            await client.publish(
                self.topics.summary(str(summary["site_id"])),
                body,
                qos=1,
                retain=True,
                timeout=self._settings.publish_timeout_s,
            )

    async def _summary_loop(self) -> None:
        """Every ``summary_interval_s``, and at once after each connection (in its own task:
        thousands of sites must not hold back a duty officer's command)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._summaries_due.wait(), self._settings.summary_interval_s
                )
            self._summaries_due.clear()
            if self.connected.is_set():
                try:
                    await self.publish_summaries()
                except aiomqtt.MqttError as exc:
                    log.warning("site summaries not published: %s", exc)
                except Exception:  # the next round tries again
                    log.exception("site summaries failed")

    # --- commands --------------------------------------------------------------------------

    async def _command(self, topic: str, payload: Any, *, retained: bool) -> None:
        command = self._parse(topic, payload, retained=retained)
        if isinstance(command, Refused):
            await self._refuse_unread(topic, payload, command)
            return
        key = (command.officer_id, command.cmd_id)
        earlier = self._answered.get(key)
        if earlier is not None:  # a QoS 1 redelivery: the same answer again, applied once
            self.counts["repeated"] += 1
            await self._reply(command.officer_id, command.model_dump(), earlier)
            return
        outcome = self._apply(command)
        self._answered[key] = outcome
        while len(self._answered) > ANSWERS_KEPT:
            self._answered.popitem(last=False)
        if isinstance(outcome, Alarm):
            result, detail = "accepted", command.note
            self.counts["accepted"] += 1
        else:
            result, detail = "refused", f"{outcome.reason}: {outcome.message}"
            self.counts[f"refused.{outcome.reason}"] += 1
        self._record(command.alarm_id, command.officer_id, result, f"{command.action}: {detail}")
        await self._reply(command.officer_id, command.model_dump(), outcome)

    async def _refuse_unread(self, topic: str, payload: Any, refused: Refused) -> None:
        """A command refused before any alarm is looked up: counted, logged, answered when its
        topic names an officer, and put in the trail of the alarm it names ('' when none)."""
        self.counts[f"refused.{refused.reason}"] += 1
        log.warning("gas company command on %s refused: %s", topic, refused.reason)
        fields = _raw_fields(payload)
        officer = self.topics.officer_of(topic)
        if officer is not None:
            await self._reply(officer, fields, refused)
        action = fields.get("action", "?")
        where = topic[:_TOPIC_CHARS]
        detail = f"{action}: {refused.reason}: {refused.message} (on {where})"
        self._record(fields.get("alarm_id", ""), officer or "", "refused", detail)

    def _record(self, alarm_id: str, officer: str, result: str, detail: str) -> None:
        """One command in the audit trail: every accepted one; refused ones within the
        :class:`RefusalBudget`, and the number it held back said in a row before the next."""
        if result == "refused" and not self.refusals.take():
            self.counts["refusals_unrecorded"] += 1
            if self.refusals.held_back == 1:
                log.warning(
                    "refused gas company commands come faster than the audit trail takes them"
                    " (%s): the rest are counted",
                    self.refusals.terms,
                )
            return
        now, held = self._clock.now(), self.refusals.held_back
        with self._store.transaction() as db:
            if held:
                why = (
                    f"{held} refused commands not recorded (the trail takes {self.refusals.terms})"
                )
                audit.note(db, "", "command", "unrecorded", why, at=now, channel="gasco")
            audit.note(
                db, alarm_id, "command", result, detail, at=now, channel="gasco", recipient=officer
            )
        self.refusals.held_back -= held

    def _parse(self, topic: str, payload: Any, *, retained: bool) -> GascoCommand | Refused:
        officer = self.topics.officer_of(topic)
        if officer is None:
            return _refusal("unauthorised_topic")
        if retained:
            return _refusal("retained_command")
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_COMMAND_BYTES:
            return _refusal("bad_payload")
        try:
            command = GascoCommand.model_validate_json(payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            if error["type"] == "json_invalid":
                return _refusal("bad_json")
            where = ".".join(str(part) for part in error["loc"])[:_ECHOED_CHARS] or "command"
            return Refused("bad_command", f"{where}: {error['msg']}")
        if command.officer_id != officer:
            why = f"officer_id {command.officer_id!r} is not the topic's officer {officer!r}"
            return Refused("unauthorised_topic", why)
        if self._settings.officers and officer not in self._settings.officers:
            return _refusal("unknown_officer")
        return command

    def _apply(self, command: GascoCommand) -> Alarm | Refused:
        if self._desk is None:
            return Refused("unavailable", "the gateway has no alarms room")
        note = command.note or None
        if command.action == "acknowledge":
            return self._desk.acknowledge(command.alarm_id, command.officer_id, note)
        return self._desk.resolve(command.alarm_id, command.officer_id, note)

    async def _reply(
        self, officer: str, fields: Mapping[str, Any], outcome: Alarm | Refused
    ) -> None:
        """docs/schemas/gasco-command-reply.schema.json"""
        client = self._client
        if client is None:
            return
        alarm = outcome if isinstance(outcome, Alarm) else None
        refused = outcome if isinstance(outcome, Refused) else None
        reply = {
            "schema": "gasgate/gasco/command-reply/1",
            "cmd_id": fields.get("cmd_id"),
            "alarm_id": fields.get("alarm_id"),
            "action": fields.get("action"),
            "officer_id": officer,
            "accepted": alarm is not None,
            "reason": refused.reason if refused else None,
            "detail": refused.message if refused else None,
            "state": alarm.state.value if alarm else None,
            "alarm_revision": alarm.revision if alarm else None,
            "at": self._clock.now().isoformat(),
        }
        try:
            await client.publish(
                self.topics.reply(officer),
                json.dumps(reply, ensure_ascii=False),
                qos=1,
                timeout=self._settings.publish_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            log.warning("reply to officer %s not published: %s", officer, exc)


def _raw_fields(payload: Any) -> dict[str, Any]:
    """Whatever ids a refused command carried, echoed so the officer's console can match it."""
    if isinstance(payload, bytes | bytearray) and len(payload) > MAX_COMMAND_BYTES:
        return {}  # not parsed: the size limit is what keeps a command cheap to read
    try:
        data = json.loads(payload)
    except (TypeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v[:_ECHOED_CHARS]
        for k in ("cmd_id", "alarm_id", "action")
        if isinstance(v := data.get(k), str)
    }


def _refusal(reason: str) -> Refused:
    return Refused(reason, _WHY[reason])
