"""What every camera backend hands the segment writer."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.errors import SourceError
from agent.ring import ByteRing

FRAME_TIME_DOC = (
    "sensor_ts_ns: raw sensor timestamp as the camera stack reports it (on a Pi the CSI "
    "receiver's buffer time, CLOCK_MONOTONIC, near the end of exposure); "
    "host_ts_ns (= log_time): derived mid-exposure instant on the host timeline, "
    "sensor_ts_ns - exposure_us*1000/2 for a Pi sensor; exposure_us: exposure time; "
    "frame_duration_us: start of one exposure to the next"
)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    data: bytes
    """One H.264 access unit, Annex B; an IDR carries SPS and PPS in front of it."""
    keyframe: bool
    index: int
    """Frame counter since the source started; a jump means frames were lost."""
    sensor_ts_ns: int
    host_ts_ns: int
    exposure_us: int
    frame_duration_us: int
    dropped_before: int = 0
    """Frames lost just before this one (source or ring overflow), already counted."""


class Camera(Protocol):
    width: int
    height: int
    fps: float
    encoder_name: str

    def start(self) -> None:
        """Open the device and start capturing and encoding on a background thread."""
        ...

    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR (used at a segment roll)."""
        ...

    def poll(self, max_frames: int = 64) -> list[EncodedFrame]:
        """Non-blocking: encoded frames produced since the last call, oldest first."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until a frame is ready; False on timeout."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def stop(self) -> None:
        """Stop capture, flush the encoder into the ring, join the thread."""
        ...


# ---------------------------------------------------------------- shared by the backends

FRAME_META = np.dtype([
    ("index", "<u8"), ("sensor_ts_ns", "<i8"), ("host_ts_ns", "<i8"), ("exposure_us", "<u4"),
    ("frame_duration_us", "<u4"), ("dropped_before", "<u4"), ("keyframe", "u1"),
])
"""The metadata stored next to each encoded frame in a backend's ByteRing."""


class FrameRing:
    """Encoded frames from a backend's thread (the producer) to the writer (the consumer).

    ``push`` never blocks. A frame that does not fit is dropped and counted, and the loss is
    carried in ``dropped_before`` of the next frame that does fit; ``push`` returns False so
    the backend can make its next frame an IDR (what follows a lost frame cannot be decoded
    until then). ``fail`` records a fatal source error: ``poll`` raises it once every frame
    produced before it has been handed out.
    """

    def __init__(self, capacity_bytes: int, max_frames: int = 1024) -> None:
        self.ring = ByteRing(capacity_bytes, max_frames, FRAME_META)
        self._ready = threading.Event()
        self._carry = 0  # producer: frames lost since the last frame that was pushed
        self.pushed = 0
        self.error: SourceError | None = None

    # producer
    def push(self, data: bytes, *, keyframe: bool, index: int, sensor_ts_ns: int,
             host_ts_ns: int, exposure_us: int, frame_duration_us: int,
             dropped_before: int = 0) -> bool:
        lost = dropped_before + self._carry
        meta = (index, sensor_ts_ns, host_ts_ns, exposure_us, frame_duration_us,
                min(lost, 0xFFFFFFFF), keyframe)
        if not self.ring.push(data, meta):
            self._carry = lost + 1
            return False
        self._carry = 0
        self.pushed += 1
        self._ready.set()
        return True

    def fail(self, error: SourceError) -> None:
        self.error = error
        self._ready.set()

    # consumer
    def poll(self, max_frames: int = 64) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        while len(out) < max_frames:
            item = self.ring.pop()
            if item is None:
                break
            m, data = item
            out.append(EncodedFrame(
                data=data, keyframe=bool(m["keyframe"]), index=int(m["index"]),
                sensor_ts_ns=int(m["sensor_ts_ns"]), host_ts_ns=int(m["host_ts_ns"]),
                exposure_us=int(m["exposure_us"]),
                frame_duration_us=int(m["frame_duration_us"]),
                dropped_before=int(m["dropped_before"])))
        if not out and self.error is not None:
            raise self.error
        return out

    def wait(self, timeout: float) -> bool:
        if len(self.ring) or self.error is not None:
            return True
        self._ready.clear()
        if len(self.ring) or self.error is not None:
            return True
        return self._ready.wait(timeout)

    def stats(self) -> dict[str, Any]:
        return {"ring_frames": len(self.ring), "ring_bytes": self.ring.used_bytes,
                "ring_dropped_frames": self.ring.dropped_records,
                "ring_dropped_bytes": self.ring.dropped_bytes}


NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS = 5, 6, 7, 8
START_CODE = b"\x00\x00\x00\x01"


def nal_units(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (without their start codes)."""
    out: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        unit = data[start:] if j < 0 else data[start:j]
        if j >= 0 and unit.endswith(b"\x00"):
            unit = unit[:-1]  # the leading zero of the next 4-byte start code
        out.append(unit)
        i = j
    return out


class ParameterSets:
    """Makes every keyframe start with SPS and PPS, whatever the encoder emits.

    The first SPS and PPS seen (in a keyframe, or in the encoder's extradata) are kept and
    put in front of any later keyframe that lacks them. ``added`` counts those repairs.
    """

    def __init__(self) -> None:
        self.cached = b""
        self.added = 0

    def learn(self, data: bytes) -> None:
        units = [u for u in nal_units(data) if u and u[0] & 0x1F in (NAL_SPS, NAL_PPS)]
        if units and not self.cached:
            self.cached = b"".join(START_CODE + u for u in units[:2])

    def ensure(self, keyframe_data: bytes) -> bytes:
        head = [u[0] & 0x1F for u in nal_units(keyframe_data[:512]) if u]
        if head[:2] == [NAL_SPS, NAL_PPS]:
            if not self.cached:
                self.learn(keyframe_data[:4096])
            return keyframe_data
        if not self.cached:
            return keyframe_data
        self.added += 1
        return self.cached + keyframe_data
