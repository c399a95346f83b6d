"""The head-MCU serial link (docs/mcu-protocol.md): COBS frames of msgpack + CRC-32, sans-IO.

    encode(msg) -> bytes                      # one frame, delimiter included
    Decoder().feed(data) -> list[message]     # any byte boundaries; counts what it skips

A frame on the wire is ``COBS(payload || crc32le(payload)) || 0x00``. The payload is a
msgpack array ``[type, seq, field...]``. Decoding never raises on input: a frame that is
not valid is counted under ``Decoder.errors[kind]`` (kinds in ERROR_KINDS), remembered in
``Decoder.last_error``, and skipped; the next 0x00 resynchronises.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cobs import cobs

PROTO_MAJOR = 1
PROTO_MINOR = 1
MAX_FRAME = 1024
"""Largest encoded frame (delimiter excluded) either side accepts; longer input is dropped
up to the next delimiter and counted as ``overflow``."""
TICK_NS = 1_000
"""MCU ticks are microseconds, a uint32 that wraps every 71.6 minutes."""
TICK_BITS = 32
SEQ_MOD = 1 << 16
IMU_SAMPLE = struct.Struct("<6h")

# message types, MCU -> host
HELLO, IMU, STROBE, BUTTON, BATTERY, PONG, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x7F
# host -> MCU
ACCEPT, PING, LED, HAPTIC, HELLO_REQUEST, BYE = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86

ERROR_KINDS = ("cobs", "short", "crc", "payload", "fields", "unknown", "overflow")


@dataclass(frozen=True)
class Hello:
    seq: int
    major: int
    minor: int
    firmware: str
    caps: dict[str, Any]


@dataclass(frozen=True)
class ImuBatch:
    seq: int
    index: int
    """Sample number of the first sample (uint32, counts every sample the MCU took)."""
    tick0: int
    deltas: tuple[int, ...]
    """Ticks of each sample after the first, relative to tick0 (uint16 each)."""
    samples: bytes
    """n * 12 bytes: int16 LE ax ay az gx gy gz per sample (raw counts)."""

    @property
    def n(self) -> int:
        return len(self.samples) // IMU_SAMPLE.size

    def ticks(self) -> list[int]:
        return [self.tick0] + [self.tick0 + d for d in self.deltas]


@dataclass(frozen=True)
class Strobe:
    seq: int
    index: int
    """Strobe edge number (uint32): a gap in it is a strobe the MCU missed or lost."""
    rise: int
    fall: int
    """Ticks of the strobe's rising edge (exposure start) and falling edge (exposure end)."""


@dataclass(frozen=True)
class Button:
    seq: int
    down: bool
    tick: int


@dataclass(frozen=True)
class Battery:
    seq: int
    millivolts: int
    percent: int
    charging: bool


@dataclass(frozen=True)
class Pong:
    seq: int
    ping_id: int
    tick: int
    """MCU tick when the ping's frame was complete (its delimiter arrived)."""


@dataclass(frozen=True)
class McuError:
    seq: int
    code: int
    detail: str


@dataclass(frozen=True)
class Accept:
    seq: int
    major: int
    minor: int


@dataclass(frozen=True)
class Ping:
    seq: int
    ping_id: int


@dataclass(frozen=True)
class Led:
    seq: int
    pattern: int
    rgb: int


@dataclass(frozen=True)
class Haptic:
    seq: int
    pattern: int
    ms: int


@dataclass(frozen=True)
class HelloRequest:
    seq: int


@dataclass(frozen=True)
class Bye:
    """The host stops on purpose (1.1): the MCU keeps its pattern, no host-silence fault."""

    seq: int


HOST_SILENCE_S = 3.0
"""An MCU that accepted a host and then hears no valid frame from it for this long, without
a ``bye``, shows the fault pattern by itself (docs/mcu-protocol.md, "Host silence")."""

Message = (Hello | ImuBatch | Strobe | Button | Battery | Pong | McuError | Accept | Ping
           | Led | Haptic | HelloRequest | Bye)


