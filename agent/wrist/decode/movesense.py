"""Movesense GATT sensor-data (GSP) IMU6 packets: decoder and encoder.

Notification: ``[type u8 = 2 (data)][reference u8][uint32 LE ms timestamp of the packet's
first sample][n x acc xyz float32 (m/s^2)][n x gyro xyz float32 (°/s)]``, n = (len - 6) / 24.
The timestamp counts ms since the sensor reset and wraps after 2**32 ms (~49.7 days).

Stored as int16 counts at the profile's declared steps (0.488 mg and 0.070 °/s, the sensor's
own LSB at ±16 g / ±2000 °/s), so rounding moves a value by at most half a step.

Timing: the ms timestamp is truncated, and the IMU samples on its own RC oscillator (±10% of
nominal), so the decoder fits device time vs sample number over the last ``window`` packets
(least squares, +0.5 ms for the truncation) and reports that line's t0 and period; the
packet's own value is kept in ``raw_time``. Sample gaps show as timestamp jumps. The
sample count per packet is fixed for a stream: the first packet sets it, and a packet of
another length is counted as malformed (a cut packet would otherwise pass as a short one).
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np
import numpy.typing as npt

from agent.clock.unwrap import Unwrapper
from agent.wrist.decode import DEG, ImuChunk, as_counts

DATA, DATA_PART2 = 2, 3
REFERENCE = 0x63
ACC_SCALE = 0.0047856452  # m/s^2 per count (0.488 mg)
GYRO_SCALE = 0.0012217305  # rad/s per count (0.070 °/s)
HEAD = struct.Struct("<BBI")


class MovesenseDecoder:
    profile = "movesense"

    def __init__(self, rate_hz: float, reference: int = REFERENCE, window: int = 64,
                 acc_scale: float = ACC_SCALE, gyro_scale: float = GYRO_SCALE) -> None:
        self.rate_hz = rate_hz
        self.reference = reference
        self.window = window
        self.acc_scale = acc_scale
        self.gyro_scale = gyro_scale
        self.malformed = 0
        self.ignored = 0
        self.reset()

    def flush(self) -> list[ImuChunk]:
        return []  # nothing is held back

    def reset(self) -> None:
        self._unwrap = Unwrapper(32, 1_000_000)
        self._pts: deque[tuple[int, int]] = deque(maxlen=self.window)  # (index, device ns)
        self._index = 0
        self._period = 1e9 / self.rate_hz
        self._n: int | None = None

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        if len(packet) < HEAD.size + 24 or (len(packet) - HEAD.size) % 24:
            self.malformed += 1
            return []
        kind, ref, ms = HEAD.unpack_from(packet)
        if kind != DATA or ref != self.reference:
            self.ignored += 1
            return []
        n = (len(packet) - HEAD.size) // 24
        if self._n is None:
            self._n = n  # the sensor packs a fixed count per packet at a given rate
        elif n != self._n:
            self.malformed += 1  # the length cannot tell a short packet from a cut one
            return []
        f = np.frombuffer(packet, dtype="<f4", offset=HEAD.size).astype(np.float64)
        if not np.all(np.isfinite(f)):
            self.malformed += 1
            return []
        t = self._unwrap(ms)
        lost = 0
        if self._pts:
            k_last, t_last = self._pts[-1]
            step = (t - t_last) / self._period  # samples since the last packet's first
            expect = self._index - k_last
            # slack: ms truncation, and the period is only nominal until the line settles
            tol = 0.5 + 1e6 / self._period + (0.15 if len(self._pts) < 3 else 0.02) * expect
            if step <= 0 or step > expect + 100_000:
                self._pts.clear()  # the sensor reset (or a very long gap): fit again
            elif step - expect > tol:
                lost = round(step - expect)
                self._index += lost
        k = self._index
        self._pts.append((k, t))
        t0, period = self._fit(k)
        self._index += n
        return [ImuChunk(
            arrival_ns=arrival_ns, seq=None, device_t0_ns=t0, period_ns=period,
            acc=as_counts(f[: n * 3] / self.acc_scale),
            acc_scale=self.acc_scale,
            gyro=as_counts(f[n * 3:] * DEG / self.gyro_scale),
            gyro_scale=self.gyro_scale, lost_before=lost, raw_time=ms, index=k)]

    def _fit(self, k: int) -> tuple[int, float]:
        """(device ns of sample k, period) from the line through the window's timestamps."""
        if len(self._pts) >= 3:
            ks = np.array([p[0] for p in self._pts], dtype=np.float64)
            ts = np.array([p[1] - self._pts[0][1] for p in self._pts], dtype=np.float64)
            km, tm = ks.mean(), ts.mean()
            var = float(((ks - km) ** 2).sum())
            if var > 0:
                self._period = float(((ks - km) * (ts - tm)).sum() / var)
                return self._pts[0][1] + round(tm + self._period * (k - km) + 500_000), \
                    self._period
        return self._pts[-1][1] + 500_000, self._period


class MovesenseEncoder:
    """Band side: counts at the declared steps -> float32 packet."""

    def __init__(self, reference: int = REFERENCE) -> None:
        self.reference = reference

    def encode(self, t_ms: int, acc: npt.NDArray[np.int16],
               gyro: npt.NDArray[np.int16]) -> bytes:
        a = np.asarray(acc, dtype=np.float64).reshape(-1, 3) * ACC_SCALE
        g = np.asarray(gyro, dtype=np.float64).reshape(-1, 3) * GYRO_SCALE / DEG
        return HEAD.pack(DATA, self.reference, t_ms % (1 << 32)) + np.concatenate(
            [a.reshape(-1), g.reshape(-1)]).astype("<f4").tobytes()
