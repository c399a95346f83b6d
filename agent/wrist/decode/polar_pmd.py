"""Polar Measurement Data (PMD) frames: ACC and GYRO, raw and delta-compressed; and an encoder.

Frame: ``[measurement type & 0x3F][uint64 LE ns since 2000-01-01 of the LAST sample]
[frame type: bit 7 = delta-compressed, & 0x7F = type][payload]``.

Delta-compressed payload: one reference sample (each channel ``resolution`` bits, signed LE),
then blocks of ``[bit width u8][sample count u8][count * channels * width bits]``; the bits
are read least-significant first, each delta is a signed ``width``-bit number added to the
previous sample, and each block ends on a byte boundary. GYRO type 1 carries IEEE-754
float32 bit patterns: deltas are added to the integer bits (mod 2**32).

Timestamps (as the vendor SDK computes them): spacing ``delta = (ts - prev_ts) / n`` where
``prev_ts`` is the previous frame's timestamp of the same measurement, or ``1e9 / rate`` for
the first frame; samples ``0..n-2`` at ``round(start + i * delta)`` with ``start = prev_ts +
delta`` (first frame: ``ts - delta * (n - 1)``), and the last sample at ``ts``.

Stored counts: ACC types 0/1 (mG, or counts x factor g) and GYRO type 0 keep the integers
the band sent, with ``scale`` = unit x factor. GYRO type 1 floats (°/s) are quantised to
the profile's declared step (2000/32768 °/s by default; at most half a step of change).
The decoder pairs ACC and GYRO samples that share a timestamp (within half a period) into
6-axis samples; a sample seen in only one stream gets ``MISSING`` in the other's axes.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.wrist.decode import DEG, MISSING, G, ImuChunk

ACC, GYRO = 2, 5
HEAD = struct.Struct("<BQB")
MAX_RATE_ERROR = 0.10
"""How far a band's sample clock may run from nominal (the frame gap test allows for it)."""


class FrameError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PmdFrame:
    measurement: int
    timestamp_ns: int
    frame_type: int
    compressed: bool
    raw: list[list[int]]
    """Per sample, per channel: the integers in the frame (float32 bit patterns for GYRO 1)."""
    timestamps_ns: list[int]
    period_ns: float

    @property
    def is_float(self) -> bool:
        return self.measurement == GYRO and self.compressed and self.frame_type == 1

    def values(self, factor: float = 1.0) -> npt.NDArray[np.float64]:
        """Physical values as the SDK reports them (ACC mG or g-counts, GYRO °/s)."""
        if self.is_float:
            f = np.array(self.raw, dtype=np.uint32).view(np.float32).astype(np.float64)
            return f * factor
        return np.array(self.raw, dtype=np.float64) * factor


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if bits and v >= 1 << (bits - 1) else v


def _layout(meas: int, ftype: int, compressed: bool) -> tuple[int, bool]:
    """(resolution bits, float) for the frames we decode; FrameError for the rest."""
    if meas == ACC:
        if compressed and ftype in (0, 1):
            return 16, False
        if not compressed and ftype in (0, 1, 2):
            return (8, 16, 24)[ftype], False
    if meas == GYRO and compressed and ftype in (0, 1):
        return (16, False) if ftype == 0 else (32, True)
    raise FrameError(f"unsupported frame: measurement {meas} type {ftype} "
                     f"{'compressed' if compressed else 'raw'}")


def parse_delta(payload: bytes, channels: int, bits: int, wrap32: bool) -> list[list[int]]:
    nb = bits // 8
    if len(payload) < channels * nb:
        raise FrameError("no reference sample")
    ref = [_signed(int.from_bytes(payload[i * nb:(i + 1) * nb], "little"), bits)
           for i in range(channels)]
    out = [ref]
    off = channels * nb
    while off < len(payload):
        if off + 2 > len(payload):
            raise FrameError("truncated block header")
        width, count = payload[off], payload[off + 1]
        off += 2
        if width > bits or (width == 0 and count):
            raise FrameError(f"bad delta width {width}")
        nbytes = (width * count * channels + 7) // 8
        if off + nbytes > len(payload):
            raise FrameError("truncated delta block")
        block = int.from_bytes(payload[off:off + nbytes], "little")
        off += nbytes
        mask = (1 << width) - 1
        prev = out[-1]
        for _ in range(count):
            cur = []
            for c in range(channels):
                v = prev[c] + _signed(block & mask, width)
                block >>= width
                if wrap32:
                    v = _signed(v & 0xFFFFFFFF, 32)
                cur.append(v)
            out.append(cur)
            prev = cur
    return out


