"""The Raspberry Pi camera through picamera2: a thin adapter, imported only when chosen.

picamera2 runs the camera and its H.264 encoder on its own threads; this adapter
configures it (``create_video_configuration`` with the frame size, YUV420 and a fixed
``FrameDurationLimits``), hands its encoder an Output whose ``outputframe`` pushes each
access unit into our ring, and stamps frames from the request metadata:

- ``post_callback`` sees every completed request before it is encoded and keeps its
  absolute ``SensorTimestamp`` (ns, CLOCK_MONOTONIC on the Pi: the CSI buffer time, near
  the end of exposure), ``ExposureTime`` and ``FrameDuration`` (µs);
- the encoder passes ``outputframe`` a timestamp in µs *relative to its first frame*
  (``encoder.firsttimestamp`` holds that first value), which is used only to find the
  request's metadata again: ``firsttimestamp + timestamp == SensorTimestamp // 1000``;
- ``host_ts_ns = SensorTimestamp - ExposureTime*1000 // 2`` (mid-exposure).

A jump in SensorTimestamp of more than one FrameDuration counts the frames in between as
lost (``dropped_before``; the ``index`` jumps by as much). Encoder: ``libx264`` selects
picamera2's LibavH264Encoder; ``auto`` and ``h264_v4l2m2m`` its H264Encoder (the hardware
encoder on a Pi 4 or older; on a Pi 5 picamera2 makes it the libav one). SPS/PPS are
repeated on every IDR (``repeat=True``), one IDR every ``keyframe_seconds*fps`` frames
(``iperiod``), ``request_keyframe`` is ``force_key_frame()``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent.camera.base import EncodedFrame, FrameRing, ParameterSets
from agent.config import CameraSection
from agent.errors import SourceError
from agent.timeline import Clock, monotonic_ns

log = logging.getLogger("wearcap.camera")

META_KEEP = 64
"""Requests whose metadata is kept while their frame is being encoded."""


@dataclass(frozen=True, slots=True)
class PiApi:
    """The picamera2 names this adapter uses (injected in tests, imported on a Pi)."""

    Picamera2: Any
    H264Encoder: Any
    LibavH264Encoder: Any
    Output: Any


def load_api() -> PiApi:
    try:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder, LibavH264Encoder
        from picamera2.outputs import Output
    except Exception as exc:  # ImportError off a Pi, or libcamera failing to load
        raise SourceError(
            f"picamera2 cannot be imported ({exc}); on a Pi install python3-picamera2 and "
            "create the venv with --system-site-packages (install.sh does both)",
            device="picamera2") from exc
    return PiApi(Picamera2, H264Encoder, LibavH264Encoder, Output)


class PiCamera:
    """The Camera protocol on picamera2 (see the module docstring)."""

    def __init__(self, cfg: CameraSection, clock: Clock = monotonic_ns, *,
                 api: PiApi | None = None, camera_num: int = 0) -> None:
        self.cfg = cfg
        self.clock = clock
        self.width = cfg.width
        self.height = cfg.height
        self.fps = cfg.fps
        self.encoder_name = cfg.encoder
        self.device = f"camera{camera_num}"
        self.camera_num = camera_num
        self.frames = FrameRing(cfg.ring_bytes)
        self._api = api
        self._picam2: Any = None
        self._encoder: Any = None
        self._meta: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._meta_lock = threading.Lock()
        self._params = ParameterSets()
        self._last_ts: int | None = None
        self._last = (0, cfg.exposure_us, round(1e6 / cfg.fps))
        self._index = -1
        self._idr_asked = False
        self._n = {"requests": 0, "encoded": 0, "delivered": 0, "keyframes": 0, "lost": 0,
                   "metadata_misses": 0, "bytes": 0}

    # ------------------------------------------------------------------ protocol

    def start(self) -> None:
        if self._picam2 is not None:
            raise SourceError("camera already started", device=self.device)
        api = self._api or load_api()
        frame_us = round(1e6 / self.fps)
        keyint = max(1, round(self.cfg.keyframe_seconds * self.fps))
        bitrate = self.cfg.bitrate_kbps * 1000
        try:
            self._picam2 = api.Picamera2(self.camera_num)
            config = self._picam2.create_video_configuration(
                main={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameDurationLimits": (frame_us, frame_us)})
            self._picam2.configure(config)
            if self.cfg.encoder == "libx264":
                encoder = api.LibavH264Encoder(bitrate=bitrate, repeat=True, iperiod=keyint,
                                               framerate=self.fps)
            else:
                encoder = api.H264Encoder(bitrate=bitrate, repeat=True, iperiod=keyint)
            self.encoder_name = ("libx264" if isinstance(encoder, api.LibavH264Encoder)
                                 else "h264_v4l2m2m")
            self._encoder = encoder
            self._picam2.post_callback = self._on_request
            self._picam2.start_recording(encoder, _output_class(api.Output)(self))
        except Exception as exc:
            self._close()
            raise SourceError(f"cannot start the Pi camera: {exc}", device=self.device) from exc

    def request_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.force_key_frame()

    def poll(self, max_frames: int = 64) -> list[EncodedFrame]:
        return self.frames.poll(max_frames)

    def wait(self, timeout: float) -> bool:
        return self.frames.wait(timeout)

    def stats(self) -> dict[str, Any]:
        n = self._n
        return {
            "backend": "picamera2", "device": self.device, "encoder": self.encoder_name,
            "width": self.width, "height": self.height, "fps": self.fps,
            "timestamps": "SensorTimestamp",
            "frames_captured": n["requests"], "frames_encoded": n["encoded"],
            "frames_delivered": n["delivered"], "keyframes": n["keyframes"],
            "bytes_encoded": n["bytes"],
            "frames_dropped": n["lost"] + self.frames.ring.dropped_records,
            "dropped_source": n["lost"], "metadata_misses": n["metadata_misses"],
            "headers_added": self._params.added,
            "running": self._picam2 is not None,
            "error": str(self.frames.error) if self.frames.error else None,
            **self.frames.stats(),
        }

    def stop(self) -> None:
        if self._picam2 is None:
            return
        try:
            self._picam2.stop_recording()
        except Exception as exc:
            log.warning("camera: stopping the recording failed: %s", exc)
        self._close()

    def _close(self) -> None:
        picam2, self._picam2 = self._picam2, None
        if picam2 is not None:
            try:
                picam2.close()
            except Exception as exc:
                log.warning("camera: closing the camera failed: %s", exc)

    # ------------------------------------------------------------------ picamera2's threads

    def _on_request(self, request: Any) -> None:
        """post_callback: remember the absolute timing of a frame before it is encoded."""
        md = request.get_metadata()
        ts = md.get("SensorTimestamp")
        if ts is None:
            return
        self._n["requests"] += 1
        timing = (int(ts), int(md.get("ExposureTime", self.cfg.exposure_us)),
                  int(md.get("FrameDuration", round(1e6 / self.fps))))
        with self._meta_lock:
            self._meta[int(ts / 1000)] = timing  # the same µs value the encoder derives
            while len(self._meta) > META_KEEP:
                self._meta.popitem(last=False)

    def _on_frame(self, frame: Any, keyframe: bool, timestamp: int | None) -> None:
        """outputframe: one encoded access unit into the ring."""
        first = getattr(self._encoder, "firsttimestamp", None)
        timing = None
        if timestamp is not None and first is not None:
            with self._meta_lock:
                timing = self._meta.pop(first + timestamp, None)
        if timing is None:
            self._n["metadata_misses"] += 1
            base = (first or 0) + (timestamp or 0)
            timing = (base * 1000, self._last[1], self._last[2])
        sensor_ts, exposure_us, duration_us = timing
        self._last = timing
        lost = 0
        if self._last_ts is not None and duration_us > 0:
            lost = max(0, round((sensor_ts - self._last_ts) / (duration_us * 1000)) - 1)
        self._last_ts = sensor_ts
        self._index += 1 + lost
        self._n["lost"] += lost
        data = bytes(frame)
        if keyframe:
            data = self._params.ensure(data)
            self._n["keyframes"] += 1
        self._n["encoded"] += 1
        self._n["bytes"] += len(data)
        ok = self.frames.push(data, keyframe=keyframe, index=self._index,
                              sensor_ts_ns=sensor_ts,
                              host_ts_ns=sensor_ts - exposure_us * 1000 // 2,
                              exposure_us=exposure_us, frame_duration_us=duration_us,
                              dropped_before=lost)
        if ok:
            self._n["delivered"] += 1
            if keyframe:
                self._idr_asked = False
            return
        # What follows a lost frame needs a fresh IDR. picamera2 makes one IDR per request,
        # so ask once per loss (again only if the IDR itself is lost).
        if keyframe:
            self._idr_asked = False
        if not self._idr_asked and self._encoder is not None:
            self._idr_asked = True
            self._encoder.force_key_frame()


def _output_class(base: Any) -> Any:
    """An Output subclass (picamera2 checks the type) that feeds a PiCamera."""

    class RingOutput(base):  # type: ignore[misc]
        def __init__(self, camera: PiCamera) -> None:
            super().__init__()
            self._camera = camera

        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                        packet: Any = None, audio: bool = False) -> None:
            if audio or frame is None:
                return
            try:
                self._camera._on_frame(frame, keyframe, timestamp)
            except Exception as exc:  # never raise into picamera2's encoder thread
                log.exception("camera: handling an encoded frame failed")
                self._camera.frames.fail(SourceError(f"frame handling failed: {exc!r}",
                                                     device=self._camera.device))

    return RingOutput
