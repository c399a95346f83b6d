"""The capture service (real encoder, controlled timeline) and the `wearcap run` command."""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
from mcap.reader import make_reader

from agent.capture import CaptureService, CaptureSettings
from agent.errors import DiskFullError
from agent.record.schemas import VIDEO_TOPIC, frame_rows
from agent.record.spool import Spool
from agent.sources import GAP_TOPIC, ChannelSpec, Message
from tests.conftest import run_cli
from tests.h264_frames import EncoderCamera


class TickSource:
    """A minimal Source: one batch per drain, on the same timeline as the camera."""

    name = "tick"

    def __init__(self) -> None:
        self.n = 0
        self.started = self.stopped = False

    def channels(self):
        return [ChannelSpec("/tick", "wearcap.Tick", {"type": "object"})]

    def start(self):
        self.started = True

    def drain(self):
        self.n += 1
        out = [Message("/tick", 1_000_000_000_000 + self.n, {"n": [self.n]})]
        if self.n == 3:
            out.append(Message(GAP_TOPIC, 5, {"stream": "tick", "start_ns": 5, "end_ns": 6,
                                               "lost": 9, "cause": "ring-overflow"}))
        return out

    def segment_metadata(self):
        return {"drains": str(self.n)}

    def status(self):
        return {}

    def stop(self):
        self.stopped = True


def service(tmp_path, camera, sources=(), seconds=1.0, stop=None, notes=None, **kw):
    st = CaptureSettings(device_id="dev", config_digest="c" * 64, segment_seconds=seconds,
                         drain_seconds=0.0, **kw)
    return CaptureService(st, Spool(tmp_path / "spool", "dev"), camera, list(sources),
                          stop=stop, notify=(notes.append if notes is not None else
                                             lambda s: None),
                          status=(notes.append if notes is not None else lambda s: None))


def read(path: Path):
    with path.open("rb") as fh:
        r = make_reader(fh, validate_crcs=True)
        md = {m.name: m.metadata for m in r.iter_metadata()}
        fh.seek(0)
        r = make_reader(fh, validate_crcs=True)
        frames: list[Any] = []
        other: dict[str, list[Any]] = {}
        for _, ch, m in r.iter_messages(log_time_order=False):
            if ch.topic == "/camera/frames":
                frames += frame_rows(msgpack.unpackb(m.data))
            else:
                other.setdefault(ch.topic, []).append(msgpack.unpackb(m.data)
                                                      if ch.message_encoding == "msgpack"
                                                      else m.data)
    return md, frames, other


def test_roll_at_keyframes_loses_no_frame(tmp_path):
    stop = threading.Event()
    # gop 300 (10 s): every roll at 1 s relies on the keyframe the service requests.
    cam = EncoderCamera(160, gop=300, on_exhausted=stop.set)
    src = TickSource()
    notes: list[str] = []
    res = service(tmp_path, cam, [src], seconds=1.0, stop=stop, notes=notes).run()
    assert cam.started and cam.stopped and src.started and src.stopped
    assert len(res.sealed) >= 4 and res.frames == 160
    # One request per roll (the last may still be pending when the camera ran out).
    assert len(res.sealed) - 1 <= cam.keyframe_requests <= len(res.sealed)
    indexes, prev_sha, ticks, starts = [], None, 0, []
    for i, seg in enumerate(res.sealed):
        md, frames, other = read(seg.path)
        assert frames[0]["keyframe"], f"segment {seg.id} does not start on an IDR"
        starts.append(frames[0]["host_ts_ns"])
        indexes += [f["index"] for f in frames]
        h = md["wearcap.segment"]
        assert h["sequence"] == str(i) and h["config_digest"] == "c" * 64
        if prev_sha is not None:
            assert h["previous_sha256"] == prev_sha
        prev_sha = seg.sha256
        assert "drains" in md["wearcap.source.tick"]
        ticks += len(other.get("/tick", []))
    assert indexes == list(range(160))  # continuous across every roll, nothing twice
    # Each roll happened at the first keyframe at/after 1 s (the encoder answers a request
    # within the frames already in flight: at most one poll batch of 4).
    for a, b in itertools.pairwise(starts):
        assert 1_000_000_000 <= b - a <= 1_000_000_000 + 5 * 33_333_333
    assert ticks == src.n  # every drained message landed in some segment
    assert notes[0] == "READY=1"
    assert sum(n.startswith("sealed dev-") for n in notes) == len(res.sealed)


def test_camera_drops_and_source_overflow_are_gaps(tmp_path):
    stop = threading.Event()
    cam = EncoderCamera(40, drops={10: 3}, on_exhausted=stop.set)
    res = service(tmp_path, cam, [TickSource()], seconds=60, stop=stop).run()
    assert len(res.sealed) == 1
    _, frames, other = read(res.sealed[0].path)
    gaps = other[GAP_TOPIC]
    assert {(g["stream"], g["lost"], g["cause"]) for g in gaps} == {
        ("/camera/h264", 3, "camera-drop"), ("tick", 9, "ring-overflow")}
    assert frames[10]["index"] == 13 and frames[10]["dropped_before"] == 3


