"""wearcap export --to lerobot: a LeRobot v3 dataset that LeRobot's own LeRobotDataset
(lerobot-dataset 0.4.4, in its own environment .venv-lerobot) opens and reads frame by frame
without a timestamp error; episodes split at pauses and drops, true ns kept."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agent.record.spool import Spool
from tests.conftest import REPO, run_cli
from tests.h264_frames import T0_NS
from tests.recordings import Take, all_samples

LEROBOT_PY = REPO / ".venv-lerobot" / "bin" / "python"


def load_with_lerobot(root: Path) -> dict:
    if not LEROBOT_PY.exists():
        msg = "the LeRobot environment .venv-lerobot is missing (./install.sh --dev builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    r = subprocess.run([str(LEROBOT_PY), str(REPO / "tests" / "lerobot_load.py"), str(root)],
                       capture_output=True, text=True, timeout=600, check=False,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                            "HF_HOME": str(root.parent / "hf-home")})
    assert r.returncode == 0, r.stderr[-4000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def export(tmp: Path, *args: str) -> list[dict]:
    r = run_cli("export", *args, "--json")
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_paused_multi_segment_recording_gives_two_episodes_lerobot_reads(tmp_path):
    pause = {"segment": 1, "stream": "*", "start_ns": T0_NS + 2_500_000_000,
             "end_ns": T0_NS + 2_500_000_000, "lost": 0, "cause": "pause: button"}
    take = Take(seconds=4, segment_s=2, extra_gaps=[pause])
    take.write(Spool(tmp_path / "spool", "dev"))
    out = tmp_path / "ds"
    res = export(tmp_path, str(tmp_path / "spool"), "--to", "lerobot", str(out))
    eps = [e for t in res for e in t["episodes"]]
    before = sum(1 for f in take.frames if f.host_ts_ns < T0_NS + 2_500_000_000)
    assert [e["length"] for e in eps] == [before, len(take.frames) - before] == [76, 44]
    for e in eps:  # printed for the record: the alignment residual of every episode
        print(f"episode {e['episode_index']}: alignment residual max "
              f"{e['align_residual_max_ms']:.3f} ms, grid residual max "
              f"{e['grid_residual_max_ms']:.6f} ms")
        assert 0 < e["align_residual_max_ms"] <= 2.5  # nearest of 200 Hz samples
    for sub in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet",
                "videos/observation.images.camera/chunk-000/file-000.mp4"):
        assert (out / sub).is_file(), sub
    got = load_with_lerobot(out)
    assert got["num_episodes"] == 2 and got["lengths"] == [76, 44] and got["fps"] == 30
    items = got["items"]
    assert len(items) == 120
    frames = {f.host_ts_ns: f for f in take.frames}
    truth = all_samples(take)
    for it in items:
        assert it["shape"] == [3, 96, 160]
        assert it["timestamp"] == pytest.approx(it["frame_index"] / 30, abs=1e-6)
        host = it["observation.camera.host_ns"]
        assert host in frames and it["observation.camera.sensor_ns"] == \
            frames[host].sensor_ts_ns
        s = it["observation.wrist.left.host_ns"]
        i = list(truth["host_ns"]).index(s)
        assert abs(s - host) <= 2_500_000 and it["observation.wrist.left.offset_ns"] == s - host
        assert it["observation.wrist.left.device_ns"] == int(truth["device_ns"][i])
    # each picture is its recorded frame: its fingerprint is nearest that frame's (or a
    # neighbour's: testsrc changes little from frame to frame, less than the re-encoding)
    rec = thumbs([f.data for f in take.frames])
    order = [f.host_ts_ns for f in take.frames]
    best = []
    for it in items:
        d = np.abs(rec - np.asarray(it["thumb"])).mean(axis=1)
        best.append(int(d.argmin()))
        assert abs(best[-1] - order.index(it["observation.camera.host_ns"])) <= 1
        assert d.min() < 0.01
    assert best[76] >= 75  # the second episode begins where the pause cut the first


def annexb_nals(au: bytes) -> list[bytes]:
    parts = au.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts if p]


def avcc_nals(pkt: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 4 <= len(pkt):
        n = int.from_bytes(pkt[i:i + 4], "big")
        out.append(pkt[i + 4:i + 4 + n].rstrip(b"\x00"))
        i += 4 + n
    return out


def thumbs(units: list[bytes]) -> np.ndarray:
    import av

    ctx = av.CodecContext.create("h264", "r")
    out = []
    for u in units:
        for f in ctx.decode(av.Packet(u)):
            g = f.to_ndarray(format="rgb24").astype(np.float64).mean(axis=2) / 255
            h, w = g.shape[0] // 8 * 8, g.shape[1] // 8 * 8
            out.append(g[:h, :w].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3)).flatten())
    return np.asarray(out)


def test_a_drop_splits_the_episode_and_no_frame_is_duplicated(tmp_path):
    take = Take(seconds=2, segment_s=2, drop_frames=(30, 2))
    take.write(Spool(tmp_path / "spool", "dev"))
    out = tmp_path / "ds"
    res = export(tmp_path, str(tmp_path / "spool"), "--to", "lerobot", str(out))
    eps = res[0]["episodes"]
    assert [(e["first_frame"], e["last_frame"], e["length"]) for e in eps] == [
        (0, 29, 30), (32, 59, 28)]
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    idx = data["observation.camera.frame_index"]
    assert len(idx) == len(set(idx)) == len(take.frames) == 58
    assert data["frame_index"][:31] == [*range(30), 0]


def test_copy_video_keeps_the_recorded_h264(tmp_path):
    take = Take(seconds=2, segment_s=1)
    take.write(Spool(tmp_path / "spool", "dev"))
    out = tmp_path / "ds"
    res = export(tmp_path, str(tmp_path / "spool"), "--to", "lerobot", str(out),
                 "--copy-video")
    eps = res[0]["episodes"]
    assert [e["video"] for e in eps] == ["copied"] and eps[0]["length"] == 60
    import av

    with av.open(str(out / "videos/observation.images.camera/chunk-000/file-000.mp4")) as c:
        pk = [bytes(p) for p in c.demux(video=0) if p.size]
    # the recorded NAL units, as they were (MP4 holds them length-prefixed, not Annex B)
    assert [avcc_nals(p) for p in pk] == [annexb_nals(f.data) for f in take.frames]
    got = load_with_lerobot(out)
    assert got["num_frames"] == 60 and got["lengths"] == [60]


def test_cli_prints_each_episode_residual(tmp_path):
    Take(seconds=2, segment_s=1).write(Spool(tmp_path / "spool", "dev"))
    r = run_cli("export", str(tmp_path / "spool"), "--to", "lerobot", str(tmp_path / "ds"))
    assert r.returncode == 0, r.stderr
    assert "episode 0: 60 frames, alignment residual max" in r.stdout


def test_an_annotation_event_cuts_episodes_and_shows_in_foxglove(tmp_path):
    from tests.test_export_foxglove import read_js

    t_ann = T0_NS + 1_000_000_000
    take = Take(seconds=2, segment_s=2, events=[
        {"segment": 0, "kind": "annotation", "host_ns": t_ann, "detail": {"label": "screw"}},
        {"segment": 0, "kind": "discard-armed", "host_ns": t_ann + 300_000_000}])
    take.write(Spool(tmp_path / "spool", "dev"))
    res = export(tmp_path, str(tmp_path / "spool"), "--to", "lerobot", str(tmp_path / "ds"))
    before = sum(1 for f in take.frames if f.host_ts_ns < t_ann)
    assert [e["length"] for e in res[0]["episodes"]] == [before, 60 - before]  # armed: no cut
    res = export(tmp_path, str(tmp_path / "spool"), "--to", "foxglove", str(tmp_path / "fx"))
    msgs = read_js(Path(res[0]["files"][0]), tmp_path)
    logs = [m for m in msgs if m["topic"] == "/wearcap/events"]
    assert [m["schema"] for m in logs] == ["foxglove.Log"] * 2
    assert logs[0]["message"]["message"] == 'annotation: {"label": "screw"}'
    assert int(logs[0]["message"]["timestamp"]["seconds"]) * 10**9 + \
        logs[0]["message"]["timestamp"]["nanos"] == int(logs[0]["logTime"])
