"""The wearcap open wrist-band profile (spec: docs/wrist-profile.md), decoder and encoder.

Data notification, little-endian, ``24 + n * 12`` bytes (``24 + n * 6`` without gyro):

    0  u8   version (1)
    1  u8   n, samples in this packet (>= 1)
    2  u8   flags: bit 0 = gyro present, bit 1 = tx_us is a connection-event anchor
    3  u8   reserved, 0
    4  u32  seq: index of the first sample since the stream started (wraps at 2**32)
    8  u64  t0_us: device time of the first sample, µs on a free-running clock (no wrap)
    16 u32  period_ns: sample spacing measured on the device clock, ns
    20 u32  tx_us: device time the packet was handed to the radio, minus t0_us, µs
    24 n x (ax ay az [gx gy gz]) int16 raw counts
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from agent.wrist.decode import DEG, G, ImuChunk

VERSION = 1
"""Version byte of a data notification (unchanged since profile version 1)."""
PROFILE_VERSION = 2
"""Version 2: control-point replies and the two-way time exchange; Info carries the clock
tick and the supported rates. A band whose Info says 1 has neither (the host times it
one-way)."""
HEADER = struct.Struct("<BBBBIQII")
INFO = struct.Struct("<BBHHHff")
INFO_V2 = struct.Struct("<BBHHHffIHH")
TIME_REQUEST = struct.Struct("<BQ")
TIME_REPLY = struct.Struct("<QQQ")
"""The params of ``F0 04 00``: the host's send time echoed; the band's clock (µs) at the
anchor of the connection event the request came in; and at the anchor of the event the reply
is packed for."""
FLAG_GYRO = 0x01
FLAG_ANCHOR = 0x02
SEQ_MOD = 1 << 32

BASE = "2ccb{:04x}-2eb0-4fd6-8f30-a00d31e4cc24"
SERVICE_UUID = BASE.format(0x0001)
DATA_UUID = BASE.format(0x0002)
INFO_UUID = BASE.format(0x0003)
CONTROL_UUID = BASE.format(0x0004)

OP_START, OP_STOP, OP_SET_RATE, OP_TIME = 0x01, 0x02, 0x03, 0x04

DEFAULT_ACC_FS_G = 16
DEFAULT_GYRO_FS_DPS = 2000


@dataclass(frozen=True, slots=True)
class Info:
    """The readable info characteristic (16 bytes in version 1, 24 in version 2)."""

    rate_hz: int
    acc_fs_g: int
    gyro_fs_dps: int
    acc_scale: float
    """m/s^2 per count."""
    gyro_scale: float
    """rad/s per count."""
    gyro: bool = True
    version: int = PROFILE_VERSION
    clock_tick_ns: int = 1000
    """Resolution of the band's clock (version 2; version 1 bands: assumed 1 µs)."""
    min_rate_hz: int = 0
    max_rate_hz: int = 0
    """Rates the band accepts (version 2; 0: not said)."""

    @property
    def two_way(self) -> bool:
        """Whether the band answers the time exchange (profile version 2 and later)."""
        return self.version >= 2

    def encode(self) -> bytes:
        head = (self.version, FLAG_GYRO if self.gyro else 0, self.rate_hz, self.acc_fs_g,
                self.gyro_fs_dps, self.acc_scale, self.gyro_scale)
        if self.version < 2:
            return INFO.pack(*head)
        return INFO_V2.pack(*head, self.clock_tick_ns, self.min_rate_hz, self.max_rate_hz)

    @classmethod
    def decode(cls, data: bytes) -> Info:
        if len(data) < INFO.size:
            raise ValueError(f"info characteristic is {len(data)} bytes, need {INFO.size}")
        ver = data[0]
        if ver == 1:
            _v, flags, rate, afs, gfs, asc, gsc = INFO.unpack_from(data)
            tick, lo, hi = 1000, 0, 0
        elif ver >= 2:  # later versions only append fields
            if len(data) < INFO_V2.size:
                raise ValueError(f"info characteristic version {ver} is {len(data)} bytes, "
                                 f"need {INFO_V2.size}")
            _v, flags, rate, afs, gfs, asc, gsc, tick, lo, hi = INFO_V2.unpack_from(data)
        else:
            raise ValueError(f"unsupported info characteristic version {ver}")
        if not (asc > 0 and gsc > 0):
            raise ValueError("info characteristic scales are not positive")
        return cls(rate, afs, gfs, asc, gsc, bool(flags & FLAG_GYRO), ver, tick or 1000, lo, hi)

    @classmethod
    def default(cls, rate_hz: int = 200) -> Info:
        """What is assumed of a band whose info cannot be read (version 1, no exchange)."""
        return cls(rate_hz, DEFAULT_ACC_FS_G, DEFAULT_GYRO_FS_DPS,
                   DEFAULT_ACC_FS_G * G / 32768, DEFAULT_GYRO_FS_DPS * DEG / 32768, version=1)


