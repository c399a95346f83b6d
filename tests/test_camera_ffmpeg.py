"""FfmpegCamera on a real FFmpeg lavfi test source and real encoders (PyAV).

Assertions are on the stamped values and the bitstream, never on wall time.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import time
from fractions import Fraction

import av
import pytest

from agent.camera.base import EncodedFrame
from agent.camera.ffmpeg import FfmpegCamera, expand_input, is_live, nal_units
from agent.camera.open import open_camera
from agent.config import CameraSection
from agent.errors import SourceError
from tests.conftest import NOT_APPLICABLE

FPS = 30.0
PERIOD_NS = 1e9 / FPS
CFG = CameraSection(width=320, height=240, fps=FPS, keyframe_seconds=0.5, bitrate_kbps=500,
                    exposure_us=8000, encoder="libx264", ring_bytes=4 * 1024 * 1024)


def capture(cam: FfmpegCamera, n: int, on_frame=None, clock=time.monotonic_ns,
            limit_s: float = 30.0) -> list[EncodedFrame]:
    """Start, collect ``n`` frames (checking none is handed out before its time), stop."""
    out: list[EncodedFrame] = []
    cam.start()
    try:
        deadline = time.monotonic() + limit_s  # a guard against hanging, not an assertion
        while len(out) < n and time.monotonic() < deadline:
            cam.wait(0.5)
            for f in cam.poll():
                assert f.sensor_ts_ns <= clock(), "a paced frame was released before its time"
                out.append(f)
                if on_frame is not None:
                    on_frame(f, out)
    finally:
        cam.stop()
    out += cam.poll(10_000)
    return out


def rbsp(unit: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in unit:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def read_ue(bits: str, pos: int) -> tuple[int, int]:
    z = 0
    while bits[pos + z] == "0":
        z += 1
    val = int(bits[pos + z:pos + 2 * z + 1], 2) - 1
    return val, pos + 2 * z + 1


def slice_header(unit: bytes) -> tuple[int, int]:
    """(first_mb_in_slice, slice_type % 5) of a coded slice NAL unit."""
    data = rbsp(unit[1:17])
    bits = "".join(f"{b:08b}" for b in data)
    first_mb, pos = read_ue(bits, 0)
    slice_type, _ = read_ue(bits, pos)
    return first_mb, slice_type % 5


def nal_types(data: bytes) -> list[int]:
    return [u[0] & 0x1F for u in nal_units(data) if u]


# --------------------------------------------------------------------------- timing


def test_frames_are_paced_and_stamped_like_a_sensor():
    cam = FfmpegCamera(CFG)
    frames = capture(cam, 60)
    assert len(frames) >= 60
    idx = [f.index for f in frames]
    assert idx[0] == 0
    for a, b in itertools.pairwise(frames):
        assert b.index - a.index == 1 + b.dropped_before  # a jump is exactly the loss
        # stamps sit on the frame grid: t0 + k/fps
        assert abs((b.sensor_ts_ns - a.sensor_ts_ns) - (b.index - a.index) * PERIOD_NS) <= 1
    t0 = frames[0].sensor_ts_ns
    for f in frames:
        assert abs(f.sensor_ts_ns - (t0 + f.index * PERIOD_NS)) <= 1
        assert f.host_ts_ns == f.sensor_ts_ns - 8000 * 1000 // 2
        assert f.exposure_us == 8000
        assert f.frame_duration_us == 33333
    st = cam.stats()
    assert st["frames_dropped"] == sum(f.dropped_before for f in frames)
    assert st["timestamps"] == "paced" and st["encoder"] == "libx264"
    assert not st["running"]


def test_a_thread_that_falls_behind_reports_lost_frames_instead_of_speeding_up():
    jump = {"ns": 0}

    def clock() -> int:
        return time.monotonic_ns() + jump["ns"]

    def on_frame(f, out):
        if len(out) == 5:
            jump["ns"] = int(6.5 * PERIOD_NS)  # the host clock leaps 6.5 frame periods

    cam = FfmpegCamera(CFG, clock=clock)
    frames = capture(cam, 20, on_frame=on_frame, clock=clock)
    lost = sum(f.dropped_before for f in frames)
    assert lost >= 5
    for a, b in itertools.pairwise(frames):
        assert b.index - a.index == 1 + b.dropped_before
        assert abs((b.sensor_ts_ns - a.sensor_ts_ns) - (b.index - a.index) * PERIOD_NS) <= 1
    assert cam.stats()["dropped_late"] == lost


def test_a_live_input_is_not_paced_and_is_stamped_on_arrival():
    # lavfi marked live: its pts are not on the host timeline, so frames carry arrival times
    cam = FfmpegCamera(dataclasses.replace(CFG, live="yes"))
    assert cam.live
    before = time.monotonic_ns()
    frames = capture(cam, 10)
    assert len(frames) >= 10
    assert cam.stats()["timestamps"] == "arrival"
    assert all(f.sensor_ts_ns >= before for f in frames)
    for a, b in itertools.pairwise(frames):
        assert b.sensor_ts_ns >= a.sensor_ts_ns
        assert b.index - a.index == 1 + b.dropped_before


# --------------------------------------------------------------------------- bitstream


def test_keyframes_carry_sps_pps_idr_and_there_are_no_b_frames():
    frames = capture(FfmpegCamera(CFG), 40)
    keys = [f for f in frames if f.keyframe]
    assert frames[0].keyframe
    assert len(keys) >= 2  # keyframe_seconds=0.5 at 30 fps: one every 15 frames
    for f in frames:
        assert f.data.startswith(b"\x00\x00\x00\x01") or f.data.startswith(b"\x00\x00\x01")
        types = nal_types(f.data)
        vcl = [u for u in nal_units(f.data) if u and (u[0] & 0x1F) in (1, 5)]
        headers = [slice_header(u) for u in vcl]
        assert sum(1 for mb, _ in headers if mb == 0) == 1  # exactly one picture
        assert all(st != 1 for _, st in headers)  # no B slices
        if f.keyframe:
            assert types[:2] == [7, 8]
            assert next(t for t in types[2:] if t not in (6, 9)) == 5  # then the IDR
            assert set(types) <= {5, 6, 7, 8, 9}
        else:
            assert 5 not in types and 7 not in types
    gaps = [b.index - a.index for a, b in itertools.pairwise(keys)]
    assert all(g == 15 for g in gaps)


def test_the_stream_decodes_to_the_same_number_of_frames():
    frames = capture(FfmpegCamera(CFG), 30)
    stream = b"".join(f.data for f in frames)
    with av.open(io.BytesIO(stream), mode="r", format="h264") as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == len(frames)
    assert (decoded[0].width, decoded[0].height) == (320, 240)
    assert all(d.pict_type != av.video.frame.PictureType.B for d in decoded)


def test_request_keyframe_makes_the_next_frame_an_idr():
    cfg = dataclasses.replace(CFG, keyframe_seconds=30.0)  # no keyframe of its own in the run
    state: dict[str, int] = {}

    def on_frame(f, out):
        if len(out) == 8 and "at" not in state:
            state["at"] = f.index
            state["queued"] = len(cam.frames.ring)
            cam.request_keyframe()

    cam = FfmpegCamera(cfg)
    frames = capture(cam, 25, on_frame=on_frame)
    after = [f for f in frames if f.index > state["at"]]
    keys = [f for f in after if f.keyframe]
    assert keys, "no keyframe after the request"
    # frames already in the ring, plus at most the one being encoded, come before it
    assert after.index(keys[0]) <= state["queued"] + 1
    assert nal_types(keys[0].data)[:2] == [7, 8]
    assert [f.index for f in frames if f.keyframe] == [0, keys[0].index]


def test_ring_overflow_is_counted_and_followed_by_an_idr():
    cfg = dataclasses.replace(CFG, ring_bytes=60_000, keyframe_seconds=30.0)
    cam = FfmpegCamera(cfg)
    cam.start()
    try:
        for _ in range(100):  # let the ring overflow while nobody reads
            if cam.frames.ring.dropped_records >= 3:
                break
            time.sleep(0.05)
        frames = cam.poll(10_000)
        cam.wait(5.0)
        frames += cam.poll(10_000)
        cam.wait(5.0)
        frames += cam.poll(10_000)
    finally:
        cam.stop()
    frames += cam.poll(10_000)
    assert cam.frames.ring.dropped_records >= 3
    lossy = [i for i, f in enumerate(frames) if f.dropped_before]
    assert lossy, "the loss was not reported on a frame"
    for i in lossy:
        assert frames[i].keyframe  # the frame after a loss is a fresh IDR
    for a, b in itertools.pairwise(frames):
        assert b.index - a.index == 1 + b.dropped_before
    assert frames[-1].index + 1 == len(frames) + sum(f.dropped_before for f in frames)


def test_a_file_input_loops(tmp_path):
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(30))
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        with av.open("testsrc=size=160x120:rate=30", format="lavfi") as src:
            for i, fr in enumerate(src.decode(video=0)):
                if i == 8:
                    break
                fr.pts = None
                out.mux(s.encode(fr))
        out.mux(s.encode(None))
    cfg = dataclasses.replace(CFG, input=str(path), format="")
    assert not is_live(cfg)
    cam = FfmpegCamera(cfg)
    frames = capture(cam, 20)
    assert len(frames) >= 20
    assert cam.stats()["input_loops"] >= 2
    assert [f.index for f in frames] == list(range(len(frames)))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("inp, fmt", [
    ("nosuchfilter=size=320x240", "lavfi"),
    ("/dev/video97", "v4l2"),
    ("/nonexistent/clip.mp4", ""),
    ("testsrc2", "no-such-format"),
])
def test_bad_inputs_raise_source_error(inp, fmt):
    cam = FfmpegCamera(dataclasses.replace(CFG, input=inp, format=fmt))
    with pytest.raises(SourceError) as ei:
        cam.start()
    assert ei.value.device == inp
    assert inp in str(ei.value)
    assert not cam.stats()["running"]
    cam.stop()  # harmless after a failed start


def test_encoder_choice(caplog):
    if "h264_v4l2m2m" in av.codecs_available:
        try:
            ctx = av.CodecContext.create("h264_v4l2m2m", "w")
            ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
            ctx.time_base = Fraction(1, 30)
            ctx.open()
            pytest.skip(NOT_APPLICABLE + "this machine has a working hardware encoder")
        except (ValueError, OSError):
            pass
        with pytest.raises(SourceError, match="h264_v4l2m2m"):
            FfmpegCamera(dataclasses.replace(CFG, encoder="h264_v4l2m2m")).start()
    caplog.set_level(logging.INFO, logger="wearcap.camera")
    cam = FfmpegCamera(dataclasses.replace(CFG, encoder="auto"))
    frames = capture(cam, 3)
    assert cam.encoder_name == "libx264" and frames[0].keyframe
    if "h264_v4l2m2m" in av.codecs_available:
        assert "using libx264" in caplog.text


def test_stop_joins_the_thread_and_config_helpers():
    cam = open_camera(CFG)
    assert isinstance(cam, FfmpegCamera)
    cam.start()
    cam.wait(5.0)
    cam.stop()
    assert cam._thread is not None and not cam._thread.is_alive()
    left = cam.poll(10_000)
    assert cam.poll() == [] and not cam.wait(0.01)
    assert cam.stats()["frames_delivered"] == len(left)
    assert expand_input(CFG) == "testsrc2=size=320x240:rate=30"
    assert is_live(dataclasses.replace(CFG, format="v4l2"))
    assert is_live(dataclasses.replace(CFG, input="/dev/video0", format=""))
    assert not is_live(dataclasses.replace(CFG, input="/dev/video0", live="no"))
