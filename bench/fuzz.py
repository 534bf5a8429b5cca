"""Fuzzing the two doors hostile bytes come in by: the KSP/1 decoder + parser (serial line) and
the kit/v1 report ingest (site MQTT). ``python -m bench fuzz`` feeds each 10⁶ random and mutated
inputs (``--quick``: 2·10⁴); the CI tests (``tests/test_fuzz_*.py``) run a bounded slice of the
same generators plus hypothesis properties.

Checked on every input, counted in :class:`Outcome`:

* ``escaped``: an exception other than the component's own rejection (``KspError``) got out —
  or, for the ingest, which catches everything, one was caught as ``internal_error``;
* ``unexplained``: bytes or messages that vanished without a reason: for the decoder, every byte
  fed must end in an intact frame, in a counted drop (noise, bad_crc, ...) or still pending; for
  the ingest, every message must move exactly one counter, and every ``InputRejected`` must
  carry a reason and a location.

The generators start from valid frames and reports and mutate them (bit flips, byte edits,
splices, truncation, valid CRCs around mutated payloads, JSON values of the wrong type), so most
inputs get past the first check and reach the deeper ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from firmware_bridge import ksp
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.contract import report_topic
from gateway.events import InputRejected
from gateway.ingest import Ingest
from gateway.registry import Component, ComponentType, Registry, RegistryData, Site, SiteType

__all__ = ["Outcome", "fuzz_ingest", "fuzz_ksp", "ingest_input", "ksp_input", "run"]

FULL, QUICK = 1_000_000, 20_000
_OVERHEAD = len(ksp.encode_frame(0, 0))  # SOF, VER, TYPE, SEQ, LEN, CRC
_BATCH = 500  # ingest messages between two drains of the bus


@dataclass
class Outcome:
    """What one fuzz run saw. A clean run has ``escaped == []`` and ``unexplained == 0``."""

    target: str
    inputs: int = 0
    accepted: int = 0  # frames parsed / messages accepted
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> count
    escaped: list[str] = field(default_factory=list)
    unexplained: int = 0

    def row(self, seconds: float) -> dict[str, object]:
        return {
            "target": self.target,
            "inputs": self.inputs,
            "seconds": round(seconds, 2),
            "inputs_per_s": round(self.inputs / seconds) if seconds else 0,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "reasons": len(self.rejected),
            "escaped": len(self.escaped),
            "unexplained": self.unexplained,
        }


# --- byte mutations -------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a bit
            i = min(at, len(out) - 1)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # set a byte to an edge value
            out[min(at, len(out) - 1)] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xA5, 0x5A, 0xFF))
        elif op == 2:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:  # delete a run
            del out[at : at + rng.randint(1, 8)]
        elif op == 4:  # truncate
            del out[at:]
        elif op == 5 and out:  # duplicate a slice
            j = rng.randrange(len(out))
            out[at:at] = out[j : j + rng.randint(1, 16)]
        else:  # insert a start-of-frame marker
            out[at:at] = ksp.SOF
    return bytes(out)


# --- KSP/1 ----------------------------------------------------------------------------------


def _ksp_seeds() -> list[ksp.Message]:
    det, valve, reg = 0x1A2B3C4D, 0x00C0FFEE, 0x0BADF00D
    return [
        ksp.Report(
            det, ksp.Event.ALARM, 3000, -60,
            ksp.DetectorBody(550, frozenset({ksp.DetectorFlag.ALARM_HIGH}), 21),
        ),
        ksp.Report(
            valve, ksp.Event.STATE_CHANGE, 3100, -70,
            ksp.ValveBody(ksp.ValveState.CLOSED, ksp.ValveCause.LINKED_ALARM, frozenset()),
        ),
        ksp.Report(reg, ksp.Event.PERIODIC, 2900, -80, ksp.RegulatorBody(2800, frozenset())),
        ksp.Heartbeat(3600, 12, 0x0102),
        ksp.CmdAck(7, valve, next(iter(ksp.CmdResult))),
        ksp.Pairing(det, ksp.DeviceKind.DETECTOR, True),
        ksp.Ack(9),
        ksp.Command(valve, next(iter(ksp.CommandCode))),
        ksp.Ping(),
    ]  # fmt: skip


_KSP_FRAMES = [ksp.encode(n, m) for n, m in enumerate(_ksp_seeds())]
_KSP_PAYLOADS = [f[_OVERHEAD - 2 : -2] for f in _KSP_FRAMES]


def ksp_input(rng: random.Random) -> bytes:
    """A chunk of line: random bytes, mutated frames, or valid CRCs around mutated payloads."""
    pick = rng.random()
    if pick < 0.15:
        return rng.randbytes(rng.randint(0, 300))
    if pick < 0.55:  # a frame with a good CRC around a mutated payload, maybe a wrong type
        payload = mutate(rng, rng.choice(_KSP_PAYLOADS))[: ksp.MAX_PAYLOAD]
        frame_type = rng.choice((*[int(t) for t in ksp.FrameType], rng.randrange(256)))
        return ksp.encode_frame(frame_type, rng.randrange(256), payload)
    parts = [
        rng.choice(_KSP_FRAMES) if rng.random() < 0.5 else mutate(rng, rng.choice(_KSP_FRAMES))
        for _ in range(rng.randint(1, 4))
    ]
    if rng.random() < 0.3:
        parts.insert(rng.randrange(len(parts) + 1), rng.randbytes(rng.randint(1, 12)))
    return b"".join(parts)


def _split(rng: random.Random, data: bytes) -> list[bytes]:
    """The chunks a serial read might return."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 3)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def check_ksp(outcome: Outcome, rng: random.Random, data: bytes) -> None:
    """Decode and parse one chunk of line, recording what happened to every byte."""
    outcome.inputs += 1
    decoder = ksp.Decoder()
    try:
        frames = [f for chunk in _split(rng, data) for f in decoder.feed(chunk)]
        frames += decoder.line_idle()
    except Exception as exc:  # noqa: BLE001 - any exception is the finding: a decoder must never raise
        outcome.escaped.append(f"decoder: {exc!r} on {data.hex()}")
        return
    framed = sum(_OVERHEAD + len(f.payload) for f in frames)
    if framed + sum(decoder.counts.values()) + decoder.pending != len(data):
        outcome.unexplained += 1
    outcome.rejected.update({f"frame.{k}": v for k, v in decoder.counts.items()})
    for frame in frames:
        try:
            ksp.parse(frame)
        except ksp.KspError as exc:
            if not exc.reason or not str(exc):
                outcome.unexplained += 1
            outcome.rejected[f"parse.{exc.reason}"] += 1
        except Exception as exc:  # noqa: BLE001 - any but KspError is the finding
            outcome.escaped.append(f"parse: {exc!r} on {frame!r}")
        else:
            outcome.accepted += 1