class FieldError(ValueError):
    pass


def _u(v: Any, bits: int) -> int:
    if type(v) is not int or not 0 <= v < (1 << bits):
        raise FieldError(f"expected uint{bits}, got {v!r}")
    return v


def _b(v: Any) -> bool:
    if type(v) is not bool:
        raise FieldError(f"expected bool, got {v!r}")
    return v


def _bin(v: Any) -> bytes:
    if not isinstance(v, bytes):
        raise FieldError(f"expected bin, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise FieldError(f"expected str, got {type(v).__name__}")
    return v


def _hello(s: int, f: list[Any]) -> Hello:
    caps = f[3]
    if not isinstance(caps, dict) or not all(isinstance(k, str) for k in caps):
        raise FieldError("caps must be a map with string keys")
    return Hello(s, _u(f[0], 8), _u(f[1], 8), _str(f[2]), caps)


_DELTAS: dict[int, struct.Struct] = {}
"""The tick deltas' layout per sample count (a frame's count repeats: compiled once)."""


def _deltas(n: int) -> struct.Struct:
    st = _DELTAS.get(n)
    if st is None:
        st = _DELTAS[n] = struct.Struct(f"<{n - 1}H")
    return st


def _imu(s: int, f: list[Any]) -> ImuBatch:
    deltas, samples = _bin(f[2]), _bin(f[3])
    if len(samples) % IMU_SAMPLE.size or not samples:
        raise FieldError("samples must be a whole number (>= 1) of 12-byte samples")
    n = len(samples) // IMU_SAMPLE.size
    if len(deltas) != 2 * (n - 1):
        raise FieldError(f"{n} samples need {n - 1} tick deltas")
    return ImuBatch(s, _u(f[0], 32), _u(f[1], 32), _deltas(n).unpack(deltas), samples)


_SPEC: dict[int, tuple[int, Any]] = {
    HELLO: (4, _hello),
    IMU: (4, _imu),
    STROBE: (3, lambda s, f: Strobe(s, _u(f[0], 32), _u(f[1], 32), _u(f[2], 32))),
    BUTTON: (2, lambda s, f: Button(s, _b(f[0]), _u(f[1], 32))),
    BATTERY: (3, lambda s, f: Battery(s, _u(f[0], 16), _u(f[1], 8), _b(f[2]))),
    PONG: (2, lambda s, f: Pong(s, _u(f[0], 32), _u(f[1], 32))),
    ERROR: (2, lambda s, f: McuError(s, _u(f[0], 16), _str(f[1]))),
    ACCEPT: (2, lambda s, f: Accept(s, _u(f[0], 8), _u(f[1], 8))),
    PING: (1, lambda s, f: Ping(s, _u(f[0], 32))),
    LED: (2, lambda s, f: Led(s, _u(f[0], 8), _u(f[1], 24))),
    HAPTIC: (2, lambda s, f: Haptic(s, _u(f[0], 8), _u(f[1], 16))),
    HELLO_REQUEST: (0, lambda s, f: HelloRequest(s)),
    BYE: (0, lambda s, f: Bye(s)),
}


def fields(msg: Message) -> list[Any]:
    """The payload array of a message: [type, seq, field...]."""
    m = msg
    if isinstance(m, Hello):
        return [HELLO, m.seq, m.major, m.minor, m.firmware, m.caps]
    if isinstance(m, ImuBatch):
        return [IMU, m.seq, m.index, m.tick0, struct.pack(f"<{len(m.deltas)}H", *m.deltas),
                m.samples]
    if isinstance(m, Strobe):
        return [STROBE, m.seq, m.index, m.rise, m.fall]
    if isinstance(m, Button):
        return [BUTTON, m.seq, m.down, m.tick]
    if isinstance(m, Battery):
        return [BATTERY, m.seq, m.millivolts, m.percent, m.charging]
    if isinstance(m, Pong):
        return [PONG, m.seq, m.ping_id, m.tick]
    if isinstance(m, McuError):
        return [ERROR, m.seq, m.code, m.detail]
    if isinstance(m, Accept):
        return [ACCEPT, m.seq, m.major, m.minor]
    if isinstance(m, Ping):
        return [PING, m.seq, m.ping_id]
    if isinstance(m, Led):
        return [LED, m.seq, m.pattern, m.rgb]
    if isinstance(m, Haptic):
        return [HAPTIC, m.seq, m.pattern, m.ms]
    if isinstance(m, Bye):
        return [BYE, m.seq]
    return [HELLO_REQUEST, m.seq]


def frame(payload: bytes) -> bytes:
    """COBS(payload || crc32le) || 0x00."""
    body: bytes = cobs.encode(payload + struct.pack("<I", zlib.crc32(payload)))
    return body + b"\x00"


def encode(msg: Message) -> bytes:
    """One message as a frame, delimiter included."""
    payload: bytes = msgpack.packb(fields(msg), use_bin_type=True)
    return frame(payload)


def parse_payload(payload: bytes) -> Message:
    """A payload (CRC already checked) to a message; raises FieldError, or KeyError for an
    unknown type."""
    try:
        arr = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types for garbage
        raise FieldError(f"not msgpack: {e}") from None
    if not isinstance(arr, list) or len(arr) < 2:
        raise FieldError("payload is not an array [type, seq, ...]")
    t, s = arr[0], arr[1]
    if type(t) is not int:
        raise FieldError("type is not an integer")
    spec = _SPEC.get(t)
    if spec is None:
        raise KeyError(t)
    nfields, make = spec
    if len(arr) < 2 + nfields:
        raise FieldError(f"type 0x{t:02x} needs {nfields} fields, got {len(arr) - 2}")
    # extra trailing fields are a later minor version's additions: ignored
    msg: Message = make(_u(s, 16), arr[2:2 + nfields])
    return msg


@dataclass
class Decoder:
    """Bytes in, messages out. Any chunking of the input gives the same messages."""

    max_frame: int = MAX_FRAME
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    frames: int = 0
    """Frames decoded into a message."""
    last_error: str = ""
    bytes_in: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, data: bytes) -> list[Message]:
        self.bytes_in += len(data)
        out: list[Message] = []
        buf = self._buf
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                rest = data[start:]
                if self._skipping:
                    return out
                if len(buf) + len(rest) > self.max_frame:
                    self._fail("overflow", f"no delimiter in {self.max_frame} bytes")
                    buf.clear()
                    self._skipping = True
                else:
                    buf += rest
                return out
            if self._skipping:
                self._skipping = False
                buf.clear()
            else:
                if buf:
                    buf += data[start:end]
                    raw = bytes(buf)
                    buf.clear()
                else:
                    raw = data[start:end]
                if raw:  # back-to-back delimiters are idle fill, not an error
                    m = self._frame(raw)
                    if m is not None:
                        out.append(m)
            start = end + 1

    def _fail(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.last_error = f"{kind}: {detail}"

    def _frame(self, raw: bytes) -> Message | None:
        if len(raw) > self.max_frame:
            self._fail("overflow", f"frame of {len(raw)} bytes")
            return None
        try:
            body: bytes = cobs.decode(raw)
        except cobs.DecodeError as e:
            self._fail("cobs", str(e))
            return None
        if len(body) < 6:  # the smallest payload (fixarray, type, seq) + CRC is 7 bytes
            self._fail("short", f"{len(body)} bytes")
            return None
        payload, crc = body[:-4], body[-4:]
        if zlib.crc32(payload) != struct.unpack("<I", crc)[0]:
            self._fail("crc", f"frame of {len(body)} bytes")
            return None
        try:
            msg = parse_payload(payload)
        except KeyError as e:
            self._fail("unknown", f"type {e.args[0]!r}")
            return None
        except FieldError as e:
            kind = "payload" if str(e).startswith(("not msgpack", "payload is")) else "fields"
            self._fail(kind, str(e))
            return None
        self.frames += 1
        return msg

    @property
    def bad_frames(self) -> int:
        return sum(self.errors.values())
