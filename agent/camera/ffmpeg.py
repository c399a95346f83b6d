"""Any FFmpeg input as the head camera, through PyAV: a ``lavfi`` test source, a V4L2 device,
a video file.

One background thread reads the input, converts each picture to yuv420p at the configured
size, encodes it to H.264 and pushes the access unit into a ByteRing; the writer takes the
frames with ``poll()`` / ``wait()``.

Timing. A live device (``live = "yes"``, or ``"auto"`` with format ``v4l2`` or an input
under ``/dev/video``) is stamped with the buffer time FFmpeg reports when it is on the host
timeline (within 5 s of the clock; otherwise the arrival time). Any other input is *paced*
like a sensor: frame k exists at ``t0 + k/fps`` on the host clock and no earlier, where t0
is when the first frame was read. Its ``sensor_ts_ns`` is that instant (the end of
exposure, as a Pi's CSI buffer time), ``exposure_us`` comes from the config,
``host_ts_ns = sensor_ts_ns - exposure_us*1000//2`` (mid-exposure) and ``frame_duration_us
= 1e6/fps``. When the thread falls behind by whole frame periods it does not catch up by
running fast: the slots it missed are lost frames, counted and carried in the next frame's
``dropped_before`` (its ``index`` jumps by as much). A file input loops from the start when
it ends, so a short clip can feed a recording of any length.

Encoding. libx264 with preset ultrafast, tune zerolatency, no B-frames, a keyframe every
``keyframe_seconds*fps`` frames (no scene-cut keyframes, so segments can roll on a steady
cadence), SPS and PPS repeated in front of every IDR, Annex B. ``encoder = "auto"`` uses
the V4L2 memory-to-memory hardware encoder (``h264_v4l2m2m``) where it really opens and
falls back to libx264 otherwise, saying so in the log; an explicit ``h264_v4l2m2m`` that
cannot open is a SourceError. Every keyframe handed out starts with SPS and PPS, whatever
the encoder does. Each EncodedFrame is exactly one access unit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from agent.camera.base import EncodedFrame, FrameRing, ParameterSets, nal_units
from agent.config import CameraSection
from agent.errors import SourceError
from agent.timeline import Clock, monotonic_ns

__all__ = ["FfmpegCamera", "expand_input", "is_live", "nal_units"]

log = logging.getLogger("wearcap.camera")

def is_live(cfg: CameraSection) -> bool:
    if cfg.live != "auto":
        return cfg.live == "yes"
    return cfg.format == "v4l2" or cfg.input.startswith("/dev/video")


def expand_input(cfg: CameraSection) -> str:
    """The input string with ``{width}``, ``{height}`` and ``{fps}`` filled in."""
    return (cfg.input.replace("{width}", str(cfg.width))
            .replace("{height}", str(cfg.height))
            .replace("{fps}", f"{cfg.fps:g}"))


class FfmpegCamera:
    """The Camera protocol on PyAV (see the module docstring for timing and encoding)."""

    LIVE_TS_WINDOW_NS = 5_000_000_000

    def __init__(self, cfg: CameraSection, clock: Clock = monotonic_ns) -> None:
        self.cfg = cfg
        self.clock = clock
        self.width = cfg.width
        self.height = cfg.height
        self.fps = cfg.fps
        self.encoder_name = cfg.encoder
        self.input = expand_input(cfg)
        self.live = is_live(cfg)
        self.rate = Fraction(cfg.fps).limit_denominator(1001)
        self.keyint = max(1, round(cfg.keyframe_seconds * cfg.fps))
        self.frames = FrameRing(cfg.ring_bytes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: Any = None
        self._encoder: Any = None
        self._source: Iterator[Any] | None = None
        self._first: Any = None
        self._idr_requested = 0  # written by the consumer only
        self._idr_done = 0  # written by the producer only
        self._force_idr = False
        self._params = ParameterSets()
        self._pending: dict[int, tuple[int, int, int, int, int]] = {}  # pts -> timing
        self._n = {"captured": 0, "encoded": 0, "delivered": 0, "keyframes": 0,
                   "dropped_late": 0, "dropped_source": 0, "loops": 0, "decode_errors": 0,
                   "bytes": 0, "headers_added": 0}
        self._timestamps = "paced" if not self.live else "device"
        self._av_errors: tuple[type[Exception], ...] = (ValueError, OSError)
        self.exposure_hook: Callable[[int, int, int], None] | None = None
        """Simulated rig only: called with (index, exposure start, exposure end) of each paced
        frame, the simulated sensor's true exposure (the simulated MCU's strobe source)."""

    # ------------------------------------------------------------------ protocol

    def start(self) -> None:
        if self._thread is not None:
            raise SourceError("camera already started", device=self.input)
        import av

        # everything PyAV raises for a bad input or encoder, plus the plain errors of its API
        self._av_errors = (av.error.FFmpegError, ValueError, OSError)
        self._open_input(av)
        try:
            self._encoder = self._open_encoder(av)
            self._first = self._next_frame()
        except BaseException:
            self._container.close()
            raise
        self._thread = threading.Thread(target=self._run, name="camera-ffmpeg", daemon=True)
        self._thread.start()

    def request_keyframe(self) -> None:
        self._idr_requested += 1

    def poll(self, max_frames: int = 64) -> list[EncodedFrame]:
        return self.frames.poll(max_frames)

    def wait(self, timeout: float) -> bool:
        return self.frames.wait(timeout)

    def stats(self) -> dict[str, Any]:
        n = self._n
        return {
            "backend": "ffmpeg", "input": self.input, "live": self.live,
            "encoder": self.encoder_name, "width": self.width, "height": self.height,
            "fps": self.fps, "timestamps": self._timestamps,
            "frames_captured": n["captured"], "frames_encoded": n["encoded"],
            "frames_delivered": n["delivered"], "keyframes": n["keyframes"],
            "bytes_encoded": n["bytes"],
            "frames_dropped": n["dropped_late"] + n["dropped_source"]
            + self.frames.ring.dropped_records,
            "dropped_late": n["dropped_late"], "dropped_source": n["dropped_source"],
            "input_loops": n["loops"], "decode_errors": n["decode_errors"],
            "running": self._thread is not None and self._thread.is_alive(),
            "error": str(self.frames.error) if self.frames.error else None,
            **self.frames.stats(),
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # ------------------------------------------------------------------ opening

    def _open_input(self, av: Any) -> None:
        opts: dict[str, str] = {}
        if self.cfg.format == "v4l2":
            opts = {"video_size": f"{self.width}x{self.height}",
                    "framerate": f"{self.fps:g}"}
        try:
            self._container = av.open(self.input, format=self.cfg.format or None,
                                      options=opts)
        except self._av_errors as exc:
            raise SourceError(f"cannot open camera input (format "
                              f"{self.cfg.format or 'probed'}): {exc}",
                              device=self.input) from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError("input has no video stream", device=self.input)
        self._stream = self._container.streams.video[0]
        self._source = self._decode()

    def _open_encoder(self, av: Any) -> Any:
        name = self.cfg.encoder
        if name == "auto":
            if "h264_v4l2m2m" in av.codecs_available:
                try:
                    return self._make_encoder(av, "h264_v4l2m2m")
                except self._av_errors as exc:
                    log.info("camera: hardware encoder h264_v4l2m2m does not open here (%s); "
                             "using libx264", exc)
            name = "libx264"
        try:
            return self._make_encoder(av, name)
        except self._av_errors as exc:
            raise SourceError(f"encoder {name} cannot open: {exc}", device=self.input) from exc

    def _make_encoder(self, av: Any, name: str) -> Any:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = 1 / self.rate
        ctx.framerate = self.rate
        ctx.bit_rate = self.cfg.bitrate_kbps * 1000
        ctx.gop_size = self.keyint
        ctx.max_b_frames = 0
        if name == "libx264":
            ctx.options = {
                "preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
                "x264-params": f"keyint={self.keyint}:scenecut=0:bframes=0:"
                               "repeat-headers=1:annexb=1",
            }
        ctx.open()
        self.encoder_name = name
        return ctx

    # ------------------------------------------------------------------ reading

    def _decode(self) -> Iterator[Any]:
        """Decoded pictures, forever for a looping file; raises SourceError when it cannot."""
        import av

        container, stream = self._container, self._stream
        while True:
            got = 0
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError:
                        self._n["decode_errors"] += 1
                        continue
                    for frame in frames:
                        got += 1
                        yield frame
            except self._av_errors as exc:
                raise SourceError(f"reading the camera input failed: {exc}",
                                  device=self.input) from exc
            if self.live or got == 0:
                raise SourceError("the camera input ended" if got else
                                  "the camera input has no decodable frames",
                                  device=self.input)
            self._n["loops"] += 1
            try:
                container.seek(0)
            except self._av_errors as exc:
                raise SourceError(f"cannot loop the input file: {exc}",
                                  device=self.input) from exc

    def _next_frame(self) -> Any:
        assert self._source is not None
        frame = next(self._source)
        self._n["captured"] += 1
        return frame

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._loop()
        except SourceError as exc:
            self.frames.fail(exc)
        except Exception as exc:  # a bug or an unforeseen library error: still a fault
            log.exception("camera thread failed")
            self.frames.fail(SourceError(f"camera thread failed: {exc!r}", device=self.input))
        finally:
            try:
                self._flush()
            except Exception as exc:
                log.warning("camera: flushing the encoder failed: %s", exc)
            self._container.close()

    def _loop(self) -> None:
        period = 1e9 / self.fps
        duration_us = round(1e6 / self.fps)
        exposure_us = self.cfg.exposure_us
        half_exposure_ns = exposure_us * 1000 // 2
        frame = self._first
        self._first = None
        t0 = 0
        slot = -1
        last_ts: int | None = None
        while not self._stop.is_set():
            now = self.clock()
            lost = 0
            if not self.live:
                if slot < 0:
                    t0, slot = now, 0
                else:
                    slot += 1
                    due = t0 + round(slot * period)
                    if now < due:
                        if self._stop.wait((due - now) / 1e9):
                            break
                    elif now - due >= period:  # missed whole frame periods: frames lost
                        lost = int((now - due) // period)
                        slot += lost
                        self._n["dropped_late"] += lost
                sensor_ts = t0 + round(slot * period)
                index = slot
                if self.exposure_hook is not None:
                    self.exposure_hook(index, sensor_ts - exposure_us * 1000, sensor_ts)
            else:
                sensor_ts = self._live_timestamp(frame, now)
                if last_ts is not None:
                    gap = round((sensor_ts - last_ts) / period) - 1
                    if gap > 0:
                        lost = gap
                        self._n["dropped_source"] += gap
                last_ts = sensor_ts
                slot += 1 + lost
                index = slot
            self._encode(frame, index, (sensor_ts, sensor_ts - half_exposure_ns, exposure_us,
                                        duration_us, lost))
            frame = self._next_frame()

    def _live_timestamp(self, frame: Any, now: int) -> int:
        if frame.pts is not None and frame.time_base is not None:
            ts = int(frame.pts * frame.time_base * 1_000_000_000)
            if abs(ts - now) < self.LIVE_TS_WINDOW_NS:
                self._timestamps = "device"
                return ts
        self._timestamps = "arrival"
        return now

    def _encode(self, frame: Any, index: int, meta: tuple[int, int, int, int, int]) -> None:
        import av

        if (frame.width, frame.height, frame.format.name) != (self.width, self.height,
                                                              "yuv420p"):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = index
        frame.time_base = self._encoder.time_base
        if self._idr_requested > self._idr_done or self._force_idr:
            self._idr_done = self._idr_requested
            self._force_idr = False
            frame.pict_type = av.video.frame.PictureType.I
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        self._pending[index] = meta
        self._emit(self._encoder.encode(frame))

    def _emit(self, packets: list[Any]) -> None:
        for packet in packets:
            meta = self._pending.pop(int(packet.pts), None)
            if meta is None:  # an encoder that renumbers: keep the order, flag nothing
                log.warning("camera: encoder returned an unknown pts %s", packet.pts)
                continue
            data = bytes(packet)
            key = bool(packet.is_keyframe)
            if key:
                data = self._with_parameter_sets(data)
                self._n["keyframes"] += 1
            self._n["encoded"] += 1
            self._n["bytes"] += len(data)
            sensor_ts, host_ts, exposure_us, duration_us, lost = meta
            ok = self.frames.push(data, keyframe=key, index=int(packet.pts),
                                  sensor_ts_ns=sensor_ts, host_ts_ns=host_ts,
                                  exposure_us=exposure_us, frame_duration_us=duration_us,
                                  dropped_before=lost)
            if ok:
                self._n["delivered"] += 1
            else:
                self._force_idr = True  # what follows a lost frame needs a fresh IDR

    def _with_parameter_sets(self, data: bytes) -> bytes:
        """Make sure a keyframe starts with SPS and PPS (cached from the encoder)."""
        if not self._params.cached and self._encoder.extradata:
            self._params.learn(bytes(self._encoder.extradata))
        out = self._params.ensure(data)
        self._n["headers_added"] = self._params.added
        return out

    def _flush(self) -> None:
        if self._encoder is not None:
            self._emit(self._encoder.encode(None))
            self._pending.clear()