def time_request(host_send_ns: int) -> bytes:
    """The host's half of the time exchange: ``04`` and its own send time (u64 ns)."""
    return TIME_REQUEST.pack(OP_TIME, host_send_ns)


def time_reply_params(host_send_ns: int, rx_us: int, tx_us: int) -> bytes:
    return TIME_REPLY.pack(host_send_ns, rx_us, tx_us)


def parse_time_reply(params: bytes) -> tuple[int, int, int]:
    """(host send time echoed, band clock µs at the request, at the reply) from the params
    of ``F0 04 00``."""
    if len(params) < TIME_REPLY.size:
        raise ValueError(f"time reply params are {len(params)} bytes, need {TIME_REPLY.size}")
    host, rx, tx = TIME_REPLY.unpack_from(params)
    return int(host), int(rx), int(tx)


def start_command() -> bytes:
    return bytes([OP_START])


def stop_command() -> bytes:
    return bytes([OP_STOP])


def rate_command(rate_hz: float) -> bytes:
    return bytes([OP_SET_RATE]) + struct.pack("<H", round(rate_hz))


def max_samples(att_mtu: int, gyro: bool = True) -> int:
    """Samples that fit one notification (payload = ATT_MTU - 3)."""
    return max(0, (att_mtu - 3 - HEADER.size) // (12 if gyro else 6))


def encode(seq: int, t0_us: int, period_ns: int, acc: np.ndarray,
           gyro: np.ndarray | None, tx_us: int | None = None, anchor: bool = False) -> bytes:
    """One data notification (the band side; used by the simulator and tests)."""
    n = len(acc)
    flags = (FLAG_GYRO if gyro is not None else 0) | (FLAG_ANCHOR if anchor else 0)
    tx = max(0, (tx_us if tx_us is not None else t0_us) - t0_us)
    head = HEADER.pack(VERSION, n, flags, 0, seq % SEQ_MOD, t0_us, period_ns, tx)
    a = np.asarray(acc, dtype="<i2").reshape(n, 3)
    body = np.hstack([a, np.asarray(gyro, dtype="<i2").reshape(n, 3)]) if gyro is not None else a
    return head + body.astype("<i2").tobytes()


class OpenDecoder:
    profile = "wearcap-open"

    def __init__(self, info: Info | None = None) -> None:
        self.info = info or Info.default()
        self.malformed = 0
        self.restarts = 0
        self._next_seq: int | None = None
        self._index = 0

    def set_info(self, data: bytes) -> None:
        """Apply the info characteristic read at connect (raises ValueError if unreadable)."""
        self.info = Info.decode(data)

    def flush(self) -> list[ImuChunk]:
        return []  # nothing is held back

    def reset(self) -> None:
        self._next_seq = None

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        if len(packet) < HEADER.size:
            self.malformed += 1
            return []
        ver, n, flags, _res, seq, t0_us, period_ns, tx = HEADER.unpack_from(packet)
        width = 12 if flags & FLAG_GYRO else 6
        if ver != VERSION or n == 0 or period_ns == 0 or flags & ~(FLAG_GYRO | FLAG_ANCHOR) \
                or len(packet) != HEADER.size + n * width:
            self.malformed += 1
            return []
        body = np.frombuffer(packet, dtype="<i2", offset=HEADER.size).reshape(n, width // 2)
        lost = 0
        if self._next_seq is not None:
            delta = (seq - self._next_seq) % SEQ_MOD
            if 0 < delta < SEQ_MOD // 2:
                lost = delta
            elif delta:
                self.restarts += 1  # went backwards: the band restarted its stream
        self._next_seq = (seq + n) % SEQ_MOD
        index = self._index + lost
        self._index = index + n
        # acc and gyro in one pass (as_counts for a packet's int16 words: only -32768 moves)
        counts = np.maximum(body, -32767)
        if width == 12:
            acc, gyro = counts[:, 0:3], counts[:, 3:6]
        else:
            acc, gyro = counts, None
        info = self.info
        return [ImuChunk(
            arrival_ns=arrival_ns, seq=seq, device_t0_ns=t0_us * 1000,
            period_ns=float(period_ns), acc=acc, acc_scale=info.acc_scale, gyro=gyro,
            gyro_scale=info.gyro_scale, lost_before=lost, raw_time=t0_us, index=index,
            tx_device_ns=(t0_us + tx) * 1000 if tx else None)]
