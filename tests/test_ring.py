"""The SPSC rings: unit behaviour, threaded stress (order, integrity, nothing unaccounted)
and a model-based comparison against a deque."""

from __future__ import annotations

import collections
import random
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.ring import ByteRing, RecordRing

IMU = np.dtype([("ax", "<i2"), ("ay", "<i2"), ("az", "<i2"), ("gx", "<i2"), ("gy", "<i2"),
                ("gz", "<i2"), ("t_ns", "<u8"), ("seq", "<u4"), ("check", "<u4")])
SMALL = np.dtype([("seq", "<u4"), ("val", "<i2")])
META = np.dtype([("seq", "<u8"), ("key", "u1")])


def imu_records(start: int, n: int) -> np.ndarray:
    a = np.zeros(n, dtype=IMU)
    seq = np.arange(start, start + n, dtype=np.uint64)
    a["seq"] = seq.astype(np.uint32)
    a["t_ns"] = seq * 5_000_000 + 17
    for i, f in enumerate(("ax", "ay", "az", "gx", "gy", "gz")):
        a[f] = ((seq * (i + 3) + i) % 65536).astype(np.uint16).view(np.int16)
    a["check"] = checksum(a)
    return a


def checksum(a: np.ndarray) -> np.ndarray:
    acc = a["t_ns"].astype(np.uint64) ^ a["seq"].astype(np.uint64)
    for f in ("ax", "ay", "az", "gx", "gy", "gz"):
        acc = acc * np.uint64(31) + a[f].view(np.uint16).astype(np.uint64)
    return (acc & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# --------------------------------------------------------------------------- RecordRing


def test_capacity_rounds_up_to_a_power_of_two():
    assert RecordRing(SMALL, 1).capacity == 1
    assert RecordRing(SMALL, 5).capacity == 8
    assert RecordRing(SMALL, 1024).capacity == 1024
    with pytest.raises(ValueError):
        RecordRing(SMALL, 0)
    with pytest.raises(ValueError):
        RecordRing(np.dtype([("o", object)]), 4)


def test_push_pop_in_order_and_drop_new_records_when_full():
    r = RecordRing(SMALL, 4)
    assert all(r.push((i, -i)) for i in range(4))
    assert len(r) == 4
    assert r.push((99, 0)) is False
    assert r.dropped == 1
    out = r.pop_batch()
    assert out["seq"].tolist() == [0, 1, 2, 3]
    assert out["val"].tolist() == [0, -1, -2, -3]
    assert len(r) == 0
    assert len(r.pop_batch()) == 0
    assert r.push((4, 4))
    assert r.pop_batch()["seq"].tolist() == [4]
    assert r.dropped == 1  # monotonic, not reset by pops


def test_push_batch_writes_what_fits_and_counts_the_rest():
    r = RecordRing(SMALL, 8)
    a = np.zeros(6, SMALL)
    a["seq"] = np.arange(6)
    assert r.push_batch(a) == 6
    b = np.zeros(5, SMALL)
    b["seq"] = np.arange(6, 11)
    assert r.push_batch(b) == 2
    assert r.dropped == 3
    assert r.pop_batch()["seq"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert r.push_batch(np.zeros(0, SMALL)) == 0


def test_wrap_around_and_max_n():
    r = RecordRing(SMALL, 8)
    seq = 0
    for _ in range(20):  # wraps the 8-slot ring many times with uneven batches
        a = np.zeros(5, SMALL)
        a["seq"] = np.arange(seq, seq + 5)
        assert r.push_batch(a) == 5
        first = r.pop_batch(3)
        rest = r.pop_batch(None)
        assert first["seq"].tolist() + rest["seq"].tolist() == list(range(seq, seq + 5))
        seq += 5
    assert r.pop_batch(0).shape == (0,)


def test_pop_returns_a_copy_and_push_batch_converts_compatible_arrays():
    r = RecordRing(SMALL, 4)
    r.push((1, 1))
    out = r.pop_batch()
    r.push((2, 2))
    assert out["seq"].tolist() == [1]  # not overwritten by the later push
    out["seq"][0] = 7  # writable
    # a strided, differently typed array is converted field by field
    src = np.zeros(6, dtype=[("seq", "<i8"), ("val", "<i8")])
    src["seq"] = np.arange(6)
    assert r.push_batch(src[::2]) == 3
    assert r.pop_batch()["seq"].tolist() == [2, 0, 2, 4]


# --------------------------------------------------------------------------- ByteRing


def test_byte_ring_round_trip_with_meta():
    r = ByteRing(1024, 16, META)
    assert r.pop() is None
    assert r.push(b"hello", (1, 1))
    assert r.push(memoryview(b"world!"), (2, 0))
    rec, data = r.pop()
    assert data == b"hello" and int(rec["seq"]) == 1 and int(rec["key"]) == 1
    rec, data = r.pop()
    assert data == b"world!" and int(rec["seq"]) == 2
    assert r.pop() is None
    assert r.used_bytes == 0


def test_byte_ring_never_splits_a_payload_and_skips_to_the_start():
    r = ByteRing(100, 16, META)
    assert r.push(b"a" * 60, (0, 0))
    assert r.pop()[1] == b"a" * 60
    # 50 bytes do not fit in the last 40: the payload goes to offset 0 in one piece
    assert r.push(b"b" * 50, (1, 0))
    rec, data = r.pop()
    assert int(rec["offset"]) == 0 and data == b"b" * 50
    assert r.used_bytes == 0


def test_byte_ring_drops_when_bytes_or_records_run_out():
    r = ByteRing(100, 2, META)
    assert r.push(b"x" * 101, (0, 0)) is False  # larger than the ring
    assert (r.dropped_records, r.dropped_bytes) == (1, 101)
    assert r.push(b"x" * 70, (1, 0))
    assert r.push(b"y" * 40, (2, 0)) is False  # 30 bytes left
    assert (r.dropped_records, r.dropped_bytes) == (2, 141)
    assert r.push(b"y" * 30, (3, 0))
    assert r.push(b"", (4, 0)) is False  # two records already: the record ring is full
    assert r.dropped_records == 3
    assert [int(r.pop()[0]["seq"]) for _ in range(2)] == [1, 3]
    with pytest.raises(ValueError):
        ByteRing(100, 2, np.dtype([("offset", "<u8")]))


def test_byte_ring_pop_all_takes_everything_in_order_with_python_meta():
    r = ByteRing(100, 8, META)
    assert r.pop_all() == []
    assert r.push(b"a" * 60, (5, 1))
    assert r.pop_all() == [((5, 1), b"a" * 60)]
    assert r.push(b"b" * 30, (6, 0)) and r.push(b"c" * 35, (7, 1))  # c wraps to offset 0
    got = r.pop_all()
    assert got == [((6, 0), b"b" * 30), ((7, 1), b"c" * 35)]
    assert all(type(v) is int for meta, _ in got for v in meta)
    assert r.used_bytes == 0 and len(r) == 0
    assert r.push(b"d" * 50, (8, 0))  # empty again: half the ring always fits


# --------------------------------------------------------------------------- struct packing

PACKED = [IMU, SMALL, META, np.dtype([("offset", "<u8"), ("length", "<u8"), ("end", "<u8"),
                                      ("arrival_ns", "<i8"), ("ticket", "<u8")]),
          np.dtype([("f", "<f4"), ("d", "<f8"), ("ok", "?"), ("b", "i1"), ("u", "<u2")]),
          np.dtype([("a", ">i4"), ("b", ">u8")])]
UNPACKED = [np.dtype([("a", "u1"), ("b", "<u8")], align=True),  # padding
            np.dtype([("v", "<i2", (3,)), ("t", "<u8")]),  # a sub-array
            np.dtype([("a", ">i4"), ("b", "<i4")]),  # mixed byte order
            np.dtype([("h", "<f2"), ("t", "<u8")])]  # half floats: numpy's rounding


def _value(ft: np.dtype, draw) -> object:
    if ft.kind == "f":
        return draw(st.floats(width=32 if ft.itemsize == 4 else 64, allow_nan=False))
    if ft.kind == "b":
        return draw(st.booleans())
    info = np.iinfo(ft)
    return draw(st.integers(int(info.min), int(info.max)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PACKED), st.data())
def test_a_pushed_record_is_stored_byte_for_byte_as_numpy_stores_it(dtype, data):
    from agent.ring import record_struct

    assert record_struct(dtype) is not None
    rec = tuple(_value(dtype.fields[name][0], data.draw) for name in dtype.names)
    ring = RecordRing(dtype, 4)
    ring.push(rec)
    want = np.zeros(1, dtype)
    want[0] = rec
    assert ring.pop_batch().tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", UNPACKED)
def test_records_struct_cannot_pack_are_stored_by_numpy(dtype):
    from agent.ring import record_struct

    assert record_struct(dtype) is None
    ring = RecordRing(dtype, 4)
    rec = tuple(np.zeros(1, dtype)[0].tolist())
    assert ring.push(rec)
    assert ring.pop_batch().tobytes() == np.zeros(1, dtype).tobytes()


def test_a_value_struct_refuses_takes_numpys_conversion():
    ring = RecordRing(SMALL, 4)
    assert ring.push((7.9, np.int16(-3)))  # a float for an int field: numpy truncates it
    assert ring.pop_batch().tolist() == [(7, -3)]
    with pytest.raises(ValueError):  # the wrong number of fields is still an error
        ring.push((1, 2, 3))
    b = ByteRing(64, 4, META)
    assert b.push(b"x", (2.0, True)) and b.pop_all() == [((2, 1), b"x")]


# --------------------------------------------------------------------------- threaded stress


@pytest.fixture
def fast_switching():
    """Hand the GIL between threads every few microseconds so that producer and consumer
    really interleave (by default a thread keeps it for 5 ms, long enough to fill a ring)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    yield
    sys.setswitchinterval(old)


def test_stress_record_ring_two_million_imu_records(fast_switching):
    total, batch = 2_000_000, 32
    src = imu_records(0, total)
    ring = RecordRing(IMU, 1024)
    done = threading.Event()
    written = [0]

    def producer() -> None:
        # Flat out, never waiting for room; every other stretch of 20,000 batches also
        # yields the GIL after each batch, so both overflow and steady flow are exercised.
        for k, i in enumerate(range(0, total, batch)):
            written[0] += ring.push_batch(src[i:i + batch])
            if (k // 20_000) % 2:
                time.sleep(0)
        done.set()

    received = []
    t = threading.Thread(target=producer)
    t.start()
    while True:
        finished = done.is_set()
        out = ring.pop_batch()
        if len(out):
            received.append(out)
        elif finished:
            break
        else:
            time.sleep(0)
    t.join()
    got = np.concatenate(received) if received else np.zeros(0, IMU)
    seq = got["seq"].astype(np.int64)
    assert len(got) == written[0]
    assert len(got) + ring.dropped == total  # nothing unaccounted for
    assert np.all(np.diff(seq) > 0)  # order kept; gaps only where records were dropped
    assert np.array_equal(got["check"], checksum(got))  # no torn or mixed records
    assert np.array_equal(got["t_ns"], seq.astype(np.uint64) * 5_000_000 + 17)
    assert len(got) > 0
    print("received", len(got), "dropped", ring.dropped)


def _payload(seq: int, size: int) -> bytes:
    unit = seq.to_bytes(8, "little")
    return (unit * (size // 8 + 1))[:size]


def _stress_byte_ring(total: int, take) -> None:
    """A producer thread pushes ``total`` random-size payloads; ``take(ring)`` returns what
    one read takes, as ``[((seq, key), data), ...]``: in order, intact, or counted dropped."""
    rng = random.Random(7)
    sizes = [rng.randrange(8, 3000) for _ in range(total)]
    ring = ByteRing(256 * 1024, 256, META)
    done = threading.Event()
    sent_bytes = sum(sizes)

    def producer() -> None:
        for seq, size in enumerate(sizes):
            ring.push(_payload(seq, size), (seq, seq % 30 == 0))
            if (seq // 20_000) % 2:
                time.sleep(0)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    last = -1
    n = 0
    got_bytes = 0
    while True:
        finished = done.is_set()
        items = take(ring)
        if not items:
            if finished:
                break
            time.sleep(0)
            continue
        for (seq, key), data in items:
            assert seq > last
            assert len(data) == sizes[seq]
            assert data == _payload(seq, sizes[seq])
            assert key == (seq % 30 == 0)
            last = seq
            n += 1
            got_bytes += len(data)
    t.join()
    assert n + ring.dropped_records == total
    assert got_bytes + ring.dropped_bytes == sent_bytes
    assert ring.used_bytes == 0 and len(ring) == 0
    print("received", n, "dropped", ring.dropped_records)


def _pop_one(ring: ByteRing) -> list:
    item = ring.pop()
    if item is None:
        return []
    rec, data = item
    return [((int(rec["seq"]), int(rec["key"])), data)]


def test_stress_byte_ring_random_size_payloads(fast_switching):
    _stress_byte_ring(150_000, _pop_one)


def test_stress_byte_ring_pop_all(fast_switching):
    _stress_byte_ring(50_000, ByteRing.pop_all)  # the pop() stress above runs 150,000


# --------------------------------------------------------------------------- model-based


class RecordRingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ring = RecordRing(SMALL, 8)
        self.model: collections.deque[int] = collections.deque()
        self.dropped = 0
        self.next = 0

    @rule()
    def push(self) -> None:
        ok = self.ring.push((self.next, self.next % 100))
        assert ok == (len(self.model) < 8)
        if ok:
            self.model.append(self.next)
        else:
            self.dropped += 1
        self.next += 1

    @rule(n=st.integers(0, 12))
    def push_batch(self, n: int) -> None:
        a = np.zeros(n, SMALL)
        a["seq"] = np.arange(self.next, self.next + n)
        a["val"] = a["seq"] % 100
        fit = min(n, 8 - len(self.model))
        assert self.ring.push_batch(a) == fit
        self.model.extend(range(self.next, self.next + fit))
        self.dropped += n - fit
        self.next += n

    @rule(max_n=st.one_of(st.none(), st.integers(0, 10)))
    def pop_batch(self, max_n: int | None) -> None:
        out = self.ring.pop_batch(max_n)
        k = len(self.model) if max_n is None else min(max_n, len(self.model))
        expect = [self.model.popleft() for _ in range(k)]
        assert out["seq"].tolist() == expect
        assert out["val"].tolist() == [e % 100 for e in expect]

    @invariant()
    def counts(self) -> None:
        assert len(self.ring) == len(self.model)
        assert self.ring.dropped == self.dropped


class ByteRingModel(RuleBasedStateMachine):
    CAP = 64

    def __init__(self) -> None:
        super().__init__()
        self.ring = ByteRing(self.CAP, 4, META)
        self.model: collections.deque[tuple[int, bytes]] = collections.deque()
        self.dropped = 0
        self.dropped_bytes = 0
        self.next = 0

    @rule(size=st.integers(0, 70))
    def push(self, size: int) -> None:
        data = bytes((self.next + i) % 256 for i in range(size))
        empty = not self.model
        ok = self.ring.push(data, (self.next, 0))
        if size > self.CAP or len(self.model) >= 4:
            assert not ok
        if empty and size <= self.CAP // 2:
            assert ok  # promised: half the ring always fits into an empty ring
        if ok:
            self.model.append((self.next, data))
        else:
            self.dropped += 1
            self.dropped_bytes += size
        self.next += 1

    @precondition(lambda self: True)
    @rule()
    def pop(self) -> None:
        item = self.ring.pop()
        if not self.model:
            assert item is None
            return
        seq, data = self.model.popleft()
        assert item is not None
        assert int(item[0]["seq"]) == seq and item[1] == data

    @invariant()
    def counts(self) -> None:
        assert len(self.ring) == len(self.model)
        assert self.ring.dropped_records == self.dropped
        assert self.ring.dropped_bytes == self.dropped_bytes
        assert sum(len(d) for _, d in self.model) <= self.ring.used_bytes <= self.CAP


TestRecordRingModel = RecordRingModel.TestCase
TestRecordRingModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestByteRingModel = ByteRingModel.TestCase
TestByteRingModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