def fuzz_ksp(count: int, seed: int = 1) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome("ksp")
    for _ in range(count):
        check_ksp(outcome, rng, ksp_input(rng))
    return outcome


# --- kit/v1 report ingest -------------------------------------------------------------------

_DET, _VALVE, _REG, _HOME = "1a2b3c4d", "00c0ffee", "0badf00d", "home-det-7"


def fuzz_registry() -> Registry:
    """A restaurant (detector, linked valve, smart regulator) and a household detector."""
    c, day = ComponentType, date(2025, 6, 1)
    return Registry(
        RegistryData(
            sites=(
                Site("S1", "Golden Wok", SiteType.RESTAURANT, "four_piece", "Futian", "1 Rd"),
                Site("S2", "Flat 7", SiteType.HOUSEHOLD, "two_piece", "Nanshan", "7 Rd"),
            ),
            components=(
                Component("S1", c.LEAK_DETECTOR, _DET, "default-detector", day),
                Component("S1", c.SHUTOFF_VALVE, _VALVE, "default-valve", day, (_DET,)),
                Component("S1", c.SMART_REGULATOR, _REG, "default-regulator", day, (_VALVE,)),
                Component("S2", c.LEAK_DETECTOR, _HOME, "default-detector", day),
            ),
        )
    )


_REPORTS: list[tuple[str, dict[str, Any]]] = [
    (_DET, {"kind": "detector", "seq": 1, "event": "alarm", "battery_mv": 3000,
            "rssi_dbm": -60, "detector": {"lel_pct": 55.0, "flags": ["alarm_high"],
                                          "temp_c": 21}}),
    (_VALVE, {"kind": "valve", "seq": 2, "event": "state_change",
              "valve": {"state": "closed", "cause": "linked_alarm", "flags": []}}),
    (_REG, {"kind": "regulator", "seq": 3, "event": "periodic",
            "regulator": {"pressure_pa": 2800, "flags": []}}),
    (_HOME, {"kind": "detector", "seq": 4, "event": "periodic",
             "detector": {"lel_pct": 0.0, "flags": []}}),
]  # fmt: skip
_ODD_VALUES: tuple[object, ...] = (
    None, True, -1, 0, 2**64, -(2**63), 1e308, -0.0, "", "x" * 300, "气体", "\u0000",
    "<script>alert(1)</script>", "'; DROP TABLE alarms; --", [], {}, [1, [2, [3]]], {"a": {}},
)  # fmt: skip
_TOPIC_TAILS = ("report", "availability", "cmd", "cmd/ack", "report/x", "")