def test_stop_seals_the_open_segment(tmp_path):
    stop = threading.Event()
    cam = EncoderCamera(10_000)
    svc = service(tmp_path, cam, seconds=60, stop=stop)
    orig = cam.poll

    def poll(n=64):
        out = orig(n)
        if cam.produced >= 50:
            stop.set()  # as SIGTERM does
        return out

    cam.poll = poll  # type: ignore[method-assign]  # the test instruments the camera
    res = svc.run()
    assert len(res.sealed) == 1 and not list((tmp_path / "spool/active").iterdir())
    _, frames, _ = read(res.sealed[0].path)
    assert len(frames) == res.frames >= 50


def test_messages_before_a_first_frame_that_never_comes_are_bounded(tmp_path):
    """A camera that delivers nothing: sources keep draining; only ``pending_max`` messages
    are held, the rest are counted into one gap per topic, and all of it is sealed on stop."""
    stop = threading.Event()

    class Flood(TickSource):
        def drain(self):
            if self.n >= 50:
                stop.set()
            return super().drain()

    src = Flood()
    notes: list[str] = []
    res = service(tmp_path, EncoderCamera(0), [src], seconds=60, stop=stop, notes=notes,
                  pending_max=10, first_frame_warn_seconds=0.0).run()
    assert res.frames == 0 and len(res.sealed) == 1
    assert sum(n.startswith("no camera frame after 0 s") for n in notes) == 1
    drained = src.n  # every drained message was either kept or counted
    _, frames, other = read(res.sealed[0].path)
    assert frames == []
    kept = [t["n"][0] for t in other["/tick"]]
    assert kept == list(range(1, 10))  # nine ticks + the gap message of drain 3 fill ten
    over = [g for g in other[GAP_TOPIC] if g["cause"].startswith("pending-overflow")]
    assert len(over) == 1 and over[0]["stream"] == "/tick" and over[0]["lost"] == -1
    assert f"{drained - 9} messages" in over[0]["cause"]
    assert (over[0]["start_ns"], over[0]["end_ns"]) == (1_000_000_000_010,
                                                       1_000_000_000_000 + drained)


def test_leftover_part_is_recovered_before_recording(tmp_path):
    stop = threading.Event()
    first = service(tmp_path, EncoderCamera(30, on_exhausted=stop.set), stop=stop).run()
    sealed = first.sealed[0].path
    # Fake a crash: put the sealed bytes back as a part with a newer number, cut short.
    part = tmp_path / "spool/active/dev-00000001.mcap.part"
    part.write_bytes(sealed.read_bytes()[:-200])
    stop.clear()
    res = service(tmp_path, EncoderCamera(30, on_exhausted=stop.set), stop=stop).run()
    assert [r.outcome for r in res.recovered] == ["sealed"]
    assert res.sealed[0].seq == 2  # the new recording continues after the recovered one
    md, _, _ = read(tmp_path / "spool/sealed/dev-00000001.mcap")
    assert md["wearcap.segment"]["recovered"] == "true"


