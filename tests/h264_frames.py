"""Real H.264 frames for writer tests: an FFmpeg lavfi test source encoded with libx264.

``encode_frames`` returns a list of EncodedFrame; ``EncoderCamera`` follows the Camera protocol
(start, request_keyframe, poll, wait, stats, stop) and encodes on demand, unpaced, so the
capture service can be tested at full speed on a controlled timeline.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

from agent.camera.base import EncodedFrame

T0_NS = 1_000_000_000_000


class H264Source:
    """libx264 (ultrafast, zerolatency, no B-frames, SPS/PPS on every IDR) on testsrc."""

    def __init__(self, width: int = 160, height: int = 96, fps: int = 30, gop: int = 60,
                 t0_ns: int = T0_NS, exposure_us: int = 8000, clock: Any = None) -> None:
        self.clock = clock
        self.width, self.height, self.fps = width, height, fps
        self._in = av.open(f"testsrc=size={width}x{height}:rate={fps}", format="lavfi")
        self._frames = self._in.decode(video=0)
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, fps)
        ctx.framerate = Fraction(fps, 1)
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency",
                       "x264-params": "repeat-headers=1:bframes=0", "forced-idr": "1"}
        ctx.open()
        self._ctx = ctx
        self._n = 0
        self._force = False
        self.t0_ns = t0_ns
        self.exposure_us = exposure_us
        self.period_ns = 1_000_000_000 // fps

    def request_keyframe(self) -> None:
        self._force = True

    def next(self, dropped_before: int = 0, skip: int = 0) -> EncodedFrame:
        """Encode the next frame; ``skip`` advances the index (a simulated loss)."""
        self._n += skip
        raw = next(self._frames)
        frame = raw.reformat(format="yuv420p")
        frame.pts = self._n
        # Decoded source frames say "I"; the encoder honours that unless told otherwise.
        pt = av.video.frame.PictureType
        frame.pict_type = pt.I if self._force else pt.NONE
        self._force = False
        packets = self._ctx.encode(frame)
        assert len(packets) == 1, "zerolatency must give one packet per frame"
        pkt = packets[0]
        host = self.t0_ns + self._n * self.period_ns if self.clock is None else self.clock()
        ef = EncodedFrame(
            data=bytes(pkt), keyframe=bool(pkt.is_keyframe), index=self._n,
            sensor_ts_ns=host + self.exposure_us * 500, host_ts_ns=host,
            exposure_us=self.exposure_us, frame_duration_us=self.period_ns // 1000,
            dropped_before=dropped_before,
        )
        self._n += 1
        return ef

    def close(self) -> None:
        self._in.close()


def encode_frames(n: int, **kw: Any) -> list[EncodedFrame]:
    src = H264Source(**kw)
    try:
        return [src.next() for _ in range(n)]
    finally:
        src.close()


def iter_frames(src: H264Source) -> Iterator[EncodedFrame]:
    while True:
        yield src.next()


class EncoderCamera:
    """Camera protocol over H264Source: ``limit`` frames, produced as fast as they are polled."""

    encoder_name = "libx264"
    width: int
    height: int
    fps: float

    def __init__(self, limit: int, *, drops: dict[int, int] | None = None,
                 on_exhausted: Any = None, paced: bool = False, **kw: Any) -> None:
        """``paced``: frame k exists at start + k/fps on CLOCK_MONOTONIC and is stamped then."""
        self.paced = paced
        if paced:
            kw["clock"] = time.monotonic_ns
        self._src = H264Source(**kw)
        self._t0 = 0
        self.width, self.height, self.fps = self._src.width, self._src.height, self._src.fps
        self.limit = limit
        self.drops = drops or {}
        self.produced = 0
        self.keyframe_requests = 0
        self.started = self.stopped = False
        self.on_exhausted = on_exhausted
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True
        self._t0 = time.monotonic_ns()

    def _due(self) -> int:
        return self._t0 + self.produced * self._src.period_ns

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._src.request_keyframe()

    def poll(self, max_frames: int = 64) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        if self.stopped:
            return out
        with self._lock:
            while (self.produced < self.limit and len(out) < min(max_frames, 4)
                   and (not self.paced or self._due() <= time.monotonic_ns())):
                lost = self.drops.get(self.produced, 0)
                out.append(self._src.next(dropped_before=lost, skip=lost))
                self.produced += 1
        if self.exhausted and self.on_exhausted is not None:
            self.on_exhausted()
        return out

    def wait(self, timeout: float) -> bool:
        if self.paced:
            delay = (self._due() - time.monotonic_ns()) / 1e9
            time.sleep(max(0.0, min(timeout, delay)))
        return self.produced < self.limit

    @property
    def exhausted(self) -> bool:
        return self.produced >= self.limit

    def stats(self) -> dict[str, Any]:
        return {"frames": self.produced}

    def stop(self) -> None:
        self.stopped = True
        self._src.close()


def _child(spool: str, chunk_seconds: float) -> None:
    """A capture service on a paced encoder camera (for crash harnesses); READY on stdout."""
    from pathlib import Path

    from agent.capture import CaptureService, CaptureSettings
    from agent.record.spool import Spool

    st = CaptureSettings(device_id="crash", config_digest="x", segment_seconds=60.0,
                         chunk_seconds=chunk_seconds)
    cam = EncoderCamera(10**9, paced=True, width=320, height=240)

    CaptureService(st, Spool(Path(spool), "crash"), cam, []).run()


if __name__ == "__main__":
    _child(sys.argv[1], float(sys.argv[2]))
