"""Head-MCU protocol: the spec's byte-exact examples, whole / byte-at-a-time decoding, and
Hypothesis fuzzing of random and corrupted streams (never raises; counts what it skips)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mcu import protocol as p

DOC = Path(__file__).resolve().parent.parent / "docs" / "mcu-protocol.md"


def doc_example(name: str) -> bytes:
    m = re.search(rf"```hex example={name}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"example {name} missing from {DOC}"
    return bytes.fromhex(m.group(1))


SAMPLES = struct.pack("<12h", 100, -200, 2048, -5, 3, 0, 101, -199, 2047, -4, 3, 1)
DOCUMENTED: dict[str, p.Message] = {
    "hello": p.Hello(0, 1, 0, "hm-1.2.0", {"imu_hz": 1000, "acc_g": 16, "gyro_dps": 2000,
                                           "strobe": True, "led": True, "haptic": False,
                                           "battery": True}),
    "imu": p.ImuBatch(7, 1000, 5_000_000, (1000,), SAMPLES),
    "strobe": p.Strobe(8, 42, 5_010_000, 5_018_000),
    "button": p.Button(9, True, 5_020_000),
    "battery": p.Battery(10, 3712, 64, False),
    "pong": p.Pong(11, 77, 5_030_000),
    "accept": p.Accept(0, 1, 0),
    "ping": p.Ping(1, 77),
    "led": p.Led(2, 2, 0xFFA000),
    "haptic": p.Haptic(3, 1, 200),
    "hello_request": p.HelloRequest(4),
    "bye": p.Bye(5),
}


def test_every_documented_example_decodes_and_encodes_byte_exact():
    for name, msg in DOCUMENTED.items():
        wire = doc_example(name)
        dec = p.Decoder()
        assert dec.feed(wire) == [msg], name
        assert p.encode(msg) == wire, name
        assert dec.bad_frames == 0
    imu = DOCUMENTED["imu"]
    assert isinstance(imu, p.ImuBatch)
    assert imu.n == 2 and imu.ticks() == [5_000_000, 5_001_000]
    assert list(struct.unpack("<6h", imu.samples[12:])) == [101, -199, 2047, -4, 3, 1]


def test_documented_bad_frames_are_skipped_and_counted_by_kind():
    for name, kind in (("bad_crc", "crc"), ("truncated", "short"), ("unknown", "unknown")):
        dec = p.Decoder()
        good = doc_example("pong")
        assert dec.feed(doc_example(name) + good) == [DOCUMENTED["pong"]], name
        assert dec.errors[kind] == 1 and dec.bad_frames == 1, (name, dec.errors)
        assert dec.last_error.startswith(kind)
    dec = p.Decoder()
    assert dec.feed(doc_example("extra_fields")) == [p.Battery(13, 3712, 64, False)]


def stream() -> tuple[bytes, list[p.Message]]:
    msgs = list(DOCUMENTED.values()) * 3
    return b"".join(p.encode(m) for m in msgs), msgs


def test_whole_and_byte_at_a_time_give_the_same_messages():
    wire, msgs = stream()
    assert p.Decoder().feed(wire) == msgs
    dec = p.Decoder()
    out: list[p.Message] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i:i + 1])
    assert out == msgs and dec.bad_frames == 0 and dec.frames == len(msgs)


def test_idle_delimiters_are_not_errors_and_overflow_resyncs():
    dec = p.Decoder()
    good = doc_example("ping")
    assert dec.feed(b"\x00\x00" + good + b"\x00") == [DOCUMENTED["ping"]]
    assert dec.bad_frames == 0
    junk = b"\x01" * (p.MAX_FRAME + 10)
    assert dec.feed(junk[:700]) == [] and dec.feed(junk[700:] + b"\x00" + good) == [
        DOCUMENTED["ping"]]
    assert dec.errors["overflow"] == 1


def test_wrong_field_types_and_missing_fields_are_counted_not_raised():
    cases = [
        [p.BUTTON, 1, 1, 5],  # down must be a bool
        [p.BUTTON, 1, True],  # tick missing
        [p.IMU, 1, 0, 0, b"", b"\x00" * 13],  # not whole samples
        [p.IMU, 1, 0, 0, b"\x00" * 4, b"\x00" * 24],  # 2 samples need 1 delta
        [p.STROBE, 70000, 1, 2, 3],  # seq over uint16
        [p.HELLO, 1, 1, 0, "fw", [1, 2]],  # caps must be a map
    ]
    dec = p.Decoder()
    for c in cases:
        assert dec.feed(p.frame(msgpack.packb(c, use_bin_type=True))) == []
    assert dec.errors["fields"] == len(cases) and dec.frames == 0
    dec2 = p.Decoder()
    assert dec2.feed(p.frame(b"\xc1\xc1\xc1")) == [] and dec2.errors["payload"] == 1
    assert dec2.feed(p.frame(msgpack.packb({"a": 1}))) == [] and dec2.errors["payload"] == 2
    assert dec.bad_frames == len(cases)
    dec3 = p.Decoder()  # non-string map keys are refused by the msgpack reader itself
    assert dec3.feed(p.frame(msgpack.packb([p.HELLO, 1, 1, 0, "fw", {1: 2}]))) == []
    assert dec3.errors["payload"] == 1


FUZZ = {"frames": 0, "examples": 0}


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=10))
def test_fuzz_random_bytes_never_raise(chunks):
    dec = p.Decoder()
    for c in chunks:
        assert isinstance(dec.feed(c), list)
    FUZZ["frames"] += dec.frames + dec.bad_frames
    FUZZ["examples"] += 1


@settings(max_examples=400, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 10**6), split=st.integers(1, 64))
def test_fuzz_corrupted_streams_lose_only_the_damaged_frames(edits, cut, split):
    wire, msgs = stream()
    bad = bytearray(wire)
    for pos, val in edits:
        bad[pos % len(bad)] = val
    del bad[cut % len(bad): cut % len(bad) + (cut % 7)]  # a truncation somewhere
    dec = p.Decoder()
    out: list[p.Message] = []
    for i in range(0, len(bad), split):
        out += dec.feed(bytes(bad[i:i + split]))
    # every message that came out is one that went in (the CRC lets no damage through)
    for m in out:
        assert m in msgs
    damaged = len(edits) + 2  # each edit or cut can break at most two frames
    assert len(out) >= len(msgs) - 2 * damaged
    FUZZ["frames"] += dec.frames + dec.bad_frames
    FUZZ["examples"] += 1


def test_fuzz_tally():
    """Runs after the fuzz tests in this file: says how many frames they tried."""
    print(f"\nmcu decoder fuzz: {FUZZ['examples']} streams, {FUZZ['frames']} frames decoded "
          "or rejected")
    assert FUZZ["examples"] == 0 or FUZZ["frames"] > 1000
