"""The gateway's link to the site broker: ``kit/v1/#`` in, commands and availability out.

Two connections, one link (``connected`` is set only while both stand):

* In, the report stream: every message on ``kit/v1/#`` goes to
  ``on_message(topic, payload, retained)`` (the ingest), one at a time in arrival order.
  ``retained`` is the broker's word that the message is a stored one sent on subscribing: old
  news, never a fresh fact. The session is persistent (``clean_session=False`` with the stable
  client id), so QoS 1 reports sent while the gateway restarts wait for it at the broker. It is
  read with gmqtt, not aiomqtt: this is the gateway's hottest path, and gmqtt (an asyncio
  protocol parsing its read buffer) costs about a quarter of paho's per-message CPU under
  aiomqtt (23-27 µs against 105-138 µs per QoS 1 message on the bench box,
  docs/performance.md, P1).
* A QoS 1 message is acknowledged (PUBACK) only once what it caused is done: the acks of one
  read are handed to ``settled`` (the bus's ``when_done``), which sends them after every event
  the read's messages published, and everything those caused, was handled; a leak's alarm is
  committed to disk by then. A ``kill -9`` before that leaves the messages unacknowledged, and
  the broker sends them again to the next process on the same session.
* Out, on the control connection (aiomqtt, client id ``<id>-out``, no session kept):
  :meth:`publish` never blocks and never fails: it appends to an ordered queue that a sender
  task drains with QoS 1. A message leaves the queue only when the broker has
  acknowledged it (then its ``on_sent`` runs); after a lost connection the unacknowledged rest
  is sent again, in order, on the next connection (at least once: receivers drop duplicates
  by command id).
* Availability: ``gasgate/v1/{gateway_id}/availability`` is ``online`` (retained) while the
  control connection stands, ``offline`` on a clean stop and, as its last will, on a crash
  or lost link.
* Reconnects with exponential backoff (0.5 s doubling to ``backoff_max_s``), forever, each
  connection in its own loop here; the report stream subscribes again on every connection (a
  broker that lost its sessions has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import aiomqtt
from gmqtt.mqtt.constants import MQTTv311  # type: ignore[import-untyped]

from gateway.mqtturl import MqttUrl, no_delay, parse_mqtt_url
from gateway.stream_client import Settled, StreamClient, at_once
from gateway.tasks import STOP_RECANCEL_S, cancel_and_wait, until_one_ends

__all__ = ["SUBSCRIPTION", "SiteMqtt", "gateway_availability_topic"]

log = logging.getLogger(__name__)

SUBSCRIPTION: Final = "kit/v1/#"
_BATCH: Final = 100  # publishes in flight at once; paho sends them in call order
_BROKER_TIMEOUT_S: Final = 10.0  # a connect or an acknowledgement that takes longer failed
_SUBACK_FAILURE: Final = 0x80


OnMessage: TypeAlias = Callable[[str, bytes, bool], None]  # topic, payload, retained
OnSent: TypeAlias = Callable[[], None] | None


def gateway_availability_topic(gateway_id: str) -> str:
    return f"gasgate/v1/{gateway_id}/availability"


class _ReportStream:
    """The inbound connection: ``kit/v1/#`` with QoS 1 on a persistent session, read by gmqtt.

    :meth:`run` connects, subscribes, says so through ``on_state(True)`` and returns (raising
    ``aiomqtt.MqttError``) only when the connection is lost or cannot be made.
    """

    def __init__(
        self,
        client_id: str,
        keepalive_s: int,
        on_message: OnMessage,
        on_state: Callable[[bool], None],
        settled: Settled,
    ) -> None:
        self._client_id = client_id
        self._keepalive_s = keepalive_s
        self._on_message = on_message
        self._on_state = on_state
        self._settled = settled

    async def run(self, url: MqttUrl) -> None:
        lost = asyncio.Event()
        client = StreamClient(self._client_id, self._settled, clean_session=False, logger=log)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self._message
        if url.username is not None:
            client.set_auth_credentials(url.username, url.password)
        try:
            async with asyncio.timeout(_BROKER_TIMEOUT_S):  # a broker that never answers
                await client.connect(
                    url.host,
                    url.port,
                    ssl=url.tls_context() or False,
                    keepalive=self._keepalive_s,
                    version=MQTTv311,
                )
            no_delay(client)  # the acks, after a commit, go out at once
            await lost.wait()
        except Exception as exc:  # OSError, gmqtt's refusals: one failure type for the loop
            raise aiomqtt.MqttError(f"report stream: {exc!r}") from exc
        finally:
            self._on_state(False)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.disconnect()
        raise aiomqtt.MqttError("report stream: connection lost")

    def _connected(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        client.subscribe(SUBSCRIPTION, qos=1)

    def _subscribed(self, client: Any, mid: int, qos: list[int], properties: Any) -> None:
        if any(granted >= _SUBACK_FAILURE for granted in qos):
            log.error("site broker refused the subscription to %s (ACL?)", SUBSCRIPTION)
            return
        self._on_state(True)

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self._on_message(topic, payload, bool(properties.get("retain")))
        return 0


class SiteMqtt:
    def __init__(
        self,
        url: str,
        client_id: str,
        gateway_id: str,
        on_message: OnMessage,
        *,
        settled: Settled = at_once,
        keepalive_s: int = 30,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._url_text = url
        self._client_id = client_id
        self._availability = gateway_availability_topic(gateway_id)
        self._on_message = on_message
        self._keepalive_s = keepalive_s
        self._backoff_max_s = backoff_max_s
        self._queue: deque[tuple[str, bytes, bool, OnSent]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: aiomqtt.Client | None = None
        self._stream = _ReportStream(
            client_id, keepalive_s, self._receive, self._stream_state, settled
        )
        self._up = {"control": False, "stream": False}
        self.connected = asyncio.Event()
        self.counts: Counter[str] = Counter()

    @property
    def queued(self) -> int:
        """Messages not yet acknowledged by the broker."""
        return len(self._queue)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, on_sent: OnSent = None
    ) -> None:
        """Queue a QoS 1 message; sent in order as soon as (and whenever) the broker is up.
        ``on_sent`` runs when the broker has acknowledged it."""
        self._queue.append((topic, payload, retain, on_sent))
        self.counts["queued"] += 1
        self._drained.clear()
        self._wake.set()

    async def start(self) -> None:
        url = parse_mqtt_url(self._url_text)  # a bad URL fails the start, not a retry loop
        self._tasks = [
            asyncio.create_task(self._retry(self._control, url, "connects"), name="site-out"),
            asyncio.create_task(
                self._retry(self._stream.run, url, "stream_connects"), name="site-in"
            ),
        ]

    async def stop(self, drain_s: float = 2.0) -> None:
        """Send what is queued (bounded), say ``offline``, disconnect."""
        client = self._client
        if client is not None and self._up["control"]:
            self.publish(self._availability, b"offline", retain=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_s)
        tasks, self._tasks = self._tasks, []
        # Not cancel() and gather(): a CONNACK or the ``online`` PUBACK that comes with the
        # cancel swallows it (asyncio.wait_for on 3.11, gateway/tasks.py), the control session
        # went on to send the queue, and this waited for good (gateway.stop() with it).
        await cancel_and_wait(tasks, recancel_s=STOP_RECANCEL_S)
        if self._queue:
            log.warning("site MQTT stopped with %d message(s) unsent", len(self._queue))

    def _set_up(self, side: str, up: bool) -> None:
        self._up[side] = up
        if all(self._up.values()):
            self.connected.set()
        else:
            self.connected.clear()

    def _stream_state(self, up: bool) -> None:
        if up and not self._up["stream"]:
            self.counts["stream_connects"] += 1
            log.info("site broker report stream subscribed to %s", SUBSCRIPTION)
        self._set_up("stream", up)

    def _receive(self, topic: str, payload: bytes, retained: bool) -> None:
        self.counts["received"] += 1
        try:
            self._on_message(topic, payload, retained)
        except Exception:
            # The ingest counts and logs bad input itself; this is a bug, not bad input.
            self.counts["handler_errors"] += 1
            log.exception("handling %s failed", topic)

    async def _retry(
        self, session: Callable[[MqttUrl], Awaitable[None]], url: MqttUrl, counter: str
    ) -> None:
        """Run ``session`` again and again, with backoff after each failure, forever."""
        delay = 0.5
        while True:
            connects = self.counts[counter]
            try:
                await session(url)
            except aiomqtt.MqttError as exc:
                self.counts["disconnects"] += 1
                if self.counts[counter] > connects:
                    delay = 0.5  # it was up: a fresh outage starts the backoff again
                side = "report stream" if counter == "stream_connects" else "control link"
                log.warning("site broker %s, %s: %s; again in %.1f s", url, side, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def _control(self, url: MqttUrl) -> None:
        """One control session: availability and the outgoing queue, until the link fails."""
        will = aiomqtt.Will(self._availability, b"offline", qos=1, retain=True)
        client = url.client(
            identifier=f"{self._client_id}-out",
            will=will,
            keepalive=self._keepalive_s,
            timeout=_BROKER_TIMEOUT_S,
        )
        async with client:
            self._client = client
            try:
                await client.publish(self._availability, b"online", qos=1, retain=True)
                self.counts["connects"] += 1
                self._set_up("control", True)
                log.info("site broker %s connected, %d message(s) queued", url, len(self._queue))
                await self._pump(client)
            finally:
                self._set_up("control", False)
                self._client = None

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Send until the connection fails; the failure ends the session."""
        tasks = [
            # Nothing is subscribed here: the iteration only ends, raising, when the link does.
            asyncio.create_task(self._watch(client), name="site-mqtt-watch"),
            asyncio.create_task(self._send(client), name="site-mqtt-out"),
        ]
        # The sender's publishes are gathered, and a gather passes its cancel on though a
        # publish swallowed it; cancel_and_wait (in until_one_ends) holds if the sender ever
        # awaits one alone. Re-raises the MqttError that ended the session.
        await until_one_ends(tasks)

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        async for _ in client.messages:
            pass

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue[i] for i in range(min(len(self._queue), _BATCH))]
            results = await asyncio.gather(
                *(
                    client.publish(topic, payload, qos=1, retain=retain)
                    for topic, payload, retain, _ in batch
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise aiomqtt.MqttError(f"publish failed: {result}")
                on_sent = self._queue.popleft()[3]
                self.counts["sent"] += 1
                if on_sent is not None:
                    _report_sent(on_sent)
            if not self._queue:
                self._drained.set()


def _report_sent(on_sent: Callable[[], None]) -> None:
    try:
        on_sent()
    except Exception:  # a bug in the caller's bookkeeping must not stop the sender
        log.exception("on_sent callback failed")
