"""wearcap export --to mp4: the H.264 remuxed (ffprobe: frame count and every pts), and
Parquet tables that give back every sample, raw and scaled."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agent.record.spool import Spool
from tests.conftest import run_cli
from tests.h264_frames import T0_NS
from tests.recordings import ACC_SCALE, GYRO_SCALE, REALTIME_AT_T0, Take, all_samples


def export(tmp: Path, *paths: Path) -> list[dict]:
    r = run_cli("export", *map(str, paths), "--to", "mp4", str(tmp / "out"), "--json")
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def ffprobe(path: Path) -> dict:
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                        "-show_entries", "stream=codec_name,time_base,nb_read_packets:"
                        "packet=pts,dts,flags,size", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(r.stdout))


def test_mp4_has_every_frame_at_its_recorded_time_and_the_same_bytes(tmp_path):
    take = Take(seconds=4, segment_s=2, drop_frames=(40, 3))
    take.write(Spool(tmp_path / "spool", "dev"))
    res = export(tmp_path, tmp_path / "spool")
    assert len(res) == 1
    mp4 = Path(next(f for f in res[0]["files"] if f.endswith("video.mp4")))
    info = ffprobe(mp4)
    st = info["streams"][0]
    assert st["codec_name"] == "h264" and st["time_base"] == "1/90000"
    assert int(st["nb_read_packets"]) == len(take.frames) == 117
    t0 = take.frames[0].host_ts_ns
    pts = [int(p["pts"]) for p in info["packets"]]
    for p, f in zip(pts, take.frames, strict=True):
        assert abs(p / 90_000 - (f.host_ts_ns - t0) / 1e9) <= 1 / 90_000  # within a tick
    # the drop stays a longer interval, never a duplicated frame
    steps = np.diff(pts)
    assert set(steps.tolist()) == {3000, 4 * 3000}
    assert [p["flags"].startswith("K") for p in info["packets"]] == [f.keyframe
                                                                   for f in take.frames]
    # no re-encode: the decoded frames equal those of the recorded access units
    import av

    def frames_of(units):
        ctx = av.CodecContext.create("h264", "r")
        out = []
        for u in units:
            for f in ctx.decode(av.Packet(u)):
                out.append(hashlib.sha256(f.to_ndarray(format="gray").tobytes()).hexdigest())
        return out + [hashlib.sha256(f.to_ndarray(format="gray").tobytes()).hexdigest()
                      for f in ctx.decode(None)]

    with av.open(str(mp4)) as c:
        got = [hashlib.sha256(f.to_ndarray(format="gray").tobytes()).hexdigest()
               for f in c.decode(video=0)]
    assert got == frames_of([f.data for f in take.frames])
    table = pq.read_table(mp4.with_name("frames.parquet")).to_pydict()
    assert table["host_ts_ns"] == [f.host_ts_ns for f in take.frames]
    assert table["pts"] == pts and table["index"] == [f.index for f in take.frames]
    assert table["wall_ns"] == [REALTIME_AT_T0 + f.host_ts_ns - T0_NS for f in take.frames]


def test_parquet_round_trip_gives_back_every_sample_raw_and_scaled(tmp_path):
    take = Take(seconds=4, segment_s=2, lose_imu=(300, 20))
    take.write(Spool(tmp_path / "spool", "dev"))
    res = export(tmp_path, tmp_path / "spool")
    path = Path(next(f for f in res[0]["files"] if f.endswith("wrist_left_imu.parquet")))
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[b"wearcap.take"])
    assert meta["take"] == res[0]["take"] and len(meta["segments"]) == 2
    d = t.to_pydict()
    truth = all_samples(take)
    assert d["host_ns"] == truth["host_ns"].tolist()
    assert d["device_ns"] == truth["device_ns"].tolist()
    assert d["index"] == truth["index"].tolist()
    assert d["wall_ns"] == (truth["host_ns"] + REALTIME_AT_T0 - T0_NS).tolist()
    for name, scale in (("acc", ACC_SCALE), ("gyro", GYRO_SCALE)):
        raw = truth[name]
        for k, axis in enumerate("xyz"):
            assert d[f"{name}_{axis}_raw"] == raw[:, k].tolist()
            assert np.allclose(d[f"{name}_{axis}"], raw[:, k] * scale, rtol=1e-15, atol=0)
    assert set(d["error_bound_ns"]) == {450_000}
    gaps = pq.read_table(path.with_name("gaps.parquet")).to_pydict()
    assert list(zip(gaps["stream"], gaps["lost"], strict=True)) == [("/wrist/left/imu", 20)]


def test_missing_axis_values_are_null_not_fill(tmp_path):
    take = Take(seconds=2, segment_s=2).build()
    take.chunks[3].acc[2, 1] = -32768
    take.write(Spool(tmp_path / "spool", "dev"))
    res = export(tmp_path, tmp_path / "spool")
    path = Path(next(f for f in res[0]["files"] if f.endswith("wrist_left_imu.parquet")))
    d = pq.read_table(path).to_pydict()
    i = 3 * 10 + 2
    assert d["acc_y_raw"][i] == -32768 and d["acc_y"][i] is None
    assert d["acc_x"][i] is not None and sum(v is None for v in d["acc_y"]) == 1


def test_damaged_chunk_leaves_out_undecodable_frames_with_a_gap(tmp_path):
    from tests.test_inspect import flip_in_chunk

    segs = Take(seconds=4, segment_s=4, chunk_bytes=8 << 10).write(Spool(tmp_path / "spool",
                                                                        "dev"))
    bad = flip_in_chunk(segs[0].path)
    res = export(tmp_path, bad)
    mp4 = Path(next(f for f in res[0]["files"] if f.endswith("video.mp4")))
    r = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stderr == ""  # every frame written decodes
    gaps = pq.read_table(mp4.with_name("gaps.parquet")).to_pydict()
    assert any(c.startswith("damaged-chunk") for c in gaps["cause"])
    frames = pq.read_table(mp4.with_name("frames.parquet")).num_rows
    assert 0 < frames < 120


@pytest.mark.parametrize("fixture", ["recorder-0.1.0-2026-12-01"])
def test_recorded_fixture_exports_to_mp4(tmp_path, fixture):
    from tests.test_export_foxglove import FIXTURES

    src = sorted((FIXTURES / fixture).glob("*.mcap"))
    res = export(tmp_path, *src)
    mp4 = Path(next(f for f in res[0]["files"] if f.endswith("video.mp4")))
    frames = pq.read_table(mp4.with_name("frames.parquet")).num_rows
    assert int(ffprobe(mp4)["streams"][0]["nb_read_packets"]) == frames > 100
