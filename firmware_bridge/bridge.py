"""The firmware bridge: KSP/1 serial link <-> ``kit/v1`` MQTT, translation only.

* Each report from the link becomes one :class:`~gateway.contract.KitReport` on
  ``kit/v1/{device_id}/report`` (QoS 1, not retained). ``seq`` is a per-device counter kept by the
  bridge, 0..65535, wrapping, starting at 0 when the bridge starts; the KSP/1 SEQ is the
  receiver's, shared by all its devices, and only 8 bits. ``ts`` is the bridge's receive time.
  ``battery_mv`` is left out for mains-powered devices (KSP/1 sends 0 for them).
* Reports the link accepts go into an in-memory outbox, published in order while the broker is
  reachable and kept while it is not. The link acknowledges a frame only once it is in the
  outbox, so nothing acknowledged is lost short of the process dying. The outbox holds
  ``queue_limit`` messages (100 000 by default: days of reports from a full 64-device receiver,
  tens of MB); when full, new reports are refused (not ACKed, so the receiver retransmits them a
  few times), counted and logged as errors.
* ``kit/v1/_bridge/{bridge_id}/availability``: ``online`` retained; last will ``offline``
  retained, and ``offline`` published on a clean stop. ``kit/v1/_bridge/{bridge_id}/receiver``:
  the receiver status, retained, republished on every change (each heartbeat is a change: uptime)
  and on every MQTT connect. Nothing is published while the link does not know the receiver's
  state yet (from start until its first heartbeat, or ``heartbeat_timeout_s`` without one): the
  status retained from before a restart stays, instead of a made-up ``offline`` that would alarm
  the duty room at every restart. A clean stop (SIGTERM) publishes the receiver's offline status
  with ``"stopping": true`` before its ``offline`` availability: a planned stop, which the gateway
  gives a grace to come back before it pages anyone; a crash leaves only the last will.
* ``kit/v1/+/cmd`` for a radio device id (8 hex digits): a valid command runs on the link (one at a
  time per device) and its result goes to ``kit/v1/{id}/cmd/ack``. Anything else (above all
  ``open``: KSP/1 has no remote open, valves are reopened by hand on site) is answered
  ``rejected`` when an id can be read and never reaches the serial line. Retained command
  messages are stale by definition and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from firmware_bridge import ksp
from firmware_bridge.link import (
    LinkConfig,
    LinkEvent,
    PairingReceived,
    ReceiverState,
    ReportReceived,
    SerialLink,
)
from gateway import contract
from gateway.clock import Clock
from gateway.errors import RejectedInput
from gateway.mqtturl import MqttUrl
from gateway.tasks import STOP_RECANCEL_S, cancel_and_wait, until_one_ends

__all__ = ["Bridge", "BridgeConfig", "BridgeCounters", "kit_report"]

_log = logging.getLogger(__name__)

RADIO_ID = re.compile(r"[0-9a-f]{8}")
CMD_SUBSCRIPTION = f"{contract.PREFIX}/+/cmd"


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    bridge_id: str
    mqtt: MqttUrl
    queue_limit: int = 100_000
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 5.0
    drain_on_stop_s: float = 5.0  # time given to publish what is queued when stopping


@dataclass
class BridgeCounters:
    published: Counter[str] = field(default_factory=Counter)  # report, cmd_ack, receiver
    outbox_overflow: int = 0  # reports refused because the outbox was full
    lost_on_stop: int = 0  # queued messages still unpublished when the bridge stopped
    commands: Counter[str] = field(default_factory=Counter)  # forwarded to the link, by cmd
    rejected: Counter[str] = field(default_factory=Counter)  # MQTT input refused, by reason
    mqtt_connects: int = 0
    pairings: int = 0


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    kind: str


def kit_report(event: ReportReceived, seq: int) -> contract.KitReport:
    """The kit/v1 report for one decoded KSP/1 report; ``seq`` is the bridge's per-device one."""
    report = event.report
    body = report.body
    reading: dict[str, Any]
    match body:
        case ksp.DetectorBody():
            reading = {
                "detector": contract.DetectorReading(
                    lel_pct=body.lel_pct, flags=tuple(body.flags), temp_c=body.temp_c
                )
            }
        case ksp.ValveBody():
            reading = {
                "valve": contract.ValveReading(
                    state=body.state, cause=body.cause, flags=tuple(body.flags)
                )
            }
        case ksp.RegulatorBody():
            reading = {
                "regulator": contract.RegulatorReading(
                    pressure_pa=body.pressure_pa, flags=tuple(body.flags)
                )
            }
    return contract.KitReport(
        kind=report.kind,
        seq=seq,
        event=report.event,
        ts=event.received_at,
        battery_mv=report.battery_mv or None,
        rssi_dbm=report.rssi_dbm,
        **reading,
    )