def _mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """The same document with one value replaced, a key dropped, or a key added."""
    if isinstance(value, dict) and value and depth < 3:
        key = rng.choice(list(value))
        out = dict(value)
        op = rng.randrange(4)
        if op == 0:
            del out[key]
        elif op == 1:
            out[key] = rng.choice(_ODD_VALUES)
        elif op == 2:
            out[rng.choice(("extra", "kind", "seq", "__proto__", key + "x"))] = rng.choice(
                _ODD_VALUES
            )
        else:
            out[key] = _mutate_json(rng, value[key], depth + 1)
        return out
    if isinstance(value, list) and value:
        return [*value, rng.choice(_ODD_VALUES)]
    return rng.choice(_ODD_VALUES)


def ingest_input(rng: random.Random) -> tuple[str, bytes]:
    """A topic and payload as a hostile or broken client could publish them."""
    device, body = rng.choice(_REPORTS)
    pick = rng.random()
    if pick < 0.6:
        topic = report_topic(device)
    elif pick < 0.7:
        topic = report_topic(rng.choice((_DET, _HOME)) if rng.random() < 0.5 else "ghost-1")
    elif pick < 0.9:
        ident = rng.choice((device, "bad id", "", "+", "#", "a" * 80, "../x", "气体"))
        topic = f"kit/v1/{ident}/{rng.choice(_TOPIC_TAILS)}"
    else:  # MQTT has no empty topic names (MQTT 3.1.1 §4.7.3): a broker never delivers one
        topic = mutate(rng, report_topic(device).encode()).decode("utf-8", "replace") or "/"
    pick = rng.random()
    if pick < 0.1:
        payload = json.dumps(body).encode()
    elif pick < 0.6:
        doc = body
        for _ in range(rng.randint(1, 3)):
            doc = _mutate_json(rng, doc)
        payload = json.dumps(doc, allow_nan=True).encode()
    elif pick < 0.9:
        payload = mutate(rng, json.dumps(body).encode())
    else:
        payload = rng.randbytes(rng.choice((0, 1, 16, 200, 9000)))
    return topic, payload


class IngestFuzzer:
    """A real ``Ingest`` on a real bus and registry, with a manual clock that moves a little
    between messages (so the duplicate window both holds and expires)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.bus = Bus()
        self.clock = ManualClock()
        self.ingest = Ingest(self.bus, fuzz_registry(), self.clock)
        self.outcome = Outcome("ingest")
        self.bus.subscribe(InputRejected, self._on_rejected, name="fuzz")

    def _on_rejected(self, event: InputRejected) -> None:
        if not event.reason or not event.where:
            self.outcome.unexplained += 1

    async def run(self, count: int) -> Outcome:
        counts, outcome = self.ingest.counts, self.outcome
        for n in range(count):
            topic, payload = ingest_input(self.rng)
            before = sum(counts.values())
            outcome.inputs += 1
            try:
                self.ingest.handle_message(topic, payload)
            except Exception as exc:  # noqa: BLE001 - the ingest promises never to raise
                outcome.escaped.append(f"ingest: {exc!r} on {topic!r} {payload[:80]!r}")
            if sum(counts.values()) != before + 1:
                outcome.unexplained += 1
            self.clock.advance(self.rng.choice((0.0, 0.1, 11.0)))
            if n % _BATCH == 0:
                await self.bus.join()
        await self.bus.join()
        outcome.accepted = sum(v for k, v in counts.items() if not k.startswith("rejected."))
        outcome.rejected = Counter(
            {k.removeprefix("rejected."): v for k, v in counts.items() if k.startswith("rejected.")}
        )
        internal = outcome.rejected.get("internal_error", 0)
        outcome.escaped += [f"ingest: {internal} internal_error(s)"] if internal else []
        await self.bus.stop()
        return outcome


def fuzz_ingest(count: int, seed: int = 1) -> Outcome:
    return asyncio.run(IngestFuzzer(seed).run(count))


def run(quick: bool) -> list[dict[str, object]]:
    count = QUICK if quick else FULL
    logging.getLogger("gateway.ingest").setLevel(logging.CRITICAL)  # rejections are the point
    rows = []
    for fuzz in (fuzz_ksp, fuzz_ingest):
        started = time.perf_counter()
        outcome = fuzz(count)
        rows.append(outcome.row(time.perf_counter() - started))
        for line in outcome.escaped[:5]:
            print(f"ESCAPED {line}")
        print(f"{outcome.target} rejection reasons: {dict(outcome.rejected.most_common())}")
    return rows
