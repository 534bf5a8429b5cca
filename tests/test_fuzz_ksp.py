"""Hostile bytes on the serial line: the KSP/1 decoder and parser never raise, and every byte
they are fed ends in an intact frame, a counted drop with a reason, or the pending buffer.

A bounded slice of ``bench/fuzz.py``'s generators (``python -m bench fuzz`` runs 10⁶) plus
hypothesis properties on arbitrary bytes.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzz import Outcome, check_ksp, fuzz_ksp
from firmware_bridge import ksp

SLICE = 30_000


def test_a_slice_of_the_fuzz_run_finds_nothing() -> None:
    outcome = fuzz_ksp(SLICE, seed=20261128)
    assert outcome.escaped == []
    assert outcome.unexplained == 0
    assert outcome.inputs == SLICE
    assert outcome.accepted > SLICE // 4  # the mutations reach the parser, not only the CRC
    # Every rejection has a reason; the generators reach most of them.
    assert {"frame.noise", "frame.bad_crc", "frame.bad_version", "frame.truncated"} <= set(
        outcome.rejected
    )
    assert {"parse.bad_type", "parse.bad_payload_length", "parse.bad_kind"} <= set(outcome.rejected)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600), seed=st.integers(0, 2**32))
def test_any_bytes_are_accounted_for(data: bytes, seed: int) -> None:
    outcome = Outcome("ksp")
    check_ksp(outcome, random.Random(seed), data)
    assert outcome.escaped == []
    assert outcome.unexplained == 0


@settings(max_examples=400, deadline=None)
@given(
    frame_type=st.integers(0, 255),
    seq=st.integers(0, 255),
    payload=st.binary(max_size=ksp.MAX_PAYLOAD),
)
def test_any_payload_with_a_good_crc_parses_or_is_refused_with_a_reason(
    frame_type: int, seq: int, payload: bytes
) -> None:
    (frame,) = ksp.Decoder().feed(ksp.encode_frame(frame_type, seq, payload))
    message: ksp.Message | ksp.KspError
    try:
        message = ksp.parse(frame)
    except ksp.KspError as exc:
        message = exc
    if isinstance(message, ksp.KspError):
        assert message.reason
        assert str(message)
    else:
        assert ksp.encode(seq, message) == ksp.encode_frame(frame_type, seq, payload)


def test_a_frame_whose_crc_ends_in_a5_leaves_nothing_behind() -> None:
    # Found by the fuzzer: the decoder kept a frame's last CRC byte (0xA5) as a possible SOF
    # half, then counted it as noise in front of the next frame.
    frame = ksp.encode_frame(ksp.FrameType.REPORT, 0x6E, bytes.fromhex("00090e100c"))
    assert frame.endswith(b"\xa5")
    decoder = ksp.Decoder()
    assert len(decoder.feed(frame)) == 1
    assert decoder.pending == 0
    assert len(decoder.feed(frame)) == 1
    assert decoder.counts == {}
