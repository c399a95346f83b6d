"""The live status files: capture.json and the Prometheus textfile, rewritten every second
from one registry kept across writes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.livestatus import CAPTURE_FILE, PROM_FILE, PromFile, Publisher, read


def samples(path: Path) -> dict[tuple[str, tuple[str, ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(path.read_text()):
        for s in fam.samples:
            out[(s.name, tuple(s.labels.values()))] = s.value
    return out


def doc(streams: list[dict[str, Any]], fps: float = 30.0) -> dict[str, Any]:
    return {"device_id": "sim-0001", "state": "recording", "updated": time.time(),
            "pid": os.getpid(),
            "camera": {"fps": fps, "frames": 10, "dropped": 0}, "streams": streams,
            "disk": {"free_bytes": 5e9}}


def test_series_follow_the_document_from_write_to_write(tmp_path: Path) -> None:
    prom = PromFile()
    path = tmp_path / PROM_FILE
    left = {"name": "left", "rate_hz": 200.0, "streaming": True, "gaps": 0,
            "clock_bound_us": 150}
    right = {"name": "right", "rate_hz": 199.0, "streaming": True, "gaps": 2}
    prom.write(path, doc([left, right]))
    s = samples(path)
    assert s[("wearcap_stream_rate_hz", ("sim-0001", "right"))] == 199.0
    assert s[("wearcap_stream_clock_bound_seconds", ("sim-0001", "left"))] == 150e-6
    assert s[("wearcap_camera_fps", ("sim-0001",))] == 30.0
    # the next document: right is gone, left lost its bound, the camera's rate changed
    prom.write(path, doc([{**left, "clock_bound_us": None, "rate_hz": 180.0}], fps=12.5))
    s = samples(path)
    assert s[("wearcap_stream_rate_hz", ("sim-0001", "left"))] == 180.0
    assert s[("wearcap_camera_fps", ("sim-0001",))] == 12.5
    assert not any("right" in labels for _, labels in s)
    assert ("wearcap_stream_clock_bound_seconds", ("sim-0001", "left")) not in s
    # and it comes back
    prom.write(path, doc([left, right]))
    assert samples(path)[("wearcap_stream_gaps_total", ("sim-0001", "right"))] == 2.0


def test_a_publication_is_readable_and_world_readable(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        pub = Publisher(tmp_path / "run" / "wearcap")
        assert pub.publish(doc([{"name": "left", "rate_hz": 200.0}]))
    finally:
        os.umask(old)
    got = read(tmp_path / "run" / "wearcap" / CAPTURE_FILE)
    assert got is not None and got["state"] == "recording" and got["fresh"]
    mode = (tmp_path / "run" / "wearcap" / CAPTURE_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o644
    assert samples(tmp_path / "run" / "wearcap" / PROM_FILE)[
        ("wearcap_recording", ("sim-0001",))] == 1.0


def test_a_directory_that_vanishes_is_made_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    pub = Publisher(run, clock=lambda: 0.0)
    assert pub.publish(doc([]))
    for f in run.iterdir():
        f.unlink()
    run.rmdir()
    assert not pub.publish(doc([])) and pub.failures == 1
    assert pub.publish(doc([])) and (run / CAPTURE_FILE).exists()


def test_the_textfile_is_rewritten_every_prom_every_and_the_json_every_publication(
        tmp_path: Path) -> None:
    now = [100.0]
    pub = Publisher(tmp_path, every=1.0, prom_every=5.0, clock=lambda: now[0])
    got: list[tuple[float, float]] = []
    for i in range(12):  # one publication a second, each with its own frame count
        d = doc([{"name": "left", "rate_hz": 200.0}])
        d["camera"]["frames"] = i
        assert pub.due() and pub.publish(d)
        js = read(tmp_path / CAPTURE_FILE)
        assert js is not None
        got.append((js["camera"]["frames"],
                    samples(tmp_path / PROM_FILE)[("wearcap_camera_frames_total",
                                                   ("sim-0001",))]))
        now[0] += 1.0
    assert [j for j, _ in got] == list(range(12))
    # the first publication at once, then every 5 s; never older than that
    assert [p for _, p in got] == [0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 10, 10]
    # a directory made again gets the textfile at once
    run = tmp_path / "run"
    pub = Publisher(run, prom_every=5.0, clock=lambda: now[0])
    assert pub.publish(doc([]))
    for f in run.iterdir():
        f.unlink()
    run.rmdir()
    assert not pub.publish(doc([]))
    d = doc([])
    d["camera"]["frames"] = 99
    assert pub.publish(d)
    assert samples(run / PROM_FILE)[("wearcap_camera_frames_total", ("sim-0001",))] == 99
