"""The wearer's actions in the capture loop (real encoder, paced on the host clock): pause
withholds every frame before the writer, resume starts on an IDR with no pre-roll, segments
roll on time during a pause, annotations and discards are explicit events, a low battery
seals and stops. Assertions are on what was written, never on how long it took."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import msgpack
from mcap.reader import make_reader

from agent.capture import CaptureService, CaptureSettings
from agent.mcu.controls import Action
from agent.mcu.wearer import Wearer
from agent.record.discard import DISCARD_DIR
from agent.record.schemas import frame_rows
from agent.record.spool import Spool
from agent.sources import GAP_TOPIC
from tests.h264_frames import EncoderCamera


class ScriptedWearer:
    """The Wearer interface, with actions at fixed offsets from the first poll."""

    def __init__(self, script: list[tuple[float, str]], spool: Path) -> None:
        self.script = sorted(script)
        self.t0: int | None = None
        self.applied: list[Action] = []
        self._real = Wearer(None, spool)

    def poll(self, now: int) -> list[Action]:
        if self.t0 is None:
            self.t0 = now
        out = []
        while self.script and now - self.t0 >= self.script[0][0] * 1e9:
            _at, kind = self.script.pop(0)
            detail: dict[str, Any] = {}
            if kind == "discard-requested":
                detail = {"from_ns": 0, "to_ns": now, "minutes": 5.0, "press_ns": now}
            elif kind == "low-battery":
                detail = {"percent": 4, "millivolts": 3330}
            out.append(Action(kind, now, detail))
        self.applied += out
        return out

    def request_discard(self, action, sealed):
        return self._real.request_discard(action, sealed)


def read(path: Path):
    frames: list[dict[str, Any]] = []
    other: dict[str, list[Any]] = {}
    with path.open("rb") as fh:
        for _, ch, m in make_reader(fh, validate_crcs=True).iter_messages(log_time_order=False):
            if ch.topic == "/camera/frames":
                frames += frame_rows(msgpack.unpackb(m.data))
            elif ch.message_encoding == "msgpack":
                other.setdefault(ch.topic, []).append(msgpack.unpackb(m.data))
    return frames, other


def run(tmp_path, script, seconds=6.0, segment_seconds=1.0, frames=None):
    stop = threading.Event()
    cam = EncoderCamera(frames or int(seconds * 30), paced=True, gop=300, on_exhausted=stop.set)
    spool = Spool(tmp_path / "spool", "dev")
    wearer = ScriptedWearer(script, spool.root)
    st = CaptureSettings(device_id="dev", config_digest="c" * 64,
                         segment_seconds=segment_seconds, drain_seconds=0.02)
    notes: list[str] = []
    res = CaptureService(st, spool, cam, [], stop=stop, wearer=wearer,
                         notify=lambda s: None, status=notes.append).run()
    segs = [read(s.path) for s in res.sealed]
    return res, cam, wearer, segs, notes


def test_pause_withholds_frames_resume_starts_on_an_idr_and_segments_roll_meanwhile(tmp_path):
    res, cam, wearer, segs, notes = run(
        tmp_path, [(1.0, "pause"), (3.6, "resume"), (4.5, "annotation")])
    pause_ns = next(a.host_ns for a in wearer.applied if a.kind == "pause")
    resume_ns = next(a.host_ns for a in wearer.applied if a.kind == "resume")
    frames = [f for fr, _ in segs for f in fr]
    assert frames and res.paused_frames > 30  # 2.6 s at 30 fps withheld
    written = [f["host_ts_ns"] for f in frames]
    assert not [t for t in written if pause_ns <= t < resume_ns]  # nothing while paused
    after = [f for f in frames if f["host_ts_ns"] >= resume_ns]
    assert after and after[0]["keyframe"]  # resume on an IDR; no pre-roll
    assert cam.keyframe_requests >= 1
    assert len(frames) + res.paused_frames == cam.produced  # each frame: written or withheld
    # a segment rolled on time while paused (no frame to roll at): one with no frames
    assert any(not fr for fr, _ in segs)
    events = [e for _, o in segs for e in o.get("/wearcap/events", [])]
    assert [e["kind"] for e in events] == ["pause", "resume", "annotation"]
    gaps = [g for _, o in segs for g in o.get(GAP_TOPIC, [])]
    paused = [g for g in gaps if g["cause"] == "paused"]
    assert len(paused) == 1 and paused[0]["lost"] == res.paused_frames
    assert not [g for g in gaps if g["cause"] == "frame-index-jump"]  # a pause is not a loss
    assert "paused by the wearer" in notes and "resumed by the wearer" in notes


def test_discard_rolls_at_the_next_idr_and_writes_a_durable_request(tmp_path):
    res, _cam, _w, segs, _ = run(tmp_path, [(2.5, "discard-requested")], seconds=4.0,
                                 segment_seconds=60.0)
    assert len(res.sealed) == 2  # rolled at the press, not at 60 s
    assert segs[1][0][0]["keyframe"]
    (req,) = (tmp_path / "spool" / DISCARD_DIR).glob("*.json")
    body = json.loads(req.read_text())
    assert body["segments"] == [res.sealed[0].id] and body["state"] == "pending"
    events = [e["kind"] for _, o in segs for e in o.get("/wearcap/events", [])]
    assert events == ["discard-requested", "discard-written"]


def test_low_battery_seals_and_stops_the_loop(tmp_path):
    res, cam, _w, segs, notes = run(tmp_path, [(1.0, "low-battery")], seconds=30.0)
    assert res.stopped_for == "low-battery"
    assert cam.produced < 30 * 10  # stopped long before the camera ran out
    assert res.sealed and segs[-1][0]  # the open segment was sealed, with its frames
    assert any("battery low" in n for n in notes)
