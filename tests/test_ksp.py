"""KSP/1 codec: the spec's test vectors both ways, and the streaming decoder under noise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import ksp

VECTORS = {
    "detector periodic": "A5 5A 01 01 10 0D 1A 2B 3C 4D 01 00 0B B8 BD 00 00 00 18 2D 08",
    "detector alarm": "A5 5A 01 01 11 0D 1A 2B 3C 4D 01 02 0B 86 BA 01 3B 03 19 6D CE",
    "valve closed": "A5 5A 01 01 12 0C 00 C0 FF EE 02 01 0E 10 C4 01 02 00 CD 8E",
    "regulator trip": "A5 5A 01 01 13 0C 0B AD F0 0D 03 02 0C 1C B0 00 00 03 E8 43",
    "heartbeat": "A5 5A 01 02 14 07 00 01 51 80 0C 01 02 88 BB",
    "cmd ack": "A5 5A 01 03 15 06 07 00 C0 FF EE 00 D2 26",
    "gateway ack": "A5 5A 01 81 01 01 11 A1 A0",
    "close valve": "A5 5A 01 82 07 05 00 C0 FF EE 01 78 1C",
    "ping": "A5 5A 01 83 08 00 F7 F0",
}
D, V, R = ksp.DetectorFlag, ksp.ValveState, ksp.RegulatorFlag
EXPECTED: dict[str, tuple[int, ksp.Message]] = {
    "detector periodic": (
        0x10,
        ksp.Report(0x1A2B3C4D, ksp.Event.PERIODIC, 3000, -67, ksp.DetectorBody(0, frozenset(), 24)),
    ),
    "detector alarm": (
        0x11,
        ksp.Report(
            0x1A2B3C4D,
            ksp.Event.ALARM,
            2950,
            -70,
            ksp.DetectorBody(315, frozenset({D.ALARM_LOW, D.ALARM_HIGH}), 25),
        ),
    ),
    "valve closed": (
        0x12,
        ksp.Report(
            0x00C0FFEE,
            ksp.Event.STATE_CHANGE,
            3600,
            -60,
            ksp.ValveBody(V.CLOSED, ksp.ValveCause.LINKED_ALARM, frozenset()),
        ),
    ),
    "regulator trip": (
        0x13,
        ksp.Report(
            0x0BADF00D,
            ksp.Event.ALARM,
            3100,
            -80,
            ksp.RegulatorBody(0, frozenset({R.OVERFLOW_TRIPPED, R.SELF_CLOSED})),
        ),
    ),
    "heartbeat": (0x14, ksp.Heartbeat(86400, 12, 0x0102)),
    "cmd ack": (0x15, ksp.CmdAck(0x07, 0x00C0FFEE, ksp.CmdResult.OK)),
    "gateway ack": (0x01, ksp.Ack(0x11)),
    "close valve": (0x07, ksp.Command(0x00C0FFEE, ksp.CommandCode.CLOSE_VALVE)),
    "ping": (0x08, ksp.Ping()),
}


@pytest.mark.parametrize("name", VECTORS)
def test_vector_decodes(name: str) -> None:
    frames = ksp.Decoder().feed(bytes.fromhex(VECTORS[name]))
    seq, message = EXPECTED[name]
    assert [(f.seq, ksp.parse(f)) for f in frames] == [(seq, message)]


@pytest.mark.parametrize("name", VECTORS)
def test_vector_encodes(name: str) -> None:
    seq, message = EXPECTED[name]
    assert ksp.encode(seq, message) == bytes.fromhex(VECTORS[name])


def test_crc_check_value() -> None:
    # The catalogue check value of CRC-16/MODBUS over "123456789".
    assert ksp.crc16_modbus(b"123456789") == 0x4B37


def test_device_id_format() -> None:
    assert ksp.format_device_id(0x1A2B3C4D) == "1a2b3c4d"
    assert ksp.format_device_id(0xEE) == "000000ee"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:2] + b"\x02" + b[3:], ksp.DropReason.BAD_VERSION),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), ksp.DropReason.BAD_CRC),
        (lambda b: b[:5] + b"\xf1" + b[6:], ksp.DropReason.BAD_LENGTH),
    ],
)
def test_bad_frames_dropped_with_reason_and_offset(mutate, reason) -> None:
    good = bytes.fromhex(VECTORS["ping"])
    decoder = ksp.Decoder()
    frames = decoder.feed(b"\x00\x11" + mutate(good) + good)
    assert [f.type for f in frames] == [ksp.FrameType.PING]
    assert decoder.counts[reason] == 1
    assert decoder.counts[ksp.DropReason.NOISE] >= 2
    assert any(d.reason is reason and d.offset == 2 for d in decoder.drops)


def test_corrupted_length_frame_released_when_line_idle() -> None:
    good = bytes.fromhex(VECTORS["detector alarm"])
    bad = bytearray(bytes.fromhex(VECTORS["ping"]))
    bad[5] = 200  # claims 200 bytes: the good frame behind it is swallowed for now
    decoder = ksp.Decoder()
    assert decoder.feed(bytes(bad) + good) == []
    frames = decoder.line_idle()
    assert [ksp.parse(f) for f in frames] == [EXPECTED["detector alarm"][1]]
    assert decoder.counts[ksp.DropReason.TRUNCATED] == 1
    assert decoder.pending == 0


@pytest.mark.parametrize(
    ("hexframe", "reason"),
    [
        ("A5 5A 01 01 10 0D 1A 2B 3C 4D 09 00 0B B8 BD 00 00 00 18", "bad_kind"),
        ("A5 5A 01 01 10 0D 1A 2B 3C 4D 01 09 0B B8 BD 00 00 00 18", "bad_event"),
        ("A5 5A 01 01 10 0D 1A 2B 3C 4D 01 00 0B B8 BD 03 E9 00 18", "lel_out_of_range"),
        ("A5 5A 01 01 10 0C 1A 2B 3C 4D 01 00 0B B8 BD 00 00 00", "bad_payload_length"),
        ("A5 5A 01 01 12 0C 00 C0 FF EE 02 01 0E 10 C4 07 02 00", "bad_valve_state"),
        ("A5 5A 01 01 12 0C 00 C0 FF EE 02 01 0E 10 C4 01 02 80", "bad_flag"),
        ("A5 5A 01 44 12 00", "bad_type"),
    ],
)
def test_payload_errors_have_reasons(hexframe: str, reason: str) -> None:
    raw = bytes.fromhex(hexframe)
    frame = ksp.Frame(raw[3], raw[4], raw[6:])
    with pytest.raises(ksp.KspError) as info:
        ksp.parse(frame)
    assert info.value.reason == reason


# --- property: valid frames survive noise, corruption and arbitrary chunking ---------------

device_ids = st.integers(0, 0xFFFFFFFF)
detector_bodies = st.builds(
    ksp.DetectorBody,
    st.integers(0, 1000),
    st.frozensets(st.sampled_from(ksp.DetectorFlag)),
    st.integers(-128, 127),
)
valve_bodies = st.builds(
    ksp.ValveBody,
    st.sampled_from(ksp.ValveState),
    st.sampled_from(ksp.ValveCause),
    st.frozensets(st.sampled_from(ksp.ValveFlag)),
)
regulator_bodies = st.builds(
    ksp.RegulatorBody, st.integers(0, 0xFFFF), st.frozensets(st.sampled_from(ksp.RegulatorFlag))
)
messages = st.one_of(
    st.builds(
        ksp.Report,
        device_ids,
        st.sampled_from(ksp.Event),
        st.integers(0, 0xFFFF),
        st.integers(-128, 127),
        st.one_of(detector_bodies, valve_bodies, regulator_bodies),
    ),
    st.builds(
        ksp.Heartbeat, st.integers(0, 0xFFFFFFFF), st.integers(0, 64), st.integers(0, 0xFFFF)
    ),
    st.builds(ksp.CmdAck, st.integers(0, 255), device_ids, st.sampled_from(ksp.CmdResult)),
    st.builds(ksp.Pairing, device_ids, st.sampled_from(ksp.DeviceKind), st.booleans()),
    st.builds(ksp.Ack, st.integers(0, 255)),
    st.builds(ksp.Command, device_ids, st.sampled_from(ksp.CommandCode)),
    st.just(ksp.Ping()),
)
# Noise never holds 0xA5, so it cannot by chance form a start-of-frame with a valid CRC.
noise = st.binary(max_size=40).map(lambda b: b.replace(b"\xa5", b"\x00"))


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """A frame with one byte changed after its SOF: CRC-16 catches every one-byte error."""
    frame = bytearray(ksp.encode(draw(st.integers(0, 255)), draw(messages)))
    index = draw(st.integers(2, len(frame) - 1))
    frame[index] ^= draw(st.integers(1, 255))
    return bytes(frame)


@given(
    items=st.lists(
        st.one_of(
            st.tuples(st.just("good"), st.integers(0, 255), messages),
            st.tuples(st.just("noise"), noise),
            st.tuples(st.just("bad"), corrupted()),
        ),
        max_size=30,
    ),
    cuts=st.lists(st.integers(1, 64), max_size=60),
)
@settings(max_examples=300, deadline=None)
def test_stream_decodes_every_valid_frame_once_in_order(items, cuts) -> None:
    stream = bytearray()
    sent: list[tuple[int, ksp.Message]] = []
    for item in items:
        if item[0] == "good":
            stream += ksp.encode(item[1], item[2])
            sent.append((item[1], item[2]))
        else:
            stream += item[1]
    decoder = ksp.Decoder()
    frames: list[ksp.Frame] = []
    pos = 0
    for size in cuts:
        frames += decoder.feed(bytes(stream[pos : pos + size]))
        pos += size
    frames += decoder.feed(bytes(stream[pos:]))
    frames += decoder.line_idle()
    assert [(f.seq, ksp.parse(f)) for f in frames] == sent
