"""Choose the camera backend named by the config, importing it only when chosen.

    backend = "ffmpeg"     FfmpegCamera: any FFmpeg input through PyAV (the simulated rig)
    backend = "picamera2"  PiCamera: the Pi camera stack (picamera2 is imported on start)
    backend = "none"       no camera: ``open_camera`` raises SourceError, so a caller that
                           supports a rig without a camera checks ``cfg.backend == "none"``
                           first and passes no camera on (the capture service takes None)
"""

from __future__ import annotations

from agent.camera.base import Camera
from agent.config import CameraSection
from agent.errors import SourceError
from agent.timeline import Clock, monotonic_ns


def open_camera(cfg: CameraSection, clock: Clock = monotonic_ns) -> Camera:
    """A camera built from ``cfg``, not yet started (``start()`` opens the device)."""
    if cfg.backend == "ffmpeg":
        from agent.camera.ffmpeg import FfmpegCamera

        return FfmpegCamera(cfg, clock)
    if cfg.backend == "picamera2":
        from agent.camera.pi import PiCamera

        return PiCamera(cfg, clock)
    if cfg.backend == "none":
        raise SourceError("the config says this rig has no camera (camera.backend = \"none\")",
                          device="camera")
    raise SourceError(f"unknown camera backend {cfg.backend!r}; allowed: ffmpeg, picamera2, "
                      "none", device="camera")