def _readable_id(payload: bytes) -> str | None:
    """The command id of a payload that failed validation, if one can be read."""
    with contextlib.suppress(ValueError):
        data = json.loads(payload)
        if isinstance(data, dict):
            ident = data.get("id")
            if isinstance(ident, str) and 0 < len(ident) <= 128:
                return ident
    return None


def _reason(exc: RejectedInput, payload: bytes) -> str:
    """``unknown_cmd`` for a well-formed command KSP/1 does not have ("open"), else the reason."""
    with contextlib.suppress(ValueError):
        data = json.loads(payload)
        cmd = data.get("cmd") if isinstance(data, dict) else None
        if isinstance(cmd, str) and cmd not in set(ksp.CommandCode):
            return "unknown_cmd"
    return exc.reason


class Bridge:
    def __init__(
        self, config: BridgeConfig, link_config: LinkConfig, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.link = SerialLink(link_config, self._on_link_event, clock)
        self.counters = BridgeCounters()
        self.mqtt_connected = asyncio.Event()
        self._outbox: deque[_Outgoing] = deque()
        self._receiver_unpublished: ReceiverState | None = None  # latest, not yet on the broker
        self._wake = asyncio.Event()
        self._device_seq: dict[int, int] = {}
        self._client: aiomqtt.Client | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()
        self._stopping = False  # stop() began: the offline status says it is a planned stop

    @property
    def availability_topic(self) -> str:
        return contract.bridge_availability_topic(self.config.bridge_id)

    @property
    def queued(self) -> int:
        return len(self._outbox)

    async def start(self) -> None:
        self._mqtt_task = asyncio.create_task(self._mqtt_loop(), name="bridge-mqtt")
        await self.link.start()

    async def stop(self) -> None:
        self._stopping = True
        await self.link.stop()  # nothing new is acknowledged from here on
        for task in self._commands:
            task.cancel()
        await asyncio.gather(*self._commands, return_exceptions=True)
        await self._drain()
        if self._client is not None and self.mqtt_connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
        if self._mqtt_task:
            # Not cancel() and await: a CONNACK or PUBACK that comes with the cancel swallows it
            # (asyncio.wait_for on 3.11, gateway/tasks.py) and the session went on.
            await cancel_and_wait([self._mqtt_task], recancel_s=STOP_RECANCEL_S)
        if self._outbox:
            self.counters.lost_on_stop = len(self._outbox)
            _log.error(
                "bridge stopped with %d acknowledged message(s) unpublished: broker unreachable",
                len(self._outbox),
            )

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_on_stop_s
        while (self._outbox or self._receiver_unpublished is not None) and loop.time() < deadline:
            if not self.mqtt_connected.is_set():
                return
            await asyncio.sleep(0.05)

    # --- link -> MQTT ------------------------------------------------------------------------

    def _on_link_event(self, event: LinkEvent) -> bool:
        match event:
            case ReportReceived():
                return self._queue_report(event)
            case PairingReceived():
                # kit/v1 has no pairing topic; the registry is the source of truth for devices.
                self.counters.pairings += 1
                p = event.pairing
                _log.info(
                    "receiver %s %s %s",
                    "paired" if p.paired else "removed",
                    p.kind.value,
                    ksp.format_device_id(p.device_id),
                )
                return True
            case ReceiverState():
                self._receiver_unpublished = event  # only the latest matters
                self._wake.set()
                return True

    def _queue_report(self, event: ReportReceived) -> bool:
        report = event.report
        device = ksp.format_device_id(report.device_id)
        if len(self._outbox) >= self.config.queue_limit:
            self.counters.outbox_overflow += 1
            _log.error(
                "OUTBOX FULL (%d messages, broker unreachable): %s %s report from %s refused "
                "(not acknowledged; the receiver retransmits a few times, then it is lost)",
                len(self._outbox),
                report.event.value,
                report.kind.value,
                device,
            )
            return False
        seq = self._device_seq.get(report.device_id, 0)
        self._device_seq[report.device_id] = (seq + 1) & 0xFFFF
        payload = kit_report(event, seq).to_json()
        self._queue(_Outgoing(contract.report_topic(device), payload, "report"))
        return True

    def _queue(self, message: _Outgoing) -> None:
        self._outbox.append(message)
        self._wake.set()

    def _receiver_payload(self, state: ReceiverState) -> bytes:
        status = contract.ReceiverStatus(
            online=state.online,
            uptime_s=state.uptime_s,
            paired_count=state.paired_count,
            fw_version=state.fw_version,
            ts=state.changed_at,
            stopping=True if self._stopping and not state.online else None,
        )
        return status.model_dump_json(exclude_none=True).encode()

    # --- MQTT session ------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        delay = self.config.reconnect_initial_s
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                _log.warning("MQTT %s: %s", self.config.mqtt, group.exceptions[0])
            except* Exception:  # noqa: BLE001 - a bug must not end the bridge: retry
                _log.exception("MQTT session to %s failed", self.config.mqtt)
            if self.mqtt_connected.is_set():
                delay = self.config.reconnect_initial_s
            self.mqtt_connected.clear()
            self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.availability_topic, "offline", qos=1, retain=True)
        client = self.config.mqtt.client(
            identifier=f"gasgate-bridge-{self.config.bridge_id}", will=will, clean_session=True
        )
        async with client:
            await client.publish(self.availability_topic, "online", qos=1, retain=True)
            await client.subscribe(CMD_SUBSCRIPTION, qos=1)
            self.counters.mqtt_connects += 1
            _log.info("MQTT connected to %s (%d queued)", self.config.mqtt, len(self._outbox))
            self._client = client
            # The retained status may be stale after our absence; while the receiver's state is
            # unknown (None) the one retained stays: it is the truth as last known.
            self._receiver_unpublished = self.link.receiver
            self.mqtt_connected.set()
            # Not a TaskGroup: when the link is lost (or the session cancelled) it cancels the
            # publish loop once, and a PUBACK that comes with that cancel swallows it (asyncio.
            # wait_for on 3.11, gateway/tasks.py): the loop went back to waiting for the next
            # report, and the session with it, 'connected' still set, until a report came;
            # stop() waited for good. until_one_ends asks again until both have ended.
            tasks = [
                asyncio.create_task(self._publish_loop(client), name="bridge-mqtt-out"),
                asyncio.create_task(self._command_loop(client), name="bridge-mqtt-in"),
            ]
            await until_one_ends(tasks)  # raises the MqttError (or bug) that ended it

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            if self._receiver_unpublished is not None:
                state, self._receiver_unpublished = self._receiver_unpublished, None
                topic = contract.receiver_topic(self.config.bridge_id)
                try:
                    await client.publish(topic, self._receiver_payload(state), qos=1, retain=True)
                except BaseException:
                    if self._receiver_unpublished is None:  # unless a newer one came meanwhile
                        self._receiver_unpublished = state
                    raise
                self.counters.published["receiver"] += 1
            elif self._outbox:
                head = self._outbox[0]
                # Removed only once the broker has it (PUBACK): a reconnect republishes it.
                await client.publish(head.topic, head.payload, qos=1, retain=False)
                self._outbox.popleft()
                self.counters.published[head.kind] += 1
            else:
                self._wake.clear()
                await self._wake.wait()

    # --- MQTT -> link ------------------------------------------------------------------------

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._on_cmd_message(str(message.topic), message.payload, retain=message.retain)

    def _on_cmd_message(self, topic: str, raw: object, *, retain: bool) -> None:
        payload = raw if isinstance(raw, bytes) else b""
        try:
            _, device = contract.parse_topic(topic)
        except RejectedInput as exc:
            self._reject(exc.reason, f"{exc}", None, "")
            return
        if not RADIO_ID.fullmatch(device):
            return  # an MQTT-native device's command: not ours to carry
        if retain:
            self._reject("retained_cmd", f"{topic}: retained command ignored (stale)", None, "")
            return
        try:
            cmd = contract.decode(contract.CmdMessage, payload, topic)
        except RejectedInput as exc:
            reason = _reason(exc, payload)
            self._reject(reason, f"{exc}", _readable_id(payload), device)
            return
        self.counters.commands[cmd.cmd] += 1
        task = asyncio.create_task(self._run_command(device, cmd))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    def _reject(self, reason: str, why: str, ident: str | None, device: str) -> None:
        self.counters.rejected[reason] += 1
        if reason == "unknown_cmd":
            _log.warning("refused, never sent to the receiver (KSP/1 has no such command): %s", why)
        else:
            _log.warning("command refused (%s): %s", reason, why)
        if ident is not None:
            ack = contract.CmdAckMessage(id=ident, result=ksp.CmdResult.REJECTED)
            self._queue(
                _Outgoing(contract.cmd_ack_topic(device), ack.model_dump_json().encode(), "cmd_ack")
            )

    async def _run_command(self, device: str, cmd: contract.CmdMessage) -> None:
        device_id = int(device, 16)
        result = await self.link.send_command(device_id, cmd.cmd)
        if result is ksp.CmdResult.UNKNOWN_DEVICE and device_id not in self._device_seq:
            # Several bridges may share one site broker, each seeing every radio command. A
            # receiver that never reported this device is not its home: stay silent and let
            # the bridge whose receiver holds it answer, instead of racing it with a wrong no.
            self.counters.commands["not_behind_this_receiver"] += 1
            _log.info("command %s for %s: not behind this receiver, not answered", cmd.id, device)
            return
        ack = contract.CmdAckMessage(id=cmd.id, result=result)
        self._queue(
            _Outgoing(contract.cmd_ack_topic(device), ack.model_dump_json().encode(), "cmd_ack")
        )
