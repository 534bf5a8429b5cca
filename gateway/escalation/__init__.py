"""Escalation: alarm changes → gas company events and notifications to people, through a
durable outbox, with an audit trail per alarm. See docs/gas-company-contract.md."""

from gateway.escalation.audit import AuditEntry, trail
from gateway.escalation.config import EscalationSettings
from gateway.escalation.policy import DEFAULT_POLICIES, PolicySet, load_policies
from gateway.escalation.room import Escalation, EscalationStatus, status
from gateway.escalation.service import EscalationService, build

__all__ = [
    "DEFAULT_POLICIES",
    "AuditEntry",
    "Escalation",
    "EscalationService",
    "EscalationSettings",
    "EscalationStatus",
    "PolicySet",
    "build",
    "load_policies",
    "status",
    "trail",
]
