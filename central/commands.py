"""Officer commands to the gateways: the ``commands`` table is an outbox, this room sends it.

The API inserts a row (``sent_at`` NULL) and ``NOTIFY gasgate_central_cmd`` in the officer's
transaction. Every instance runs a sender; each takes unsent rows with ``FOR UPDATE SKIP
LOCKED`` (two instances never take the same row), publishes each on
``{prefix}/{gateway_id}/cmd/{officer}`` (QoS 1, not retained: a gateway refuses a retained
command) and, once the broker acknowledged it (PUBACK), sets ``sent_at``, adds a ``command``
entry to the incident's timeline and NOTIFYs the consoles, all in the transaction that held the
row lock. A crash between the PUBACK and the commit sends the row again later with the same
``cmd_id``; the gateway applies a ``cmd_id`` once and answers the repeat with the same reply.

Sent is not delivered: the broker keeps the command in the gateway's persistent session (clean
start off, 7 days by default) while the gateway is away and hands it over when it returns. The
gateway's ``reply/{officer}`` (the ingest) says what became of it.

The sender wakes on the NOTIFY (its own LISTEN connection) and looks every second anyway, so a
notification lost with a database connection delays a command by a second, never for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

import aiomqtt
import psycopg
from psycopg_pool import AsyncConnectionPool

from central.db import CMD_CHANNEL, notify
from central.link import backoff
from central.metrics import CentralMetrics
from gateway.mqtturl import MqttUrl, parse_mqtt_url
from gateway.tasks import cancel_and_wait, until_one_ends

__all__ = ["CommandSender", "command_payload", "command_topic"]

log = logging.getLogger(__name__)

_LOOK_EVERY_S: Final = 1.0
_TAKE: Final = 100  # rows per transaction
_BROKER_TIMEOUT_S: Final = 10.0
# A task still running this long after its cancel is cancelled again: room for a transaction's
# rollback, which a second cancel would cut short. stop() asks its tasks again later than the
# session asks its own, so as not to cut the session's cleanup (and disconnect) short.
_RECANCEL_S: Final = 0.5
_RECANCEL_STOP_S: Final = 2.0
_TAKE_SQL: Final = """
SELECT cmd_id, incident_id, gateway_id, alarm_id, officer, action, note FROM commands
 WHERE sent_at IS NULL ORDER BY created_at, cmd_id LIMIT %s FOR UPDATE SKIP LOCKED
"""
_MARK_SQL: Final = """
WITH sent AS (
    UPDATE commands SET sent_at = now() WHERE cmd_id = ANY(%(ids)s)
    RETURNING cmd_id, incident_id, alarm_id, officer, action)
INSERT INTO timeline (incident_id, at, kind, actor, detail)
SELECT incident_id, now(), 'command', officer,
       jsonb_build_object('cmd_id', cmd_id, 'alarm_id', alarm_id, 'action', action,
                          'event', 'sent', 'instance', %(instance)s::text)
  FROM sent WHERE incident_id IS NOT NULL ORDER BY cmd_id
