"""Recordings for the inspect and export tests, written by the recorder's own writers.

``Take`` lays out a timeline (camera frames at 30 fps, wrist samples at 200 Hz in 10-sample
notifications) and writes it as consecutive segments of one spool, with the loss kinds the
exporters must keep: dropped frames (reported), lost wrist samples (reported), a silent hole.
IMU batches go through ``agent.wrist.imu_batch.imu_message`` with a fixed clock mapping, so the
expected host and device time of every sample is known exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.camera.base import EncodedFrame
from agent.clock.band import ChunkTime
from agent.mcu.records import event, events_channel
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import SealedSegment, Spool
from agent.sources import Message
from agent.timeline import ClockAnchor
from agent.wrist.decode import ImuChunk
from agent.wrist.imu_batch import imu_channel, imu_message
from tests.h264_frames import T0_NS, H264Source

ACC_SCALE = 9.80665 / 4096
GYRO_SCALE = 0.001064
DEVICE_OFFSET_NS = -400_000_000_000
"""host = device - DEVICE_OFFSET_NS (the fixed mapping of the fake fit)."""
REALTIME_AT_T0 = 1_780_000_000_000_000_000  # 2026-05-28, the wall clock at T0_NS
BOOT = "5f1c7a2e-0000-4000-8000-00000000b007"


class FixedFit:
    """A converged clock mapping ``host = device - DEVICE_OFFSET_NS`` (what imu_message uses)."""

    ready = True
    converged = True
    slope = 1.0
    error_bound_ns = 450_000
    drift_ppm = 0.0
    latency_ns = 2_000_000
    latency_kind = "calibrated"

    def map(self, device_ns: int) -> int:
        return device_ns - DEVICE_OFFSET_NS

    slew_max_ppm = 500.0

    def state(self) -> dict[str, Any]:
        return {"converged": True, "drift_ppm": 0.0, "latency_ns": self.latency_ns,
                "latency_uncertainty_ns": 0, "latency": self.latency_kind,
                "slew_max_ppm": self.slew_max_ppm}

    def times(self, chunks: list[ImuChunk], slew_ns: int = 0) -> list[ChunkTime]:
        """Each chunk's placement by the fixed mapping (what imu_message writes); ``slew_ns``:
        the part of a fit change still to slew in (recorded, not applied)."""
        return [ChunkTime(chunk_host(c)[0], float(c.period_ns or 0.0), self.error_bound_ns,
                          0, 0, slew_ns, "fixed") for c in chunks]

    def snapshot(self) -> dict[str, Any]:
        return {"method": "fixed", "ref_device_ns": DEVICE_OFFSET_NS + T0_NS,
                "ref_host_ns": T0_NS + self.latency_ns, "slope": 1.0, "drift_ppm": 0.0,
                "latency_ns": self.latency_ns, "converged": True,
                "error_bound_ns": self.error_bound_ns,
                "hull": [[DEVICE_OFFSET_NS + T0_NS + k * 10**9,
                          T0_NS + k * 10**9 + self.latency_ns + 40_000 * (k % 3)]
                         for k in range(8)]}


def imu_chunks(t0_ns: int, seconds: float, *, rate: int = 200, per: int = 10,
               lose: tuple[int, int] | None = None, seed: int = 7) -> list[ImuChunk]:
    """Notifications of ``per`` samples from host time ``t0_ns``; ``lose=(first, count)``
    drops whole chunks (sample numbers) as a lost radio burst, counted by ``lost_before``."""
    rng = np.random.default_rng(seed)
    period = 1e9 / rate
    n_total = int(seconds * rate)
    out: list[ImuChunk] = []
    lost = 0
    for first in range(0, n_total - per + 1, per):
        if lose and lose[0] <= first < lose[0] + lose[1]:
            lost += per
            continue
        k = np.arange(first, first + per)
        t = k / rate
        acc = np.stack([400 * np.sin(t * 3), 300 * np.cos(t * 2), 4096 + 50 * np.sin(t)], 1)
        acc = (acc + rng.integers(-3, 4, acc.shape)).astype(np.int16)
        gyro = np.stack([800 * np.sin(t), -600 * np.sin(t * 5), 30 * t], 1).astype(np.int16)
        dev0 = t0_ns + round(first * period) + DEVICE_OFFSET_NS
        out.append(ImuChunk(arrival_ns=t0_ns + round((first + per) * period) + 3_000_000,
                            seq=first, device_t0_ns=dev0, period_ns=period, acc=acc,
                            acc_scale=ACC_SCALE, gyro=gyro, gyro_scale=GYRO_SCALE,
                            lost_before=lost, raw_time=dev0 // 1000, index=first))
        lost = 0
    return out


def chunk_host(c: ImuChunk) -> list[int]:
    assert c.device_t0_ns is not None and c.period_ns is not None
    return [c.device_t0_ns - DEVICE_OFFSET_NS + round(i * c.period_ns) for i in range(c.n)]


@dataclass
class Take:
    """A recording: frames and chunks, cut into segments of ``segment_s`` seconds."""

    seconds: float = 4.0
    segment_s: float = 2.0
    fps: int = 30
    drop_frames: tuple[int, int] | None = None
    """(first, count) frames lost (the next frame says dropped_before=count)."""
    lose_imu: tuple[int, int] | None = None
    band: str = "left"
    profile: str = "wearcap-open"
    anchor_offset_ns: int = 0
    """Added to the wall clock of every anchor (a different day)."""
    device_id: str = "dev"
    boot: str = BOOT
    ntp: list[bool] = field(default_factory=list)
    """Per segment: was the wall clock NTP-synchronised (default: all True)."""
    extra_gaps: list[dict[str, Any]] = field(default_factory=list)
    """Further gap records, {segment, stream, start_ns, end_ns, lost, cause}."""
    chunk_bytes: int = 64 << 10
    events: list[dict[str, Any]] = field(default_factory=list)
    """Wearer events on /wearcap/events as the head MCU writes them: {segment, kind, host_ns,
    detail}."""
    band_meta: dict[str, str] = field(default_factory=dict)
    """Further source metadata of the band (e.g. refused_streams)."""
    slews: dict[int, int] = field(default_factory=dict)
    """IMU batch number (over the take, 5 chunks each) -> slew_ns its clock records."""
    frames: list[EncodedFrame] = field(default_factory=list)
    chunks: list[ImuChunk] = field(default_factory=list)

    def build(self) -> Take:
        n = int(self.seconds * self.fps)
        # Frames lost by the camera never reach the encoder: the stream stays decodable.
        src = H264Source(fps=self.fps)
        fr: list[EncodedFrame] = []
        bound = 1
        while not fr or fr[-1].index < n - 1:
            if fr and fr[-1].host_ts_ns + src.period_ns >= self.bound_ns(bound):
                src.request_keyframe()  # the recorder starts every segment on an IDR
                bound += 1
            if self.drop_frames and len(fr) == self.drop_frames[0]:
                k = self.drop_frames[1]
                fr.append(src.next(dropped_before=k, skip=k))
            else:
                fr.append(src.next())
        src.close()
        self.frames = fr
        self.chunks = imu_chunks(T0_NS, self.seconds, lose=self.lose_imu)
        return self

    def bound_ns(self, s: int) -> int:
        """Host time at which segment ``s`` starts."""
        return T0_NS + int(s * self.segment_s * 1e9)

    def anchor(self, seg: int, mono: int) -> ClockAnchor:
        ntp = self.ntp[seg] if seg < len(self.ntp) else True
        return ClockAnchor(self.boot, mono, REALTIME_AT_T0 + (mono - T0_NS)
                           + self.anchor_offset_ns, 20_000, ntp)

    def write(self, spool: Spool) -> list[SealedSegment]:
        if not self.frames:
            self.build()
        out = []
        nseg = max(1, round(self.seconds / self.segment_s))
        spec = imu_channel(self.band, self.profile)
        fit: Any = FixedFit()  # stands in for a fitted mapping (duck-typed as imu_message uses it)
        last_index = last_ns = None
        batch_no = 0
        for s in range(nseg):
            lo = self.bound_ns(s)
            hi = self.bound_ns(s + 1) if s < nseg - 1 else 1 << 62
            seq = spool.next_seq()
            prev_seq, prev_sha = spool.chain()
            fh = spool.open_part(seq)
            header = SegmentHeader(self.device_id, seq, prev_seq, prev_sha, "cfg",
                                   self.anchor(s, lo))
            meta = {self.band: {"profile": self.profile, "rate_hz": "200",
                                "clock_fit": json.dumps(fit.snapshot()), **self.band_meta}}
            ev_spec = events_channel()
            w = SegmentWriter(fh, header, sources_metadata=meta,
                              channels=[spec, *([ev_spec] if self.events else [])],
                              chunk_bytes=self.chunk_bytes)
            w.continue_from(last_index, last_ns)
            frames = [f for f in self.frames if lo <= f.host_ts_ns < hi]
            chunks = [c for c in self.chunks if lo <= chunk_host(c)[0] < hi]
            for f in frames:
                w.write_frame(f)
                last_index, last_ns = f.index, f.host_ts_ns
            for i in range(0, len(chunks), 5):  # a batch of 5 notifications (0.25 s)
                batch = chunks[i:i + 5]
                if batch[0].lost_before:
                    prev = chunk_host(batch[0])[0] - int(batch[0].lost_before * 5e6)
                    w.write_gap(spec.topic, prev, chunk_host(batch[0])[0],
                                batch[0].lost_before, "lost:sequence")
                w.write_message(imu_message(self.band, batch, fit, self.profile,
                                            times=fit.times(batch, self.slews.get(batch_no, 0))))
                batch_no += 1
            for e in self.events:
                if e["segment"] == s:
                    w.write_message(event(e["kind"], e["host_ns"], **e.get("detail", {})))
            for g in self.extra_gaps:
                if g["segment"] == s:
                    w.write_gap(g["stream"], g["start_ns"], g["end_ns"], g["lost"], g["cause"])
            sha, size = w.close()
            out.append(spool.seal(seq, fh, sha, size))
        return out


def all_samples(take: Take) -> dict[str, np.ndarray]:
    """What the take recorded, sample by sample (the truth the exports are compared with)."""
    host = np.concatenate([chunk_host(c) for c in take.chunks]).astype(np.int64)
    dev = np.concatenate([[c.device_t0_ns + round(i * c.period_ns) for i in range(c.n)]
                          for c in take.chunks if c.device_t0_ns is not None and c.period_ns])
    return {"host_ns": host, "device_ns": dev.astype(np.int64),
            "acc": np.concatenate([c.acc for c in take.chunks]),
            "gyro": np.concatenate([c.gyro for c in take.chunks if c.gyro is not None]),
            "index": np.concatenate([np.arange(c.index, c.index + c.n) for c in take.chunks])}


def message(topic: str, t: int, payload: dict[str, Any]) -> Message:
    return Message(topic, t, payload)