def test_disk_reserve_stops_before_writing(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    st = CaptureSettings(device_id="dev", config_digest="c")
    spool = Spool(tmp_path / "spool", "dev", reserve_mb=free_mb + 100)
    cam = EncoderCamera(10)
    with pytest.raises(DiskFullError):
        CaptureService(st, spool, cam, [], notify=lambda s: None).run()
    assert not cam.started
    assert not list((tmp_path / "spool/sealed").iterdir())


# ---------------------------------------------------------------- the command


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('profile = "sim"\n[segment]\nseconds = -5\n')
    r = run_cli("run", "--config", str(bad), "--spool", str(tmp_path / "sp"), "--duration", "1")
    assert r.returncode == 2, r.stderr
    assert "segment.seconds" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run_cli("run", "--duration", "-1", "--spool", str(tmp_path / "sp"))
    assert r.returncode == 2 and "--duration" in r.stderr


def test_run_records_the_simulated_rig_end_to_end(tmp_path):
    cfg = tmp_path / "fast.toml"
    cfg.write_text('profile = "sim"\n[camera]\nwidth = 320\nheight = 240\n'
                   "[segment]\nseconds = 2\n[spool]\nreserve_mb = 0\n")
    spool = tmp_path / "spool"
    r = run_cli("run", "--config", str(cfg), "--duration", "6", "--spool", str(spool),
                timeout=120)
    assert r.returncode == 0, r.stderr
    sealed = sorted((spool / "sealed").glob("*.mcap"))
    assert len(sealed) >= 2 and not list((spool / "active").iterdir())
    indexes, dropped, gapped = [], [], 0
    for p in sealed:
        _, frames, other = read(p)
        assert frames[0]["keyframe"]
        indexes += [f["index"] for f in frames]
        dropped += [f["dropped_before"] for f in frames]
        gapped += sum(g["lost"] for g in other.get(GAP_TOPIC, [])
                      if g["stream"] == VIDEO_TOPIC and g["lost"] > 0)
    # Every frame the camera sent is in the recording, or counted where it went missing: on a
    # loaded machine the camera may drop a late frame, and then it says so (the next frame's
    # dropped_before, and a gap on the video stream), never silently.
    jumps = sum(b - a - 1 for a, b in itertools.pairwise(indexes))
    assert all(b > a for a, b in itertools.pairwise(indexes))
    drops = sum(dropped)
    assert jumps == sum(dropped[1:]) and gapped == drops, (jumps, dropped, gapped)
    assert drops <= 0.05 * len(indexes)
    assert 5 * 30 <= len(indexes) + drops <= 7 * 30


class BatchingSource(TickSource):
    """Holds its messages until flush(), like a wrist band batching half a second; says it
    is absent, like a band that is not connected."""

    name = "band"

    def __init__(self) -> None:
        super().__init__()
        self.held: list[int] = []
        self.flushes = 0
        self.flushed = False

    def channels(self):
        return [ChannelSpec("/band", "wearcap.Band", {"type": "object"})]

    def drain(self):
        self.n += 1
        self.held.append(self.n)
        if not self.flushed:
            return []
        self.flushed = False
        out, self.held = self.held, []
        return [Message("/band", 1_000_000_000_000 + out[0], {"n": out})]

    def flush(self):
        self.flushes += 1
        self.flushed = True

    def status(self):
        return {"streaming": False, "absent_s": 3.2, "absent_cause": "not-connected:not-found"}


def test_roll_flushes_sources_into_the_segment_they_belong_to(tmp_path):
    stop = threading.Event()
    cam = EncoderCamera(100, gop=300, on_exhausted=stop.set)
    src = BatchingSource()
    notes: list[str] = []
    # No chunk closes by time in this run, so every flush is a roll's.
    res = service(tmp_path, cam, [src], seconds=1.0, stop=stop, notes=notes,
                  chunk_seconds=3600.0).run()
    rolls = len(res.sealed) - 1
    assert rolls >= 2 and src.flushes == rolls
    # Every segment but the last ends with the batch flushed at its roll: each message
    # carries the drains since the previous flush, none is carried into the next segment.
    seen: list[int] = []
    for seg in res.sealed[:-1]:
        _, _, other = read(seg.path)
        batches = other.get("/band", [])
        assert len(batches) == 1
        seen += batches[0]["n"]
    assert seen == list(range(1, len(seen) + 1))
    # The status line at a roll names the absent band and why; at stop, sources are stopped
    # on purpose and nothing is called absent.
    sealed_lines = [n for n in notes if n.startswith("sealed dev-")]
    assert len(sealed_lines) == len(res.sealed)
    assert all("band absent 3 s (not-connected:not-found)" in n for n in sealed_lines[:-1])
    assert "absent" not in sealed_lines[-1]


def test_sources_flush_at_every_chunk_close(tmp_path):
    """Nothing waits in a source for longer than a chunk: a crash loses at most a chunk."""
    ticks = itertools.count(1_000_000_000_000, 50_000_000)  # each clock read: +50 ms
    src = BatchingSource()
    st = CaptureSettings(device_id="dev", config_digest="c" * 64, segment_seconds=3600.0,
                         drain_seconds=0.0, chunk_seconds=1.0, duration=6.0)
    res = CaptureService(st, Spool(tmp_path / "spool", "dev"), None, [src],
                         clock=lambda: next(ticks), notify=lambda s: None,
                         status=lambda s: None).run()
    assert len(res.sealed) == 1
    assert src.flushes >= 5  # about one per simulated second
    _, _, other = read(res.sealed[0].path)
    batches = other["/band"]
    assert len(batches) == src.flushes  # each flush became a message in the file
    flat = [n for b in batches for n in b["n"]]
    assert flat == list(range(1, len(flat) + 1))


def test_start_up_objects_are_kept_out_of_the_collector_while_recording(tmp_path):
    """agent/heap.py freeze: once recording runs, what is alive then is left out of the cyclic
    collector's passes (each full pass walked every imported module's objects), and handed
    back when recording ends, so nothing is kept for ever."""
    import gc

    frozen: list[int] = []

    class Probe(TickSource):
        def drain(self):
            frozen.append(gc.get_freeze_count())
            return super().drain()

    ticks = itertools.count(1_000_000_000_000, 50_000_000)
    st = CaptureSettings(device_id="dev", config_digest="c" * 64, drain_seconds=0.0,
                         duration=1.0)
    probe: Any = Probe()
    CaptureService(st, Spool(tmp_path / "spool", "dev"), None, [probe],
                   clock=lambda: next(ticks), notify=lambda s: None,
                   status=lambda s: None).run()
    assert frozen and max(frozen) > 1000  # the modules' objects, at least
    assert gc.get_freeze_count() == 0
    # without heap tuning, the collector is left alone
    frozen.clear()
    st = CaptureSettings(device_id="dev", config_digest="c" * 64, drain_seconds=0.0,
                         duration=1.0, tune_heap=False)
    CaptureService(st, Spool(tmp_path / "spool2", "dev"), None, [probe],
                   clock=lambda: next(ticks), notify=lambda s: None,
                   status=lambda s: None).run()
    assert frozen and max(frozen) == 0
