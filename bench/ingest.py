"""Ingest + rules throughput: kit/v1 report messages through ``Ingest.handle_message``, the bus,
supervision and the rule engine, on one core (one event loop), as the gateway runs them.

Cases: ``ingest`` (parse, validate, dedupe, publish; nobody subscribed), ``ingest+rules``
(the whole safety core: supervision and the rule engine handle every report), ``duplicates``
(receiver retransmissions, dropped before parsing) and ``rejected`` (bad JSON: counted, logged
rate-limited, published). Reports come from many devices of a realistic registry, a few percent
of detectors in a leak, so conditions do get raised and cleared.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import date

from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.contract import report_topic
from gateway.ingest import Ingest
from gateway.registry import Component, ComponentType, Registry, RegistryData, Site, SiteType
from gateway.supervision import Supervision
from rules.engine import RuleEngine
from rules.schema import RuleSet

BATCH = 500  # messages handed to ingest before the bus is drained (an MQTT read burst)


def _registry(sites: int) -> Registry:
    site_rows, components = [], []
    installed = date(2025, 1, 1)
    for n in range(sites):
        site_id = f"S{n:06d}"
        site_rows.append(Site(site_id, site_id, SiteType.RESTAURANT, "four_piece", "D", "addr"))
        detector, valve = f"{2 * n:08x}", f"{2 * n + 1:08x}"
        components += [
            Component(site_id, ComponentType.LEAK_DETECTOR, detector, "m", installed),
            Component(site_id, ComponentType.SHUTOFF_VALVE, valve, "m", installed, (detector,)),
        ]
    return Registry(RegistryData(sites=tuple(site_rows), components=tuple(components)))


def _messages(sites: int, count: int, seed: int = 11) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    seqs = [0] * (2 * sites)
    out = []
    for _ in range(count):
        n = rng.randrange(sites)
        leaking = n % 50 == 0  # 2 % of sites have gas about
        lel = rng.uniform(15, 60) if leaking else rng.uniform(0, 2)
        if rng.random() < 0.8:
            index, body = 2 * n, {"detector": {"lel_pct": round(lel, 1), "flags": []}}
            kind = "detector"
        else:
            index, body = 2 * n + 1, {"valve": {"state": "open", "cause": "none", "flags": []}}
            kind = "valve"
        seqs[index] = (seqs[index] + 1) & 0xFFFF
        report = {"kind": kind, "seq": seqs[index], "event": "periodic", "battery_mv": 3000}
        report.update(body)
        out.append((report_topic(f"{index:08x}"), json.dumps(report).encode()))
    return out


async def _run(case: str, sites: int, messages: list[tuple[str, bytes]]) -> dict[str, object]:
    clock, bus = ManualClock(), Bus()
    registry = _registry(sites)
    ingest = Ingest(bus, registry, clock)
    rooms: list[Supervision | RuleEngine] = []
    if case == "ingest+rules":
        rooms = [
            Supervision(bus, registry, clock),
            RuleEngine(bus, registry, clock, RuleSet.defaults()),
        ]
    for room in rooms:
        await room.start()
    started = time.perf_counter()
    for i in range(0, len(messages), BATCH):
        for topic, payload in messages[i : i + BATCH]:
            ingest.handle_message(topic, payload)
        clock.advance(0.05)
        await bus.join()
    seconds = time.perf_counter() - started
    for room in rooms:
        await room.stop()
    conditions = bus.counts["published.ConditionChanged"]
    return {
        "case": case,
        "devices": 2 * sites,
        "messages": len(messages),
        "seconds": seconds,
        "per_s": len(messages) / seconds,
        "us_per_msg": seconds / len(messages) * 1e6,
        "conditions": conditions,
        "rejected": sum(v for k, v in ingest.counts.items() if k.startswith("rejected.")),
    }


def run(quick: bool) -> list[dict[str, object]]:
    logging.getLogger("gateway.ingest").setLevel(logging.ERROR)  # the rejected case logs
    sites = 5_000 if quick else 50_000
    count = 20_000 if quick else 200_000
    messages = _messages(sites, count)
    duplicates = [m for m in messages[: count // 4] for _ in range(4)]
    garbage = [(t, b"{" + p[:20]) for t, p in messages]
    cases = [
        ("ingest", messages),
        ("ingest+rules", messages),
        ("duplicates", duplicates),
        ("rejected", garbage),
    ]
    return [asyncio.run(_run(case, sites, msgs)) for case, msgs in cases]
