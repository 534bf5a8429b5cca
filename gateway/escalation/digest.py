"""The daily digest: once a day, at ``digest.at`` local time, the open alarms whose policy says
``digest: true`` (by default the maintenance ones: coverage gaps) are listed to the service team.

Durable and once a day: each digest's delivery key names the day, so a restart after the hour
sends the day's digest at once if it was not queued yet, and never twice. A day without such
alarms sends nothing.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from gateway.clock import Clock, Timer
from gateway.escalation.channels import address_for
from gateway.escalation.config import EscalationSettings, Recipient
from gateway.escalation.messages import local_zone, render_digest
from gateway.escalation.outbox import NewItem, Outbox, enqueue
from gateway.escalation.policy import PolicySet
from gateway.escalation.ports import SiteDirectory
from gateway.model import Alarm
from gateway.store import Store

__all__ = ["Digest"]

log = logging.getLogger(__name__)


class Digest:
    """Constructing it does nothing; :meth:`start` needs the escalation room's tables."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        registry: SiteDirectory,
        outbox: Outbox,
        *,
        policies: PolicySet,
        settings: EscalationSettings,
    ) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._outbox = outbox
        self._policies = policies
        self._settings = settings
        self._timer: Timer | None = None

    async def start(self) -> None:
        today = self._local_now().date()
        if self._local_now() >= self._due(today):
            self.send(today)  # the gateway was down at the hour (or started after it)
        self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send(self, day: date) -> int:
        """Queue ``day``'s digest (no-op if already queued); the number of rows queued."""
        alarms = self._open_digest_alarms()
        if not alarms:
            return 0
        sites = {s.site_id: s for s in self._registry.sites()}
        zone = local_zone(self._settings.timezone)
        items = []
        for recipient in self._recipients():
            message = render_digest(alarms, sites, recipient.lang, day, zone)
            for via in self._settings.digest.via:
                channel = self._settings.channels.get(via)
                address = address_for(channel, recipient) if channel else None
                if address is None or not self._outbox.has_lane(via):
                    log.warning("digest: %s has no %s channel / address", recipient.name, via)
                    continue
                key = f"digest/{day.isoformat()}/{via}/{address}"
                payload = {
                    "kind": "digest",
                    "delivery_key": key,
                    "recipient": recipient.model_dump(),
                    "title": message.title,
                    "body": message.body,
                    "alarm_ids": [a.alarm_id for a in alarms],
                }
                items.append(
                    NewItem(
                        key, via, None, f"{recipient.name} <{address}>", payload, cancellable=False
                    )
                )
        with self._store.transaction() as db:
            added = enqueue(db, items, self._clock.now())
        self._outbox.wake()
        return len(added)

    def _open_digest_alarms(self) -> list[Alarm]:
        rows = self._store.db.execute(
            "SELECT snapshot FROM escalation_alarm WHERE is_open = 1 ORDER BY alarm_id"
        ).fetchall()
        alarms = [Alarm.from_json(r[0]) for r in rows]
        return [
            a
            for a in alarms
            if (p := self._policies.for_alarm(a.alarm_type, a.severity)) is not None and p.digest
        ]

    def _recipients(self) -> list[Recipient]:
        s = self._settings
        lists = {
            "duty_room": s.duty_room,
            "duty_supervisor": s.duty_supervisor,
            "service_team": s.service_team,
        }
        return [r for target in s.digest.to for r in lists[target]]

    def _local_now(self) -> datetime:
        return self._clock.now().astimezone(local_zone(self._settings.timezone))

    def _due(self, day: date) -> datetime:
        hour, minute = (int(x) for x in self._settings.digest.at.split(":"))
        return datetime.combine(day, time(hour, minute), local_zone(self._settings.timezone))

    def _arm(self) -> None:
        now = self._local_now()
        due = self._due(now.date())
        if due <= now:
            due = self._due(now.date() + timedelta(days=1))
        self._timer = self._clock.call_later((due - now).total_seconds(), self._fire)

    def _fire(self) -> None:
        self.send(self._local_now().date())
        self._arm()
