"""What every camera backend hands the segment writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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
