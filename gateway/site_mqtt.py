"""The gateway's one client on the site broker: ``kit/v1/#`` in, commands and availability out.

* In: every message on ``kit/v1/#`` goes to ``on_message(topic, payload)`` (the ingest), one at
  a time in arrival order. The session is persistent (``clean_session=False`` with a stable
  client id), so QoS 1 reports sent while the gateway restarts wait for it at the broker.
* Out: :meth:`publish` never blocks and never fails: it appends to an ordered queue that a
  sender task drains with QoS 1. A message leaves the queue only when the broker has
  acknowledged it; after a lost connection the unacknowledged rest is sent again, in order,
  on the next connection (at least once: receivers drop duplicates by command id).
* Availability: ``gasgate/v1/{gateway_id}/availability`` is ``online`` (retained) while
  connected, ``offline`` on a clean stop and, as the last will, on a crash or lost link.
* Reconnects with exponential backoff (0.5 s doubling to ``backoff_max_s``), forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import Final

import aiomqtt

from gateway.mqtturl import MqttUrl, parse_mqtt_url

__all__ = ["SUBSCRIPTION", "SiteMqtt", "gateway_availability_topic"]

log = logging.getLogger(__name__)

SUBSCRIPTION: Final = "kit/v1/#"
_BATCH: Final = 100  # publishes in flight at once; paho sends them in call order
_PUBLISH_TIMEOUT_S: Final = 10.0


def gateway_availability_topic(gateway_id: str) -> str:
    return f"gasgate/v1/{gateway_id}/availability"


class SiteMqtt:
    def __init__(
        self,
        url: str,
        client_id: str,
        gateway_id: str,
        on_message: Callable[[str, bytes], None],
        *,
        keepalive_s: int = 30,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._url_text = url
        self._client_id = client_id
        self._availability = gateway_availability_topic(gateway_id)
        self._on_message = on_message
        self._keepalive_s = keepalive_s
        self._backoff_max_s = backoff_max_s
        self._queue: deque[tuple[str, bytes, bool]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.counts: Counter[str] = Counter()

    @property
    def queued(self) -> int:
        """Messages not yet acknowledged by the broker."""
        return len(self._queue)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 message; sent in order as soon as (and whenever) the broker is up."""
        self._queue.append((topic, payload, retain))
        self.counts["queued"] += 1
        self._drained.clear()
        self._wake.set()

    async def start(self) -> None:
        url = parse_mqtt_url(self._url_text)  # a bad URL fails the start, not a retry loop
        self._task = asyncio.create_task(self._run(url), name="site-mqtt")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Send what is queued (bounded), say ``offline``, disconnect."""
        client = self._client
        if client is not None and self.connected.is_set():
            self.publish(self._availability, b"offline", retain=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_s)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            log.warning("site MQTT stopped with %d message(s) unsent", len(self._queue))

    async def _run(self, url: MqttUrl) -> None:
        delay = 0.5
        while True:
            connects = self.counts["connects"]
            try:
                await self._session(url)
            except aiomqtt.MqttError as exc:
                self.counts["disconnects"] += 1
                if self.counts["connects"] > connects:
                    delay = 0.5  # it was up: a fresh outage starts the backoff again
                log.warning("site broker %s: %s; reconnecting in %.1f s", url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def _session(self, url: MqttUrl) -> None:
        will = aiomqtt.Will(self._availability, b"offline", qos=1, retain=True)
        client = url.client(
            identifier=self._client_id,
            will=will,
            clean_session=False,
            keepalive=self._keepalive_s,
            timeout=_PUBLISH_TIMEOUT_S,
            # Without it Nagle holds a close_valve behind the broker's delayed ACK (~40 ms).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        async with client:
            self._client = client
            try:
                await client.subscribe(SUBSCRIPTION, qos=1)
                await client.publish(self._availability, b"online", qos=1, retain=True)
                self.counts["connects"] += 1
                self.connected.set()
                log.info("site broker %s connected, %d message(s) queued", url, len(self._queue))
                await self._pump(client)
            finally:
                self.connected.clear()
                self._client = None

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Receive and send until one side fails; the failure ends the session."""
        tasks = {
            asyncio.create_task(self._receive(client), name="site-mqtt-in"),
            asyncio.create_task(self._send(client), name="site-mqtt-out"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise the MqttError that ended it

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            self.counts["received"] += 1
            try:
                self._on_message(message.topic.value, data)
            except Exception:
                # The ingest counts and logs bad input itself; this is a bug, not bad input.
                self.counts["handler_errors"] += 1
                log.exception("handling %s failed", message.topic.value)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue[i] for i in range(min(len(self._queue), _BATCH))]
            results = await asyncio.gather(
                *(
                    client.publish(topic, payload, qos=1, retain=retain)
                    for topic, payload, retain in batch
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise aiomqtt.MqttError(f"publish failed: {result}")
                self._queue.popleft()
                self.counts["sent"] += 1
            if not self._queue:
                self._drained.set()