def parse_raw(payload: bytes, channels: int, bits: int) -> list[list[int]]:
    nb = bits // 8
    step = nb * channels
    if not payload or len(payload) % step:
        raise FrameError("raw payload is not whole samples")
    return [[_signed(int.from_bytes(payload[o + c * nb:o + (c + 1) * nb], "little"), bits)
             for c in range(channels)] for o in range(0, len(payload), step)]


def sample_times(prev_ts: int, ts: int, n: int, rate_hz: float) -> tuple[list[int], float]:
    """Per-sample timestamps the way the vendor SDK computes them, and the spacing."""
    if prev_ts == 0:
        if rate_hz <= 0:
            raise FrameError("first frame and no sample rate")
        delta = 1e9 / rate_hz
        start = float(ts) - delta * (n - 1)
    else:
        if ts <= prev_ts:
            raise FrameError("timestamp did not advance")
        delta = (ts - prev_ts) / n
        start = float(prev_ts) + delta
    return [round(start + delta * i) for i in range(n - 1)] + [ts], delta


def parse_header(data: bytes) -> tuple[int, int, bool, int, bytes]:
    """(measurement type, timestamp ns, compressed, frame type, payload)."""
    if len(data) < HEAD.size:
        raise FrameError("shorter than the frame header")
    meas, ts, ft = HEAD.unpack_from(data)
    return meas & 0x3F, ts, bool(ft & 0x80), ft & 0x7F, bytes(data[HEAD.size:])


def parse_frame(data: bytes, prev_ts: int = 0, rate_hz: float = 0.0) -> PmdFrame:
    """One PMD frame (raises FrameError for what it cannot decode)."""
    if len(data) < HEAD.size:
        raise FrameError("shorter than the frame header")
    meas, ts, ft = HEAD.unpack_from(data)
    meas &= 0x3F
    compressed, ftype = bool(ft & 0x80), ft & 0x7F
    bits, is_float = _layout(meas, ftype, compressed)
    body = data[HEAD.size:]
    raw = parse_delta(body, 3, bits, is_float) if compressed else parse_raw(body, 3, bits)
    times, delta = sample_times(prev_ts, ts, len(raw), rate_hz)
    return PmdFrame(meas, ts, ftype, compressed, raw, times, delta)


