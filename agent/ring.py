"""Preallocated single-producer single-consumer rings that never block the producer.

Both rings rely on the GIL instead of locks: the producer thread is the only writer of the
head counter (and the drop counters), the consumer thread the only writer of the tail
counter. Counters are monotonic Python ints (never wrapped); a slot is ``counter & mask``.
The producer fills the slots before it publishes them by advancing the head, and the
consumer copies them out before it frees them by advancing the tail, so neither side ever
reads a half-written record. Switching the GIL is a full memory barrier, which keeps this
true on weakly ordered CPUs (the Pi's ARM cores) too.

When a ring is full the *new* records are dropped and counted (``dropped``); what is already
queued is never overwritten, so the consumer sees an intact, ordered prefix and a count of
what it missed.

    RecordRing(dtype, capacity)                fixed-size records in a numpy structured array
    ByteRing(capacity_bytes, max_records, meta_dtype)
                                               variable-size payloads (encoded video frames)
                                               plus one metadata record each
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

_STRUCT_CODES = {("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
                 ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
                 ("f", 4): "f", ("f", 8): "d", ("b", 1): "?"}
_NATIVE = "<" if sys.byteorder == "little" else ">"


def record_struct(dtype: np.dtype[Any]) -> struct.Struct | None:
    """A ``struct.Struct`` that packs one record of ``dtype`` byte for byte as numpy stores
    it, or None where none does (padding, sub-arrays, nested or mixed-endian fields)."""
    names = dtype.names or ()
    fields: Mapping[str, Any] = dtype.fields or {}
    order = None
    fmt = ""
    pos = 0
    for name in names:
        ft, off = fields[name][:2]
        code = _STRUCT_CODES.get((ft.kind, ft.itemsize))
        if code is None or ft.shape or off != pos:
            return None
        bo = _NATIVE if ft.byteorder in ("=", "|") else ft.byteorder
        if order not in (None, bo):
            return None
        order = bo
        fmt += code
        pos += ft.itemsize
    if not names or pos != dtype.itemsize:
        return None
    return struct.Struct((order or _NATIVE) + fmt)


def _pow2(n: int) -> int:
    if n < 1:
        raise ValueError(f"capacity must be at least 1, got {n}")
    return 1 << (n - 1).bit_length()


class RecordRing:
    """A ring of numpy structured records; ``capacity`` is rounded up to a power of two."""

    __slots__ = ("_buf", "_head", "_mask", "_pack", "_raw", "_size", "_tail", "_view",
                 "capacity", "dropped", "dtype")

    def __init__(self, dtype: npt.DTypeLike, capacity: int) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject:
            raise ValueError("a ring holds plain numeric records, not Python objects")
        self.capacity = _pow2(capacity)
        self._mask = self.capacity - 1
        self._buf: np.ndarray[Any, Any] = np.zeros(self.capacity, dtype=self.dtype)
        # The same memory as bytes: copying raw bytes is several times faster than numpy's
        # field-by-field copy of structured records.
        self._raw: np.ndarray[Any, Any] = self._buf.view(np.uint8)
        self._view: memoryview = self._raw.data
        self._size = self.dtype.itemsize
        # One record packed straight into its slot: a reader thread pushes a record per wake,
        # with the caches cold, and numpy's per-field assignment of a tuple runs ~2x as much
        # code as struct's (bench/bench_ring_push.py)
        pack = record_struct(self.dtype)
        self._pack = pack.pack_into if pack is not None else None
        self._head = 0  # written by the producer only
        self._tail = 0  # written by the consumer only
        self.dropped = 0  # written by the producer only; monotonic

    def __len__(self) -> int:
        return self._head - self._tail

    @property
    def free(self) -> int:
        """Slots the producer can fill now (a lower bound while the consumer runs)."""
        return self.capacity - (self._head - self._tail)

    # ------------------------------------------------------------------ producer side

    def push(self, record: tuple[Any, ...]) -> bool:
        """Append one record (a tuple in field order); False if full (dropped and counted)."""
        head = self._head
        if head - self._tail >= self.capacity:
            self.dropped += 1
            return False
        slot = head & self._mask
        pack = self._pack
        if pack is None:
            self._buf[slot] = record
        else:
            try:
                pack(self._view, slot * self._size, *record)
            except (struct.error, TypeError, OverflowError):  # a value struct does not take
                self._buf[slot] = record  # as it is (a float for an int field): numpy's way
        self._head = head + 1
        return True

    def push_batch(self, arr: np.ndarray[Any, Any]) -> int:
        """Append records of this ring's dtype; returns how many fit (the rest are dropped)."""
        n = len(arr)
        head = self._head
        room = self.capacity - (head - self._tail)
        if n > room:
            self.dropped += n - room
            n = room
        if n <= 0:
            return 0
        if arr.dtype != self.dtype or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr[:n], dtype=self.dtype)
        src = arr.view(np.uint8)
        size = self._size
        start = head & self._mask
        first = min(n, self.capacity - start)
        self._raw[start * size:(start + first) * size] = src[:first * size]
        if first < n:
            self._raw[:(n - first) * size] = src[first * size:n * size]
        self._head = head + n
        return n

    # ------------------------------------------------------------------ consumer side

    def pop_batch(self, max_n: int | None = None) -> np.ndarray[Any, Any]:
        """Remove and return up to ``max_n`` records (all if None), oldest first, as a copy."""
        tail = self._tail
        n = self._head - tail
        if max_n is not None and max_n < n:
            n = max(max_n, 0)
        if n == 0:
            return np.empty(0, dtype=self.dtype)
        size = self._size
        start = tail & self._mask
        first = min(n, self.capacity - start)
        if first == n:
            out = self._raw[start * size:(start + n) * size].copy()
        else:
            out = np.concatenate((self._raw[start * size:], self._raw[:(n - first) * size]))
        self._tail = tail + n
        return out.view(self.dtype)

    def _peek(self) -> np.void | None:
        """The oldest record (a view into the ring: copy it before ``_advance``)."""
        if self._head == self._tail:
            return None
        rec: np.void = self._buf[self._tail & self._mask]
        return rec

    def _advance(self, n: int = 1) -> None:
        self._tail += n


