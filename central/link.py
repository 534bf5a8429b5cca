"""The center's reading side of ``gasco/v1``: the gas company's broker into :class:`Ingest`.

Three kinds of connection per instance (MQTT 5, read with gmqtt like the gateway's report
stream, :mod:`gateway.site_mqtt`):

* ``events`` (client id ``gasgate-central-{instance}-events``): alarm events and command
  replies, ``$share/{group}/...``: every message goes to one instance of the group.
* ``state`` (``...-state``): availability and site summaries, shared the same way. Apart from
  ``events`` so that a storm of summaries (a district's gateways reconnecting) never queues in
  front of an alarm: each connection has its own broker queue, batches and transactions.
* ``retained`` (``...-retained``, once at start): MQTT 5 never sends retained messages to a
  shared subscription, so an instance reads the stored availability and summaries with a
  plain subscription of its own, applies them through the same ingest and disconnects once the
  broker has been quiet for a second (bounded).

Both streams keep their session (clean start off, session expiry ``session_expiry_s``), so what
is published while an instance is away waits for it at the broker. A QoS 1 message is
acknowledged (PUBACK) only after the transaction of its batch committed: a crash, a lost
connection or a database outage before that leaves it unacknowledged, and the broker sends it
again (ingest is idempotent on (alarm_id, revision), an older summary never wins). A batch
whose transaction fails is retried, with backoff, for as long as it takes; meanwhile the
broker stops sending once ``receive_maximum`` messages are unacknowledged. A message the parser
refuses is counted by reason, logged (rate-limited) and acknowledged in its turn: sent again
it would still be broken. Acks leave in the order the messages came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import gmqtt  # type: ignore[import-untyped]
import psycopg
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50  # type: ignore[import-untyped]

from central.inbound import BadMessage, Inbound, parse, subscriptions
from central.ingest import Applied
from central.metrics import LinkMetrics
from gateway.logs import LogGate
from gateway.mqtturl import MqttUrl, no_delay, parse_mqtt_url
from gateway.tasks import cancel_and_wait

__all__ = ["Applier", "Link", "StreamSpec", "backoff"]

log = logging.getLogger(__name__)

_BROKER_TIMEOUT_S: Final = 10.0  # a connect that takes longer failed
_KEEPALIVE_S: Final = 30
_SUBACK_FAILURE: Final = 0x80
# PUBACK with remaining length 2 (the packet id): MQTT 5 lets a success omit its reason code.
_PUBACK: Final = bytes((0x40, 0x02))
_BACKOFF_START_S: Final = 0.5
_BACKOFF_MAX_S: Final = 5.0
_LOG_EVERY_S: Final = 10.0
_REFUSALS: Final = 3  # a batch the database refuses this often is split
_REFUSED_AGAIN_S: Final = 0.1
_RETAINED_QUIET_S: Final = 1.0  # the retained burst is over when nothing came for this long
_RETAINED_MAX_S: Final = 300.0  # ... or after this long (a broker that never falls quiet)
# What a summaries connection reads from its socket per turn of the event loop (asyncio reads
# 256 KiB): gmqtt hands every message of a read to on_message without returning to the loop,
# and a storm's 256 KiB (~600 summaries, parsed) held an instance's alarms for 100 ms of CPU,
# seconds on a loaded box. 16 KiB is ~40 summaries.
_SLICE_BYTES: Final = 16 * 1024
# The longest an alarm in flight holds the summaries back (their reading and their next batch):
# a burst of alarms must not stop availability and summaries for good.
# A task still running this long after its cancel is cancelled again (gateway/tasks.py): the
# batch loop's wait_for swallows a cancel that comes in the turn a message woke it (Python
# 3.11). Room for a batch's rollback, which a second cancel would cut short. A session is
# asked again later than that plus its disconnect (2 s), so as not to cut its cleanup short.
_RECANCEL_S: Final = 1.0
_RECANCEL_SESSION_S: Final = 4.0
_DEFER_MAX_S: Final = 0.25


class Applier(Protocol):
    """:class:`central.ingest.Ingest`: one transaction per batch."""

    async def apply(self, batch: Sequence[Inbound]) -> Applied: ...


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str  # events, state, retained: metric label and log word
    client_id: str
    filters: tuple[str, ...]
    persistent: bool  # session kept at the broker (clean start off, session expiry)
    batch_max: int  # messages per transaction at most
    linger_s: float  # wait this long for more before a batch (0: take what is there)
    receive_maximum: int  # unacknowledged QoS 1 messages the broker may send us


def specs(instance: str, prefix: str, group: str) -> dict[str, StreamSpec]:
    """The instance's streams. Batch sizes: an alarm goes at once with whatever arrived beside
    it; summaries wait 50 ms to fill batches of up to 2,000, one set-based upsert each.
    ``receive_maximum`` is twice the batch, so the next batch arrives while one commits."""
    shared, plain = subscriptions(prefix, group), subscriptions(prefix, None)
    base = f"gasgate-central-{instance}"
    return {
        "events": StreamSpec(
            "events", f"{base}-events", tuple(shared["events"]), True, 200, 0.0, 1000
        ),
        "state": StreamSpec(
            "state", f"{base}-state", tuple(shared["state"]), True, 2000, 0.05, 4000
        ),
        "retained": StreamSpec(
            "retained", f"{base}-retained", tuple(plain["state"]), False, 2000, 0.05, 4000
        ),
    }


def backoff(delay: float) -> tuple[float, float]:
    """(this wait, the next step): doubling from 0.5 s, capped at 5 s, each wait drawn from the
    upper half of its step so instances that lost the broker together do not return in step."""
    return random.uniform(delay / 2, delay), min(delay * 2, _BACKOFF_MAX_S)


class _HeldAcks(gmqtt.Client):  # type: ignore[misc]
    """gmqtt with the QoS 1 acknowledgements held back and no reconnects of its own.

    gmqtt (optimistic acknowledgement) asks for a message's PUBACK just before it hands the
    message to ``on_message``: the packet is kept in ``held`` instead, for the stream to send
    after the batch's commit."""

    def __init__(self, client_id: str, **options: Any) -> None:
        super().__init__(client_id, **options)
        self.held: bytes | None = None

    async def reconnect(self, delay: bool = False) -> None:
        """Nothing: the stream's loop opens a fresh client."""

    def _send_command_with_mid(self, cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        if cmd != MQTTCommands.PUBACK or dup:
            super()._send_command_with_mid(cmd, mid, dup, reason_code)
            return
        self.held = _PUBACK + mid.to_bytes(2, "big")

    def send_acks(self, acks: bytes) -> None:
        """On the connection the messages came on (a lost one: the broker sends them again)."""
        if acks and self._connection is not None:
            self._connection.send_package(acks)


class _AlarmsFirst:
    """Alarms before summaries in one instance: from an alarm's arrival until its batch is
    acknowledged, the summaries' connections stop reading and their next batch waits, each for
    ``_DEFER_MAX_S`` at most. They share the event loop (and the box's cores) with the alarm's
    transaction, whose every round trip otherwise waited behind their parsing and batches."""

    def __init__(self) -> None:
        self.clear = asyncio.Event()
        self.clear.set()
        self._transports: set[asyncio.Transport] = set()
        self._resume: asyncio.TimerHandle | None = None

    def reading(self, transport: asyncio.Transport | None, up: bool) -> None:
        """A summaries connection's transport came (``up``) or went."""
        if transport is not None:
            (self._transports.add if up else self._transports.discard)(transport)

    def hold(self) -> None:
        if self.clear.is_set():
            self.clear.clear()
            for transport in self._transports:
                transport.pause_reading()
            loop = asyncio.get_running_loop()
            self._resume = loop.call_later(_DEFER_MAX_S, self._read_again)

    def release(self) -> None:
        self.clear.set()
        self._read_again()

    def _read_again(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
            for transport in self._transports:
                if not transport.is_closing():
                    transport.resume_reading()

    async def wait(self) -> None:
        """Before a summaries batch: until no alarm is in flight, ``_DEFER_MAX_S`` at most."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.clear.wait(), _DEFER_MAX_S)


class _Stream:
    """One connection's loop: connect, subscribe, messages into batches, batches into the
    ingest, acks out. ``run`` returns only when ``until`` (retained reading) says so."""

    def __init__(
        self,
        spec: StreamSpec,
        prefix: str,
        ingest: Applier,
        metrics: LinkMetrics,
        alarms_first: _AlarmsFirst,
    ) -> None:
        self.spec = spec
        self._alarms_first = alarms_first
        self._prefix = prefix
        self._ingest = ingest
        self._metrics = metrics
        self._pending: list[tuple[Inbound | None, bytes | None]] = []
        self._wake = asyncio.Event()
        self._bad_log = LogGate(_LOG_EVERY_S)
        self._fail_log = LogGate(_LOG_EVERY_S)
        self.subscribed = False
        self.last_message = time.monotonic()
        self.busy = False  # a batch is being applied
        self.retiring = False  # unsubscribe, take in what the session holds, end the session
        self.counts: Counter[str] = Counter()

    @property
    def idle(self) -> bool:
        return not self._pending and not self.busy

    async def session(self, url: MqttUrl, session_expiry_s: int) -> None:
        """One connection, until it is lost (raises ``ConnectionError``) or cancelled."""
        spec = self.spec
        lost = asyncio.Event()
        options: dict[str, Any] = {"receive_maximum": spec.receive_maximum}
        if spec.persistent:
            options["session_expiry_interval"] = session_expiry_s
        client = _HeldAcks(spec.client_id, clean_session=not spec.persistent, logger=log, **options)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_unsubscribe = self._unsubscribed
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self._message
        if url.username is not None:
            client.set_auth_credentials(url.username, url.password)
        self._pending.clear()  # acks of another connection mean nothing on this one
        batches: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(_BROKER_TIMEOUT_S):
                await client.connect(
                    url.host,
                    url.port,
                    ssl=url.tls_context() or False,
                    keepalive=_KEEPALIVE_S,
                    version=MQTTv50,
                )
            no_delay(client)  # an ack after a commit goes out at once
            if spec.name != "events":
                _read_in_slices(client, _SLICE_BYTES)
                self._alarms_first.reading(_transport(client), True)
            self.counts["connects"] += 1
            batches = asyncio.create_task(self._batches(client), name=f"central-{spec.name}")
            lost_wait = asyncio.create_task(lost.wait())
            await asyncio.wait({batches, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            lost_wait.cancel()
            if batches.done():
                batches.result()  # a bug: raise it
        except Exception as exc:  # OSError, gmqtt's refusals, a bug: one failure for the loop
            raise ConnectionError(f"{spec.name} stream: {exc!r}") from exc
        finally:
            # Retiring and idle (nothing taken but unacknowledged): the session may end.
            ending = {"session_expiry_interval": 0} if self.retiring and self.idle else {}
            self._set_subscribed(False)
            if spec.name == "events":
                self._alarms_first.release()
            else:
                self._alarms_first.reading(_transport(client), False)
            if batches is not None:
                # Not cancel() and gather(): its wait_for (linger, alarms first) swallows a
                # cancel that comes in the turn a message woke it, and the loop waited for the
                # next message (none after a lost link: the stream never came back).
                await cancel_and_wait([batches], recancel_s=_RECANCEL_S)
            self.busy = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.disconnect(**ending)
        raise ConnectionError(f"{spec.name} stream: connection lost")

    def _set_subscribed(self, up: bool) -> None:
        self.subscribed = up
        self._metrics.link(self.spec.name, up)

    def _connected(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        if self.retiring:  # no new messages dealt to us; the session's queue still comes
            client.unsubscribe(list(self.spec.filters))
            return
        # Retain Handling 2 on the shared streams: no stored messages when subscribing. MQTT 5
        # says a shared subscription gets none anyway, but Mosquitto 2.0 sends them to every
        # member (and again at each reconnect); the retained read is what takes them in.
        handling = 0 if self.spec.name == "retained" else 2
        client.subscribe(
            [
                gmqtt.Subscription(f, qos=1, retain_handling_options=handling)
                for f in self.spec.filters
            ]
        )

    def _subscribed(self, client: Any, mid: int, qos: list[int], properties: Any) -> None:
        if any(granted >= _SUBACK_FAILURE for granted in qos):
            log.error("gas company broker refused %s (ACL?)", ", ".join(self.spec.filters))
            return
        self.last_message = time.monotonic()
        self._set_subscribed(True)
        log.info("%s stream subscribed to %s", self.spec.name, ", ".join(self.spec.filters))

    def _unsubscribed(self, client: Any, mid: int, codes: Any) -> None:
        self.last_message = time.monotonic()
        self._set_subscribed(True)  # retiring: settled
        log.info("%s stream unsubscribed (retiring)", self.spec.name)

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        ack, client.held = client.held, None
        self.counts["received"] += 1
        message: Inbound | None = None
        if self.spec.name == "retained" and not properties.get("retain"):
            pass  # live (a storm keeps them coming): a shared stream takes it; acked in turn
        else:
            self.last_message = time.monotonic()  # the retained burst: not over yet
            try:
                message = parse(self._prefix, topic, payload)
            except BadMessage as exc:
                self._bad(exc)
        self._pending.append((message, ack))
        if self.spec.name == "events":
            self._alarms_first.hold()
        if len(self._pending) == 1 or len(self._pending) >= self.spec.batch_max:
            self._wake.set()
        return 0

    def _bad(self, exc: BadMessage) -> None:
        self.counts["bad"] += 1
        self._metrics.rejected(self.spec.name, exc.reason, "bad")
        held = self._bad_log.admit(time.monotonic())
        if held is not None:
            more = f" ({held} more since the last such line)" if held else ""
            log.warning("bad gasco/v1 message (%s): %s%s", exc.reason, exc, more)

    async def _batches(self, client: _HeldAcks) -> None:
        spec = self.spec
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if spec.linger_s and len(self._pending) < spec.batch_max:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), spec.linger_s)
            else:
                await asyncio.sleep(0)  # the rest of this read joins the batch
            taken = self._pending[: spec.batch_max]
            del self._pending[: spec.batch_max]
            if spec.name != "events":
                await self._alarms_first.wait()
            self.busy = True
            await self._apply([m for m, _ in taken if m is not None])
            self.busy = False
            client.send_acks(b"".join(a for _, a in taken if a is not None))
            self.counts["acked"] += len(taken)
            if spec.name == "events" and not self._pending:
                self._alarms_first.release()

    async def _apply(self, batch: list[Inbound]) -> None:
        """Until it committed: a database outage holds the stream here, unacknowledged, for as
        long as it lasts. A batch the database *answers* with an error (it refuses something in
        it) is tried ``_REFUSALS`` times, then split in halves, so that one message it can never
        take does not hold every alarm of the city behind it; that one alone is counted
        (``refused_by_database``), logged and acknowledged."""
        if not batch:
            return
        name, delay, refusals = self.spec.name, _BACKOFF_START_S, 0
        while True:
            started = time.perf_counter()
            try:
                applied = await self._ingest.apply(batch)
            except Exception as exc:  # noqa: BLE001 (never dropped for an outage, never acked)
                self._metrics.failed(name)
                self.counts["apply_failures"] += 1
                if _unavailable(exc):
                    wait, delay = backoff(delay)
                else:  # a refusal is no outage: tried again soon, then split
                    refusals, wait = refusals + 1, _REFUSED_AGAIN_S
                    if refusals >= _REFUSALS:
                        await self._isolate(batch, exc)
                        return
                if self._fail_log.admit(time.monotonic()) is not None:
                    log.warning(
                        "%s batch of %d not applied (%r); again in %.1f s, unacknowledged",
                        name,
                        len(batch),
                        exc,
                        wait,
                    )
                await asyncio.sleep(wait)
                continue
            self._metrics.committed(name, applied, time.perf_counter() - started, len(batch))
            self.counts["applied"] += len(batch)
            return

    async def _isolate(self, batch: list[Inbound], exc: Exception) -> None:
        if len(batch) > 1:  # in order: the first half commits (and is acked) before the second
            half = len(batch) // 2
            await self._apply(batch[:half])
            await self._apply(batch[half:])
            return
        self.counts["refused"] += 1
        self._metrics.rejected(self.spec.name, "refused_by_database", "refused_by_database")
        log.error("the database refuses this %s message, acknowledged: %r (%r)", self.spec.name,
                  batch[0], exc)  # fmt: skip


def _transport(client: gmqtt.Client) -> Any:
    return getattr(getattr(client, "_connection", None), "_transport", None)


def _read_in_slices(client: gmqtt.Client, size: int) -> None:
    """At most ``size`` bytes per socket read (asyncio's transports, or TLS's, have no option
    for it: their ``max_size`` is what they ask the socket for)."""
    transport = _transport(client)
    for reader in (transport, getattr(transport, "_ssl_protocol", None)):
        if reader is not None and hasattr(reader, "max_size"):
            reader.max_size = size


def _unavailable(exc: Exception) -> bool:
    """The database away or overloaded (retry for ever), not refusing what it was given.
    (Serialization failures and deadlocks are OperationalErrors too: retried.)"""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError)


class Link:
    """The instance's streams; ``start`` returns at once, the connections come up (and come
    back) by themselves. :meth:`ready` says which are subscribed (for ``/readyz``).
    ``running``: the streams ``start`` runs (``state`` with the retained read at start): an
    instance runs ``events`` and its state process ``state`` (:mod:`central.state_process`)."""

    def __init__(
        self,
        url: str,
        *,
        instance: str,
        group: str,
        prefix: str,
        session_expiry_s: int,
        ingest: Applier,
        metrics: LinkMetrics,
        running: tuple[str, ...] = ("events", "state"),
    ) -> None:
        self._url_text = url
        self._running = running
        self._session_expiry_s = session_expiry_s
        alarms_first = _AlarmsFirst()
        self.streams = {
            name: _Stream(spec, prefix, ingest, metrics, alarms_first)
            for name, spec in specs(instance, prefix, group).items()
        }
        self.retained_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        url = parse_mqtt_url(self._url_text)  # a bad URL fails the start, not a retry loop
        self._tasks = [
            asyncio.create_task(self._forever(self.streams[n], url), name=f"central-{n}")
            for n in self._running
        ]
        if "state" in self._running:
            self._tasks.append(asyncio.create_task(self._retained(url), name="central-retained"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks, recancel_s=_RECANCEL_SESSION_S)

    def ready(self) -> dict[str, bool]:
        return {f"{n}_link": self.streams[n].subscribed for n in self._running}

    async def retire(self, quiet_s: float = 2.0, within_s: float = 600.0) -> int:
        """End this instance's broker sessions for good, without losing what they hold: the
        shared filters are unsubscribed (no new messages dealt to it), what the sessions had
        queued is taken in as usual, and once both have been quiet for ``quiet_s`` they are
        closed with session expiry 0. Returns the messages taken in. (A broker such as
        Mosquitto keeps dealing a share to an absent member's session until it expires.)"""
        url = parse_mqtt_url(self._url_text)
        streams = [self.streams["events"], self.streams["state"]]
        for stream in streams:
            stream.retiring = True
        tasks = [asyncio.create_task(self._forever(s, url)) for s in streams]
        deadline = time.monotonic() + within_s
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                now = time.monotonic()
                if all(
                    s.subscribed and s.idle and now - s.last_message >= quiet_s for s in streams
                ):
                    break
            else:
                raise TimeoutError(f"sessions still busy after {within_s:.0f} s; not ended")
        finally:
            await cancel_and_wait(tasks, recancel_s=_RECANCEL_SESSION_S)
        return sum(s.counts["received"] for s in streams)

    async def _forever(self, stream: _Stream, url: MqttUrl) -> None:
        await _retry(stream, lambda: stream.session(url, self._session_expiry_s), url)

    async def _retained(self, url: MqttUrl) -> None:
        """Read the retained availability and summaries once, then leave."""
        stream = self.streams["retained"]
        started = time.monotonic()
        session = asyncio.create_task(
            _retry(stream, lambda: stream.session(url, 0), url), name="central-retained-session"
        )
        try:
            while not session.done():
                await asyncio.sleep(0.2)
                quiet = time.monotonic() - stream.last_message >= _RETAINED_QUIET_S
                if stream.subscribed and quiet and stream.idle:
                    break
                if time.monotonic() - started > _RETAINED_MAX_S:
                    log.warning("retained messages still coming after %.0f s", _RETAINED_MAX_S)
                    break
        finally:
            await cancel_and_wait([session], recancel_s=_RECANCEL_SESSION_S)
        log.info(
            "retained availability and summaries read: %d applied in %.1f s",
            stream.counts["applied"],
            time.monotonic() - started,
        )
        self.retained_done.set()


async def _retry(stream: _Stream, session: Callable[[], Awaitable[None]], url: MqttUrl) -> None:
    """``session`` again and again, forever, with backoff after each failure."""
    delay = _BACKOFF_START_S
    while True:
        connects = stream.counts["connects"]
        try:
            await session()
        except ConnectionError as exc:
            stream.counts["disconnects"] += 1
            if stream.counts["connects"] > connects:
                delay = _BACKOFF_START_S  # it was up: a fresh outage starts the backoff again
            wait, delay = backoff(delay)
            log.warning("gas company broker %s: %s; retrying in %.1f s", url, exc, wait)
            await asyncio.sleep(wait)
