"""The instance's own Prometheus metrics (the API serves them at ``/metrics`` with its own)."""

from __future__ import annotations

from dataclasses import fields
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from central.ingest import Applied

__all__ = ["CentralMetrics", "LinkMetrics"]

# From a few ms (a handful of events) to seconds (a storm's batch against a loaded database).
_APPLY_BUCKETS: Final = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LinkMetrics(Protocol):
    """What a stream tells of itself (:class:`CentralMetrics`; in the state process, a writer
    that hands it to the instance, which counts it)."""

    def link(self, stream: str, up: bool) -> None: ...
    def committed(self, stream: str, applied: Applied, seconds: float, size: int) -> None: ...
    def failed(self, stream: str) -> None: ...
    def rejected(self, stream: str, reason: str, result: str) -> None: ...


class CentralMetrics:
    """Counters of the links (by stream: ``events``, ``state``, ``retained``) and of the
    command sender, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "gasgate_central_messages",
            "Messages taken in, by stream and what they did (ingest's Applied fields; bad).",
            ["stream", "result"],
            registry=registry,
        )
        self.bad = Counter(
            "gasgate_central_bad_messages",
            "Messages refused by the parser (acknowledged, never applied), by reason.",
            ["reason"],
            registry=registry,
        )
        self.batches = Counter(
            "gasgate_central_batches", "Batches applied (committed)", ["stream"], registry=registry
        )
        self.apply_failures = Counter(
            "gasgate_central_apply_failures",
            "Batch transactions that failed (retried, never acknowledged meanwhile).",
            ["stream"],
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "gasgate_central_apply_seconds",
            "Time of one batch's transaction.",
            ["stream"],
            buckets=_APPLY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "gasgate_central_batch_messages",
            "Messages per batch.",
            ["stream"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.link_up = Gauge(
            "gasgate_central_link_up",
            "1 while the stream connection is subscribed.",
            ["stream"],
            registry=registry,
        )
        self.commands_sent = Counter(
            "gasgate_central_commands_sent",
            "Officer commands the broker took (PUBACK).",
            registry=registry,
        )
        self.commands_pending = Gauge(
            "gasgate_central_commands_pending",
            "Commands not yet taken by the broker (at the sender's last look).",
            registry=registry,
        )
        self.sweeps = Counter(
            "gasgate_central_watch_sweeps", "Silence/offline sweeps run.", registry=registry
        )

    def link(self, stream: str, up: bool) -> None:
        self.link_up.labels(stream).set(1 if up else 0)

    def committed(self, stream: str, applied: Applied, seconds: float, size: int) -> None:
        """A batch committed: its transaction's time, its size and what it did."""
        self.apply_seconds.labels(stream).observe(seconds)
        self.batches.labels(stream).inc()
        self.batch_size.labels(stream).observe(size)
        for f in fields(applied):
            value = getattr(applied, f.name)
            if value and f.name != "incidents_opened":
                self.messages.labels(stream, f.name).inc(value)

    def failed(self, stream: str) -> None:
        self.apply_failures.labels(stream).inc()

    def rejected(self, stream: str, reason: str, result: str) -> None:
        """A message acknowledged without effect: the parser's ``reason`` (result ``bad``), or
        the database's refusal."""
        self.bad.labels(reason).inc()
        self.messages.labels(stream, result).inc()
