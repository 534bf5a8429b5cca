"""Escalation as one unit for the gateway controller: the channels, the outbox that drains into
them, the gas company link and the escalation room, started in that order and stopped in
reverse. :func:`build` makes one from :class:`EscalationSettings`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.bus import Bus
from gateway.clock import Clock
from gateway.escalation.channels import EmailChannel, WebhookChannel
from gateway.escalation.config import EmailSettings, EscalationSettings
from gateway.escalation.coverage import Coverage
from gateway.escalation.digest import Digest
from gateway.escalation.gasco import GascoLink
from gateway.escalation.outbox import Channel, Outbox
from gateway.escalation.policy import DEFAULT_POLICIES, PolicySet, load_policies
from gateway.escalation.ports import AlarmDesk, SiteDirectory, ValveStates
from gateway.escalation.room import GASCO_LANE, Escalation
from gateway.store import Store

__all__ = ["EscalationService", "build"]

log = logging.getLogger(__name__)


@dataclass
class EscalationService:
    people: list[WebhookChannel | EmailChannel]
    gasco: GascoLink
    outbox: Outbox
    coverage: Coverage
    room: Escalation
    digest: Digest

    async def start(self) -> None:
        for channel in self.people:
            await channel.start()
        await self.outbox.start()
        await self.coverage.start()
        await self.room.start()
        await self.digest.start()
        await self.gasco.start()

    async def stop(self) -> None:
        await self.gasco.stop()
        await self.digest.stop()
        await self.room.stop()
        await self.coverage.stop()
        await self.outbox.stop()
        for channel in reversed(self.people):
            await channel.stop()


def build(
    settings: EscalationSettings,
    *,
    bus: Bus,
    store: Store,
    clock: Clock,
    registry: SiteDirectory,
    desk: AlarmDesk | None,
    valves: ValveStates | None = None,
    gateway_id: str,
    policies: PolicySet | None = None,
) -> EscalationService:
    """Everything escalation needs, not started. Policies: ``policies``, else the settings'
    policy file (``ConfigError`` if invalid), else the defaults."""
    if policies is None:
        policies = (
            load_policies(settings.policies_file) if settings.policies_file else DEFAULT_POLICIES
        )
    people: list[WebhookChannel | EmailChannel] = [
        EmailChannel(name, spec)
        if isinstance(spec, EmailSettings)
        else WebhookChannel(name, spec, clock)
        for name, spec in settings.channels.items()
        if name != GASCO_LANE
    ]
    gasco = GascoLink(
        settings.gasco,
        gateway_id,
        store=store,
        clock=clock,
        desk=desk,
        summaries=lambda: coverage.summaries(),  # noqa: PLW0108 (built below)
        on_connected=lambda: outbox.retry_now(GASCO_LANE),
    )
    # Without a gas company broker its events wait in the outbox (no lane drains them).
    lanes: list[Channel] = [gasco, *people] if settings.gasco.url else [*people]
    outbox = Outbox(store, clock, lanes, settings.outbox)
    coverage = Coverage(bus, store, clock, registry, valves=valves, gateway_id=gateway_id)
    room = Escalation(
        bus,
        store,
        clock,
        registry,
        outbox,
        coverage=coverage,
        policies=policies,
        settings=settings,
        gateway_id=gateway_id,
    )
    digest = Digest(store, clock, registry, outbox, policies=policies, settings=settings)
    return EscalationService(people, gasco, outbox, coverage, room, digest)
