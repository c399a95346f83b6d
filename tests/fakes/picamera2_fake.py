"""A fake of the part of picamera2 that agent/camera/pi.py uses.

Every public class, method, parameter and attribute here exists with a compatible signature
in the real picamera2 (tests/test_camera_pi.py::test_canary_* checks that against its
source). Parameters the real API has but the adapter does not use are left out; parameters
at a different position than in the real API are keyword-only. Test controls start with
``_fake``.

The fake camera produces requests whose metadata carries an absolute ``SensorTimestamp``
(ns), ``ExposureTime`` and ``FrameDuration`` (µs) and runs them through the same steps as
picamera2's event loop: ``post_callback(request)``, then the encoder, which calls
``outputframe(frame, keyframe, timestamp, packet, audio)`` with the timestamp in µs relative
to the first frame it encoded (``firsttimestamp`` keeps that first absolute value). Frames are
synthetic Annex B access units: an IDR carries SPS and PPS when ``repeat`` is set.
"""

from __future__ import annotations

import threading
from typing import Any

from agent.camera.pi import PiApi

SPS = b"\x00\x00\x00\x01\x67\x42\xc0\x1f\xda\x01\x40"
PPS = b"\x00\x00\x00\x01\x68\xce\x3c\x80"


def frame_bytes(k: int, keyframe: bool, headers: bool) -> bytes:
    """A synthetic access unit whose slice payload encodes the frame number ``k``."""
    body = k.to_bytes(4, "big") * 8
    if keyframe:
        return (SPS + PPS if headers else b"") + b"\x00\x00\x00\x01\x65\x88" + body
    return b"\x00\x00\x00\x01\x41\x9a" + body


class CompletedRequest:
    def __init__(self, metadata: dict[str, Any]) -> None:
        self._metadata = metadata

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)


class Output:
    def __init__(self, pts=None) -> None:
        self.recording = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        pass


class _Encoder:
    """What picamera2's Encoder base and its H.264 encoders do for the adapter."""

    def __init__(self, bitrate=None, repeat=True, iperiod=None) -> None:
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.firsttimestamp: int | None = None
        self._outputs: list[Output] = []
        self._running = False
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self._count = 0

    @property
    def output(self):
        return self._outputs[0] if len(self._outputs) == 1 else self._outputs

    @output.setter
    def output(self, value) -> None:
        value = value if isinstance(value, list) else [value]
        if not all(isinstance(v, Output) for v in value):
            raise RuntimeError("Must pass Output")  # as picamera2 does
        self._outputs = value

    def start(self, quality=None) -> None:
        if self._running:
            raise RuntimeError("Encoder already running")
        self._running = True
        self.firsttimestamp = None
        for out in self._outputs:
            out.start()

    def stop(self) -> None:
        if not self._running:
            raise RuntimeError("Encoder already stopped")
        self._running = False
        for out in self._outputs:
            out.stop()

    def force_key_frame(self) -> None:
        self._key_frames_requested += 1

    def _fake_encode(self, request: CompletedRequest) -> None:
        if not self._running:
            return
        ts = int(request.get_metadata()["SensorTimestamp"] / 1000)  # ns to µs, as picamera2
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            rel = 0
        else:
            rel = ts - self.firsttimestamp
        period = self.iperiod or 0
        key = self._count == 0 or (period > 0 and self._count % period == 0)
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1  # one forced IDR per request, as picamera2
            key = True
        data = frame_bytes(self._count, key, headers=self.repeat or self._count == 0)
        self._count += 1
        for out in self._outputs:
            out.outputframe(data, key, rel, None, False)


class H264Encoder(_Encoder):
    def __init__(self, bitrate=None, repeat=True, iperiod=None) -> None:
        super().__init__(bitrate, repeat, iperiod)


class LibavH264Encoder(_Encoder):
    def __init__(self, bitrate=None, repeat=True, iperiod=30, framerate=30) -> None:
        super().__init__(bitrate, repeat, iperiod)
        self.framerate = framerate


class Picamera2:
    _fake_cameras = 1
    _fake_t0_ns = 5_000_000_000_000
    _fake_exposure_us = 12_000
    _fake_jitter_ns: tuple[int, ...] = (0,)
    _fake_instances: list[Picamera2] = []

    def __init__(self, camera_num=0) -> None:
        if camera_num >= self._fake_cameras:
            raise IndexError("list index out of range")  # what picamera2 raises then
        self.post_callback = None
        self._fake_config: dict[str, Any] | None = None
        self._fake_encoder: _Encoder | None = None
        self._fake_closed = False
        self._fake_recording = False
        self._fake_k = 0
        self._fake_lock = threading.Lock()
        type(self)._fake_instances.append(self)

    def create_video_configuration(self, main=None, *, controls=None) -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        return {"use_case": "video", "main": main, "controls": dict(controls or {})}

    def configure(self, camera_config=None) -> None:
        if self._fake_closed:
            raise RuntimeError("Camera not opened")
        self._fake_config = camera_config

    def start_recording(self, encoder, output, pts=None) -> None:
        if self._fake_config is None:
            raise RuntimeError("Camera has not been configured")
        encoder.output = output
        encoder.start()
        self._fake_encoder = encoder
        self._fake_recording = True

    def stop_recording(self) -> None:
        self._fake_recording = False
        if self._fake_encoder is not None:
            self._fake_encoder.stop()

    def close(self) -> None:
        self._fake_closed = True

    # ------------------------------------------------------------------ test controls

    @property
    def _fake_frame_us(self) -> int:
        assert self._fake_config is not None
        _lo, hi = self._fake_config["controls"].get("FrameDurationLimits", (33333, 33333))
        return int(hi)

    def _fake_frames(self, n: int, *, camera_drops=(), encoder_skips=(), no_metadata=()):
        """Run ``n`` sensor frames through post_callback and the encoder. Frames in
        ``camera_drops`` never leave the sensor; those in ``encoder_skips`` reach the
        callback but are not encoded; those in ``no_metadata`` lack their timing keys."""
        with self._fake_lock:
            for _ in range(n):
                k = self._fake_k
                self._fake_k += 1
                if not self._fake_recording or k in camera_drops:
                    continue
                jitter = self._fake_jitter_ns[k % len(self._fake_jitter_ns)]
                md = {"SensorTimestamp": self._fake_t0_ns + k * self._fake_frame_us * 1000
                      + jitter, "ExposureTime": self._fake_exposure_us,
                      "FrameDuration": self._fake_frame_us, "AnalogueGain": 1.0}
                if k in no_metadata:
                    md = {"SensorTimestamp": md["SensorTimestamp"]}
                req = CompletedRequest(md)
                if self.post_callback is not None:
                    self.post_callback(req)
                if k in encoder_skips or self._fake_encoder is None:
                    continue
                self._fake_encoder._fake_encode(req)


def make_api(**knobs: Any) -> PiApi:
    """A PiApi over fresh fake classes; ``knobs`` set the Picamera2 ``_fake_*`` controls."""
    cam = type("Picamera2", (Picamera2,), {f"_fake_{k}": v for k, v in knobs.items()}
               | {"_fake_instances": []})
    return PiApi(Picamera2=cam, H264Encoder=H264Encoder, LibavH264Encoder=LibavH264Encoder,
                 Output=Output)
