"""An MQTT-native kit device (a 4G / Wi-Fi model) speaking kit/v1 straight to the site broker.

Topics and payloads come from :mod:`gateway.contract`; the device's state is one of the same
model classes the simulated receiver uses (:mod:`firmware_bridge.simulator.devices`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDevice, make_device
from gateway.contract import (
    CmdAckMessage,
    CmdMessage,
    KitReport,
    cmd_ack_topic,
    cmd_topic,
    decode,
    device_availability_topic,
    report_topic,
)
from gateway.errors import RejectedInput
from gateway.mqtturl import MqttUrl, parse_mqtt_url
from gateway.tasks import cancel_and_wait, until_one_ends

__all__ = ["MqttDevice", "MqttDeviceStats"]

log = logging.getLogger(__name__)

_OUTBOX_LIMIT = 1000  # reports a device buffers while its uplink is down; older ones are lost
_RECANCEL_RUN_S = 3.0  # longer than _say_offline's bound


@dataclass(slots=True)
class MqttDeviceStats:
    reports_published: int = 0
    reports_lost: int = 0  # outbox overflow while disconnected
    commands: list[CmdMessage] = field(default_factory=list)
    acks_sent: Counter[str] = field(default_factory=Counter)  # by result
    bad_commands: Counter[str] = field(default_factory=Counter)  # by RejectedInput reason
    connections: int = 0


class MqttDevice:
    """A kit device on ``kit/v1/{device_id}/...``; ``model`` holds (and changes) its state."""

    def __init__(
        self,
        broker_url: str,
        device_id: str,
        kind: ksp.DeviceKind,
        *,
        model: SimDevice | None = None,
        battery_mv: int = 0,
        time_scale: float = 1.0,
        reconnect_s: float = 1.0,
    ) -> None:
        self.broker_url = broker_url
        self.device_id = device_id
        self.model = model or make_device(kind, 0, battery_mv=battery_mv, time_scale=time_scale)
        if self.model.kind is not kind:
            raise ValueError(f"{device_id}: model is a {self.model.kind}, not a {kind}")
        self.kind = kind
        self.reconnect_s = reconnect_s
        self.stats = MqttDeviceStats()
        self.online = asyncio.Event()  # set while connected and subscribed
        self._seq = 0
        self._outbox: deque[KitReport] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect in the background (and keep reconnecting); the model starts reporting."""
        broker = parse_mqtt_url(self.broker_url)  # a bad URL fails here, not in the background
        self.model.connect(self._on_report)
        self._task = asyncio.create_task(self._run(broker), name=f"mqtt-{self.device_id}")
        await self.model.start()

    async def stop(self) -> None:
        """Power off cleanly: ``offline`` is published (a crash leaves it to the last will)."""
        await self.model.stop()
        self.model.disconnect(self._on_report)
        task, self._task = self._task, None
        if task is not None:
            # Asked again if a connect's or publish's acknowledgement swallowed the cancel;
            # not before the ``offline`` publish (2 s at most) has had its time.
            await cancel_and_wait([task], recancel_s=_RECANCEL_RUN_S)
            if not task.cancelled():
                task.result()  # a failure of its own, not the cancel: said as before

    def _on_report(self, device: SimDevice, event: ksp.Event) -> None:
        report = device.kit_report(event, self._seq, datetime.now(UTC))
        self._seq = (self._seq + 1) & 0xFFFF
        if len(self._outbox) >= _OUTBOX_LIMIT:
            self._outbox.popleft()
            self.stats.reports_lost += 1
        self._outbox.append(report)
        self._wake.set()

    async def _run(self, broker: MqttUrl) -> None:
        availability = device_availability_topic(self.device_id)
        will = aiomqtt.Will(availability, "offline", qos=1, retain=True)
        warned = False  # one line per outage, not one per retry
        while True:
            client = broker.client(identifier=f"sim-{self.device_id}", will=will)
            try:
                async with client:
                    try:
                        await self._session(client, availability)
                    except asyncio.CancelledError:
                        await self._say_offline(client, availability)
                        raise
            except aiomqtt.MqttError as exc:
                if self.online.is_set() or not warned:
                    log.info("%s: no broker link (%s), retrying", self.device_id, exc)
                warned = True
            finally:
                self.online.clear()
            await asyncio.sleep(self.reconnect_s)

    async def _session(self, client: aiomqtt.Client, availability: str) -> None:
        await client.subscribe(cmd_topic(self.device_id), qos=1)
        await client.publish(availability, "online", qos=1, retain=True)
        self.stats.connections += 1
        self.online.set()
        # Either half ends only by failing (the link dropped); the other is then stopped too.
        tasks = [
            asyncio.create_task(self._publish_reports(client)),
            asyncio.create_task(self._answer_commands(client)),
        ]
        # Not cancel() and gather(): a publish whose PUBACK came with the cancel swallowed it,
        # and the gather waited for good (the broker-restart test hung in Kit.stop()).
        await until_one_ends(tasks)  # re-raises the MqttError that ended the session

    @staticmethod
    async def _say_offline(client: aiomqtt.Client, availability: str) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async with asyncio.timeout(2.0):
                await client.publish(availability, "offline", qos=1, retain=True)

    async def _publish_reports(self, client: aiomqtt.Client) -> None:
        topic = report_topic(self.device_id)
        while True:
            while self._outbox:
                # Taken off the outbox only once the broker has it (QoS 1 PUBACK).
                await client.publish(topic, self._outbox[0].to_json(), qos=1)
                self._outbox.popleft()
                self.stats.reports_published += 1
            self._wake.clear()
            await self._wake.wait()

    async def _answer_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            ack, command = self._judge(payload, message.topic.value)
            if ack is None:
                continue
            await client.publish(cmd_ack_topic(self.device_id), ack.model_dump_json(), qos=1)
            self.stats.acks_sent[ack.result] += 1
            if command is not None and ack.result is ksp.CmdResult.OK:
                self.model.execute(command.cmd)  # after the ack, so its report follows it

    def _judge(self, payload: bytes, topic: str) -> tuple[CmdAckMessage | None, CmdMessage | None]:
        """The answer to one cmd message; ``rejected`` for anything but a known command."""
        try:
            command = decode(CmdMessage, payload, topic)
        except RejectedInput as exc:
            self.stats.bad_commands[exc.reason] += 1
            log.warning("%s: command refused: %s", self.device_id, exc)
            ident = _command_id(payload)
            if ident is None:
                return None, None  # no id to answer to
            return CmdAckMessage(id=ident, result=ksp.CmdResult.REJECTED), None
        self.stats.commands.append(command)
        if self.model.silent:
            return None, None  # a dead device answers nothing
        ok = self.model.accepts(command.cmd)
        result = ksp.CmdResult.OK if ok else ksp.CmdResult.REJECTED
        return CmdAckMessage(id=command.id, result=result), command


def _command_id(payload: bytes) -> str | None:
    """The ``id`` of a command that failed validation, if it has a usable one."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    ident = data.get("id") if isinstance(data, dict) else None
    return ident if isinstance(ident, str) and 0 < len(ident) <= 128 else None