class ByteRing:
    """Variable-size payloads in one preallocated buffer, each with a metadata record.

    A payload is stored contiguously: when it does not fit before the end of the buffer the
    producer skips to the start (the skipped bytes count as used until the consumer passes
    them), so a payload of up to ``capacity_bytes // 2`` always fits into an empty ring. Each
    record holds ``offset``, ``length`` and ``end`` (the monotonic byte counter
    after the payload, which the consumer publishes as its byte tail) followed by the fields
    of ``meta_dtype``.
    """

    __slots__ = ("_bhead", "_btail", "_buf", "_view", "capacity_bytes", "dropped_bytes",
                 "dropped_records", "meta_dtype", "records")

    def __init__(self, capacity_bytes: int, max_records: int, meta_dtype: npt.DTypeLike) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be at least 1, got {capacity_bytes}")
        self.meta_dtype = np.dtype(meta_dtype)
        clash = {"offset", "length", "end"} & set(self.meta_dtype.names or ())
        if clash:
            raise ValueError(f"meta_dtype may not use the field names {sorted(clash)}")
        meta_fields: Mapping[str, Any] = self.meta_dtype.fields or {}
        fields: list[tuple[str, Any]] = [("offset", "<u8"), ("length", "<u8"), ("end", "<u8")]
        fields += [(name, meta_fields[name][0]) for name in self.meta_dtype.names or ()]
        self.records = RecordRing(np.dtype(fields), max_records)
        self.capacity_bytes = capacity_bytes
        self._buf = bytearray(capacity_bytes)
        self._view = memoryview(self._buf)
        self._bhead = 0  # producer: bytes used so far, including skipped ends
        self._btail = 0  # consumer: bytes released so far
        self.dropped_records = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def used_bytes(self) -> int:
        return self._bhead - self._btail

    def push(self, data: bytes | bytearray | memoryview, meta: tuple[Any, ...]) -> bool:
        """Append one payload and its metadata; False if it does not fit (dropped, counted)."""
        n = len(data)
        cap = self.capacity_bytes
        head = self._bhead
        offset = head % cap
        skip = cap - offset if offset + n > cap else 0
        recs = self.records
        if (n + skip > cap - (head - self._btail)
                or recs._head - recs._tail >= recs.capacity):
            self.dropped_records += 1
            self.dropped_bytes += n
            return False
        if skip:
            offset = 0
        self._view[offset:offset + n] = data
        end = head + skip + n
        self._bhead = end
        # the record ring's push, inlined (its room was checked above): one call less on the
        # readers' hot path, where each call runs cold
        rhead = recs._head
        slot = rhead & recs._mask
        pack = recs._pack
        try:
            if pack is None:
                raise TypeError
            pack(recs._view, slot * recs._size, offset, n, end, *meta)
        except (struct.error, TypeError, OverflowError):
            recs._buf[slot] = (offset, n, end, *meta)
        recs._head = rhead + 1  # publishes the payload
        return True

    def pop_all(self) -> list[tuple[tuple[Any, ...], bytes]]:
        """Every payload there is, oldest first, each with its metadata fields as a tuple of
        Python values (``meta_dtype``'s fields, in order): one copy of the records, not one
        per record. The byte tail moves only after the payloads are copied."""
        recs = self.records.pop_batch()
        if not len(recs):
            return []
        view = self._view
        nmeta = len(self.meta_dtype.names or ())
        out = [(tuple(r[3:3 + nmeta]), bytes(view[r[0]:r[0] + r[1]]))
               for r in recs.tolist()]
        self._btail = int(recs["end"][-1])
        return out

    def pop(self) -> tuple[np.void, bytes] | None:
        """The oldest payload and its metadata record (a copy), or None when empty."""
        rec = self.records._peek()
        if rec is None:
            return None
        rec = rec.copy()
        offset = int(rec["offset"])
        data = bytes(self._view[offset:offset + int(rec["length"])])
        self._btail = int(rec["end"])
        self.records._advance()
        return rec, data