class PolarDecoder:
    profile = "polar-pmd"

    def __init__(self, rate_hz: float, gyro_step_dps: float = 2000 / 32768,
                 hold_ns: int = 2_000_000_000) -> None:
        self.rate_hz = rate_hz
        self.gyro_step_dps = gyro_step_dps
        self.hold_ns = hold_ns
        self.factor = {ACC: 1.0, GYRO: 1.0}
        self.streams = {ACC: True, GYRO: True}
        self.malformed = 0
        self.ignored = 0
        """Valid frames of other measurements (ECG, PPG, ...) on the same characteristic."""
        self.reset()

    def set_factor(self, measurement: int, factor: float) -> None:
        """The FACTOR the band reported in its start-measurement response."""
        self.factor[measurement] = factor

    def previous_timestamp(self, measurement: int) -> int:
        return self._prev.get(measurement, 0)

    def set_streams(self, acc: bool = True, gyro: bool = True) -> None:
        """Which measurements the band is streaming (its start replies say): a stream it
        refused is never waited for, and its axes are absent (``gyro`` None), not filled."""
        self.streams = {ACC: acc, GYRO: gyro}

    def flush(self) -> list[ImuChunk]:
        """Release every sample still waiting for its partner (at stop and at every break):
        nothing is held across either."""
        return self._pair(drain=True)

    def reset(self) -> None:
        self._prev = {ACC: 0, GYRO: 0}
        # pending per stream: (t_ns, xyz counts, scale, period, arrival, raw ts)
        self._pend: dict[int, deque[tuple[int, tuple[int, int, int], float, float, int, int]]]
        self._pend = {ACC: deque(), GYRO: deque()}
        self._index = 0
        self._spacing: dict[int, float] = {ACC: 0.0, GYRO: 0.0}
        self._last_t: int | None = None  # band time of the last sample released

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        if len(packet) < HEAD.size:
            self.malformed += 1
            return []
        meas = packet[0] & 0x3F
        if meas not in (ACC, GYRO):
            self.ignored += 1
            return []
        prev = raw_prev = self._prev[meas]
        ts = HEAD.unpack_from(packet)[1]
        self._prev[meas] = ts  # the chain follows every frame of this measurement
        nominal = 1e9 / self.rate_hz
        if prev and not 0 < ts - prev < 1_000_000_000 + 64 * nominal:
            prev = 0  # restarted stream or a long gap: space by the nominal rate
        try:
            fr = parse_frame(packet, prev, self.rate_hz)
        except FrameError:
            self.malformed += 1
            return []
        # never taken for shorter than a band's sample clock can be (start-up stamps run slow)
        spacing = max(self._spacing[meas], nominal * (1 - MAX_RATE_ERROR))
        n_raw = len(fr.raw)
        if raw_prev and self._spacing[meas] and ts - raw_prev > 1.5 * n_raw * spacing:
            # frames missing since the last one (a lost link: the band drops what it had
            # queued): spaced over the whole gap, the SDK's way, every sample would be off by
            # up to that gap. Spaced by the chain's last spacing instead, ending at its stamp;
            # the samples between are counted lost when the frame is paired (``_chunks``)
            prev = 0
            fr = PmdFrame(fr.measurement, fr.timestamp_ns, fr.frame_type, fr.compressed,
                          fr.raw, [ts - round(spacing * (n_raw - 1 - i))
                                   for i in range(n_raw)], spacing)
        elif prev:
            self._spacing[meas] = fr.period_ns
        fac = self.factor[meas]
        if meas == ACC:
            scale = G * fac if (fr.compressed and fr.frame_type == 0) else G * fac * 1e-3
            counts = fr.raw
        elif fr.is_float:
            scale = self.gyro_step_dps * DEG
            vals = fr.values(fac) / self.gyro_step_dps
            counts = [[int(v) if math.isfinite(v) else MISSING for v in row]
                      for row in np.clip(np.rint(vals), -32767, 32767)]
        else:
            scale, counts = DEG * fac, fr.raw
        q = self._pend[meas]
        # exact integer sample times (the SDK's doubles lose ~100 ns at 2020s timestamps)
        n = len(counts)
        if prev:
            times = [prev + ((ts - prev) * (i + 1) + n // 2) // n for i in range(n)]
        else:
            times = [ts - round(fr.period_ns * (n - 1 - i)) for i in range(n)]
        for t, xyz in zip(times, counts, strict=True):
            c = (max(-32767, min(32767, xyz[0])), max(-32767, min(32767, xyz[1])),
                 max(-32767, min(32767, xyz[2])))
            q.append((t, c, scale, fr.period_ns, arrival_ns, fr.timestamp_ns))
        return self._pair()

    def _pair(self, drain: bool = False) -> list[ImuChunk]:
        """Pair pending ACC and GYRO samples. A sample waits for its partner up to
        ``hold_ns`` unless the partner's stream is off, or ``drain`` (stop, a break)."""
        qa, qg = self._pend[ACC], self._pend[GYRO]
        if not (self.streams[ACC] and self.streams[GYRO]):
            drain = True  # one stream only: nothing to wait for
        out: list[tuple[int, tuple[int, int, int], tuple[int, int, int], float, float, float,
                        int, int, int]] = []
        none = (MISSING, MISSING, MISSING)
        while True:
            if qa and qg:
                a, g = qa[0], qg[0]
                tol = min(a[3], g[3]) / 2
                if abs(a[0] - g[0]) <= tol:
                    qa.popleft(), qg.popleft()
                    out.append((a[0], a[1], g[1], a[2], g[2], a[3], max(a[4], g[4]), a[5],
                                min(a[4], g[4])))
                elif a[0] < g[0]:
                    qa.popleft()
                    out.append((a[0], a[1], none, a[2], g[2], a[3], a[4], a[5], a[4]))
                else:
                    qg.popleft()
                    out.append((g[0], none, g[1], a[2], g[2], g[3], g[4], g[5], g[4]))
                continue
            q = qa if qa else qg
            if q and (drain or q[-1][0] - q[0][0] > self.hold_ns):  # the other is not coming
                s = q.popleft()
                acc, gyr = (s[1], none) if q is qa else (none, s[1])
                sa = s[2] if q is qa else self.factor[ACC] * G * 1e-3
                sg = s[2] if q is qg else self.gyro_step_dps * DEG
                out.append((s[0], acc, gyr, sa, sg, s[3], s[4], s[5], s[4]))
                continue
            break
        return self._chunks(out)

    def _chunks(self, out: list[tuple[int, tuple[int, int, int], tuple[int, int, int], float,
                                      float, float, int, int, int]]) -> list[ImuChunk]:
        chunks: list[ImuChunk] = []
        i = 0
        while i < len(out):
            j = i + 1
            while j < len(out) and out[j][5] == out[i][5] and out[j][3:5] == out[i][3:5] \
                    and out[j][7] == out[i][7]:
                j += 1
            run = out[i:j]
            # samples the band took between the last one released and this run's first
            # (its clock says when each was taken): a gap counted exactly
            lost = 0
            last, period = self._last_t, run[0][5]
            if last is not None and period > 0 and run[0][0] - last > 1.5 * period:
                lost = round((run[0][0] - last) / period) - 1
                self._index += lost
            self._last_t = run[-1][0]
            chunks.append(ImuChunk(
                arrival_ns=max(r[6] for r in run), seq=None, device_t0_ns=run[0][0],
                period_ns=run[0][5],
                acc=np.array([r[1] for r in run], dtype=np.int16).reshape(-1, 3),
                acc_scale=run[0][3],
                gyro=(np.array([r[2] for r in run], dtype=np.int16).reshape(-1, 3)
                      if self.streams[GYRO] else None),
                gyro_scale=run[0][4], raw_time=run[0][7], index=self._index,
                first_arrival_ns=min(r[8] for r in run), lost_before=lost))
            self._index += len(run)
            i = j
        return chunks


class PolarEncoder:
    """Band side: ACC as compressed type 1 (mG) and GYRO as compressed type 0 frames."""

    def encode(self, dev_ns: npt.NDArray[np.int64], acc: npt.NDArray[np.int16],
               gyro: npt.NDArray[np.int16] | None) -> list[bytes]:
        ts = int(dev_ns[-1])
        frames = [encode_frame(ACC, ts, 0x81, acc)]
        if gyro is not None:
            frames.append(encode_frame(GYRO, ts, 0x80, gyro))
        return frames


def encode_frame(meas: int, ts: int, frame_type: int, samples: npt.ArrayLike) -> bytes:
    """A PMD frame of int samples (n, 3): raw (int16) or delta-compressed (one block)."""
    s = np.asarray(samples, dtype=np.int64).reshape(-1, 3)
    head = HEAD.pack(meas, ts, frame_type)
    if not frame_type & 0x80:
        return head + bytes(s.astype("<i2").tobytes())
    ref = bytes(s[0].astype("<i2").tobytes())
    d = np.diff(s, axis=0)
    if not len(d):
        return head + ref
    width = max(1, int(max(int(np.abs(d).max()) * 2, 1)).bit_length())
    if width > 16 or len(d) > 255:
        raise ValueError("delta too wide or too many samples for one block")
    acc_bits, shift = 0, 0
    mask = (1 << width) - 1
    for v in d.reshape(-1):
        acc_bits |= (int(v) & mask) << shift
        shift += width
    return head + ref + bytes([width, len(d)]) + acc_bits.to_bytes((shift + 7) // 8, "little")