"""


def command_topic(prefix: str, gateway_id: str, officer: str) -> str:
    return f"{prefix}/{gateway_id}/cmd/{officer}"


def command_payload(
    cmd_id: str, alarm_id: str, action: str, officer: str, note: str | None
) -> bytes:
    """docs/schemas/gasco-command.schema.json (no ``note`` key when there is none)."""
    body: dict[str, str] = {
        "cmd_id": cmd_id,
        "alarm_id": alarm_id,
        "action": action,
        "officer_id": officer,
    }
    if note:
        body["note"] = note[:1000]
    return json.dumps(body, ensure_ascii=False).encode()


class CommandSender:
    """``start`` returns at once; the broker connection and the LISTEN connection come (and
    come back) by themselves."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        dsn: str,
        url: str,
        *,
        instance: str,
        prefix: str,
        metrics: CentralMetrics,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._url_text = url
        self._instance = instance
        self._prefix = prefix
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.sent = 0

    async def start(self) -> None:
        url = parse_mqtt_url(self._url_text)
        self._tasks = [
            asyncio.create_task(self._listen(), name="central-cmd-listen"),
            asyncio.create_task(self._send_forever(url), name="central-cmd-send"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        # Not cancel() and gather(): a CONNACK that comes with the cancel swallows it
        # (asyncio.wait_for on 3.11, gateway/tasks.py), the sender went on into its session,
        # and this waited for good.
        await cancel_and_wait(tasks, recancel_s=_RECANCEL_STOP_S)

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN gasgate_central_cmd: each notification wakes the sender."""
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CMD_CHANNEL}")
                    delay = 0.5
                    self._wake.set()  # rows inserted while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                wait, delay = backoff(delay)
                log.warning("command LISTEN connection: %s; again in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    async def _send_forever(self, url: MqttUrl) -> None:
        delay = 0.5
        while True:
            try:
                async with url.client(
                    identifier=f"gasgate-central-{self._instance}-cmd",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=30,
                    timeout=_BROKER_TIMEOUT_S,
                ) as client:
                    self.connected, delay = True, 0.5
                    log.info("command sender connected to %s", url)
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                wait, delay = backoff(delay)
                log.warning("command sender, broker %s: %s; again in %.1f s", url, exc, wait)
                await asyncio.sleep(wait)
            finally:
                self.connected = False

    async def _session(self, client: aiomqtt.Client) -> None:
        """Send until the connection is lost: nothing is subscribed, so the message iteration
        ends (raising) only when the link does, and the sender learns it before a publish."""
        tasks = [
            asyncio.create_task(self._loop(client), name="central-cmd-loop"),
            asyncio.create_task(_watch(client), name="central-cmd-watch"),
        ]
        # Not cancel() and gather(): the loop's publishes are gathered (a gather passes its
        # cancel on though a publish swallowed it), but its wait for a NOTIFY is a wait_for: a
        # wake in the same turn as the cancel swallowed it, and the loop went on, the session
        # over. Raises the MqttError that ended it.
        await until_one_ends(tasks, recancel_s=_RECANCEL_S)
        raise aiomqtt.MqttError("connection lost")

    async def _loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            try:
                await self.send_pending(client)
            except (psycopg.Error, OSError, TimeoutError) as exc:  # the database away
                log.warning("commands not sent now: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _LOOK_EVERY_S)

    async def send_pending(self, client: aiomqtt.Client) -> int:
        """Send every unsent row this instance can lock; returns how many it sent."""
        total = 0
        while True:
            sent = await self._send_some(client)
            total += sent
            if sent < _TAKE:
                break
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM commands WHERE sent_at IS NULL")
            row = await cur.fetchone()
        self._metrics.commands_pending.set(row[0] if row else 0)
        return total

    async def _send_some(self, client: aiomqtt.Client) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_TAKE_SQL, (_TAKE,))).fetchall()
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(client, row) for row in rows), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):  # the rows stay unsent (rollback)
                    raise aiomqtt.MqttError(f"command not taken by the broker: {result!r}")
            ids = [row[0] for row in rows]
            await conn.execute(_MARK_SQL, {"ids": ids, "instance": self._instance})
            incidents = sorted({row[1] for row in rows if row[1] is not None})
            await notify(conn, incidents=incidents, commands=ids)
        self.sent += len(rows)
        self._metrics.commands_sent.inc(len(rows))
        log.info("sent %d command(s) to the gateways", len(rows))
        return len(rows)

    async def _publish(self, client: aiomqtt.Client, row: tuple[Any, ...]) -> None:
        cmd_id, _incident, gateway_id, alarm_id, officer, action, note = row
        await client.publish(
            command_topic(self._prefix, gateway_id, officer),
            command_payload(cmd_id, alarm_id, action, officer, note),
            qos=1,
            retain=False,
        )


async def _watch(client: aiomqtt.Client) -> None:
    async for _ in client.messages:
        pass
