"""KSP/1 decoder throughput on a realistic line: reports from a full receiver, heartbeats,
command acks, noise between frames and the odd corrupted frame.

Measured: ``Decoder.feed`` alone, and feed + ``parse`` (what the link does per frame), in read
sizes from a byte-trickle (16 B) to the serial transport's 1024 B reads. The line itself carries
at most 11 520 B/s at 115 200 baud: ``x_line`` is how many such lines one core could decode.
"""

from __future__ import annotations

import random
import time

from firmware_bridge import ksp

LINE_BYTES_PER_S = 115_200 / 10  # 8N1: 10 bits per byte


def _report(rng: random.Random, device_id: int) -> ksp.Report:
    kind = device_id % 3
    body: ksp.DetectorBody | ksp.ValveBody | ksp.RegulatorBody
    if kind == 0:
        body = ksp.DetectorBody(rng.randrange(0, 1001), frozenset(), rng.randrange(-10, 45))
    elif kind == 1:
        body = ksp.ValveBody(ksp.ValveState.OPEN, ksp.ValveCause.NONE, frozenset())
    else:
        body = ksp.RegulatorBody(rng.randrange(2600, 3000), frozenset())
    event = rng.choice((ksp.Event.PERIODIC,) * 8 + (ksp.Event.STATE_CHANGE, ksp.Event.ALARM))
    return ksp.Report(device_id, event, rng.randrange(0, 3600), rng.randrange(-110, -40), body)


def line(frames: int, seed: int = 7) -> tuple[bytes, int]:
    """(stream, intact frames in it): 64 devices; 1 heartbeat and 1 CMD_ACK per 60 frames;
    noise (1..8 bytes) before 5 % of frames; 1 % of frames with a broken CRC."""
    rng = random.Random(seed)
    devices = [0x1A000000 + i for i in range(64)]
    out = bytearray()
    intact = 0
    for n in range(frames):
        if n % 60 == 0:
            message: ksp.Message = ksp.Heartbeat(n, 64, 0x0102)
        elif n % 60 == 30:
            message = ksp.CmdAck(n & 0xFF, rng.choice(devices), ksp.CmdResult.OK)
        else:
            message = _report(rng, rng.choice(devices))
        if rng.random() < 0.05:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        frame = bytearray(ksp.encode(n & 0xFF, message))
        if rng.random() < 0.01:
            frame[-1] ^= 0x5A
        else:
            intact += 1
        out += frame
    return bytes(out), intact


def _measure(stream: bytes, chunk: int, parse: bool, repeats: int) -> tuple[float, int]:
    best = float("inf")
    decoded = 0
    for _ in range(repeats):
        decoder = ksp.Decoder()
        decoded = 0
        started = time.perf_counter()
        for i in range(0, len(stream), chunk):
            frames = decoder.feed(stream[i : i + chunk])
            decoded += len(frames)
            if parse:
                for frame in frames:
                    ksp.parse(frame)
        best = min(best, time.perf_counter() - started)
    return best, decoded


def run(quick: bool) -> list[dict[str, object]]:
    frames = 2_000 if quick else 50_000
    repeats = 1 if quick else 3
    stream, intact = line(frames)
    rows: list[dict[str, object]] = []
    for parse in (False, True):
        for chunk in (16, 256, 1024):
            seconds, decoded = _measure(stream, chunk, parse, repeats)
            if decoded < intact:  # noise may fake the odd frame, never lose one
                raise AssertionError(f"decoded {decoded} of {intact} intact frames")
            rows.append(
                {
                    "stage": "feed+parse" if parse else "feed",
                    "chunk_B": chunk,
                    "frames": decoded,
                    "MB": round(len(stream) / 1e6, 3),
                    "frames_per_s": round(decoded / seconds),
                    "MB_per_s": round(len(stream) / seconds / 1e6, 3),
                    "x_line": round(len(stream) / seconds / LINE_BYTES_PER_S),
                }
            )
    return rows
