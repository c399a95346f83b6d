"""wearcap inspect: samples not batches, CRCs checked, every file reported, plain columns,
a spool root, and a plot whose data shows the gaps, events and fits."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json

import pytest

from agent.inspect import expand, inspect_file, read_streams, report
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import Spool
from tests.conftest import run_cli
from tests.h264_frames import T0_NS, encode_frames
from tests.recordings import Take


def make_segment(spool: Spool, frames, seal: bool = True):
    seq = spool.next_seq()
    fh = spool.open_part(seq)
    w = SegmentWriter(fh, SegmentHeader("dev", seq, seq - 1, "ab" * 32, "d", None))
    for f in frames:
        w.write_frame(f)
        w.checkpoint() if f.index % 10 == 9 else None
    if not seal:
        fh.close()
        return spool.part_path(seq)
    sha, size = w.close()
    return spool.seal(seq, fh, sha, size).path


def flip_in_chunk(path, n=64):
    """A copy of ``path`` with ``n`` bytes flipped in the middle of its second chunk that
    holds video frames (which chunks hold what depends on every stream's message sizes)."""
    from mcap.reader import make_reader

    data = bytearray(path.read_bytes())
    summary = make_reader(io.BytesIO(bytes(data))).get_summary()
    idx = summary.chunk_indexes
    video = {c.id for c in summary.channels.values() if c.topic == "/camera/h264"}
    with_frames = [c for c in idx if video & set(c.message_index_offsets)]
    ci = (with_frames or idx)[min(1, len(with_frames or idx) - 1)]
    mid = ci.chunk_start_offset + ci.chunk_length // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    out = path.with_name("flipped-" + path.name)
    out.write_bytes(bytes(data))
    return out


def test_rates_gaps_and_frame_intervals(tmp_path):
    fr = encode_frames(60)
    # frames 20..22 lost and reported; a silent hole after frame 40 (stamps jump 0.2 s).
    kept = [*fr[:20], dataclasses.replace(fr[23], dropped_before=3), *fr[24:41]]
    kept += [dataclasses.replace(f, host_ts_ns=f.host_ts_ns + 200_000_000) for f in fr[41:]]
    path = make_segment(Spool(tmp_path, "dev"), kept)
    rep = inspect_file(path)
    assert rep["id"] == "dev-00000000" and rep["sequence"] == 0 and not rep["recovered"]
    assert rep["intact"] and rep["damaged_chunks"] == 0
    v = rep["streams"]["/camera/h264"]
    assert v["count"] == 57 and v["unit"] == "frames" and v["reported_gaps"] == 1
    assert v["reported_lost"] == 3
    assert v["long_intervals"] == 2 and v["unreported_holes"] == 1  # only the silent one
    assert [h["reported"] for h in v["holes"]] == [True, False]
    assert abs(v["interval_ms"]["p50"] - 33.333) < 0.01 and v["interval_ms"]["max"] > 200
    assert rep["frame_index_jumps"] == [{"after": 19, "next": 23}]
    assert rep["gaps"][0]["lost"] == 3


def test_imu_counts_samples_and_their_rate_not_batches(tmp_path):
    segs = Take(seconds=4, segment_s=4, lose_imu=(300, 20)).write(Spool(tmp_path, "dev"))
    rep = inspect_file(segs[0].path)
    imu = rep["streams"]["/wrist/left/imu"]
    assert imu["unit"] == "samples" and imu["count"] == 800 - 20
    assert imu["messages"] == 16  # batches of 5 notifications
    assert abs(imu["rate_hz"] - 779 / 3.995) < 0.01  # delivered: the 20 lost are missing
    assert imu["reported_gaps"] == 1 and imu["reported_lost"] == 20
    assert imu["sample_index_jumps"] == 20 and imu["unreported_holes"] == 0
    assert abs(imu["interval_ms"]["p50"] - 5.0) < 0.01


def test_a_flipped_chunk_is_damage_not_complete(tmp_path):
    segs = Take(seconds=4, segment_s=4, chunk_bytes=8 << 10).write(Spool(tmp_path, "dev"))
    bad = flip_in_chunk(segs[0].path)
    rep = inspect_file(bad)
    assert rep["intact"] is False and rep["damaged_chunks"] == 1
    assert any(g["cause"].startswith("damaged-chunk") and g["stream"] == "*"
               for g in rep["gaps"])
    good = inspect_file(segs[0].path)
    assert rep["frames"] < good["frames"]
    r = run_cli("inspect", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "DAMAGED: 1 chunk(s) failed their CRC" in r.stdout
    r = run_cli("inspect", "--json", str(bad))
    assert r.returncode == 2 and json.loads(r.stdout)[0]["intact"] is False


def test_one_bad_file_is_reported_and_the_good_ones_still_listed(tmp_path):
    spool = Spool(tmp_path, "dev")
    make_segment(spool, encode_frames(30))
    make_segment(spool, encode_frames(30))
    (spool.sealed / "dev-00000005.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x07" * 500)
    (spool.sealed / "zz.mcap").write_bytes(b"hello, not mcap")
    r = run_cli("inspect", str(spool.sealed))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dev-00000000" in r.stdout and "dev-00000001" in r.stdout
    assert "zz.mcap: not an MCAP file" in r.stderr
    assert "dev-00000005.mcap: not a readable MCAP segment" in r.stderr
    assert "2 of 4 file(s) unreadable or damaged" in r.stderr
    r = run_cli("inspect", "--json", str(spool.sealed))
    reps = json.loads(r.stdout)
    assert [x["id"] for x in reps[:2]] == ["dev-00000000", "dev-00000001"]
    assert reps[2]["error"] and reps[3]["error"] and reps[0]["error"] is None


def test_columns_say_what_they_mean(tmp_path):
    spool = Spool(tmp_path, "dev")
    Take(seconds=2, segment_s=2, lose_imu=(100, 10),
         extra_gaps=[{"segment": 0, "stream": "/wrist/left/imu", "start_ns": T0_NS + 10**9,
                      "end_ns": T0_NS + 10**9, "lost": -1, "cause": "ring-overflow"}]
         ).write(spool)
    r = run_cli("inspect", str(spool.sealed))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for cryptic in ("prev -1:-", "lost -1", "gaps rep/ivl", "-1:"):
        assert cryptic not in out, cryptic
    assert "first of its chain" in out and "unknown count" in out
    assert "390 samples in 8 msgs" in out
    assert "2 (10 lost + 1 uncounted)" in out and "unreported holes" in out


def test_cli_json_spool_root_directory_and_part_files(tmp_path):
    spool = Spool(tmp_path, "dev")
    make_segment(spool, encode_frames(30))
    make_segment(spool, encode_frames(30))
    part = make_segment(spool, encode_frames(25), seal=False)
    assert expand([str(tmp_path)]) == [*sorted(spool.sealed.glob("*.mcap")), part]
    r = run_cli("inspect", "--json", str(tmp_path))
    assert r.returncode == 0, r.stderr
    reps = json.loads(r.stdout)
    assert [x["id"] for x in reps] == ["dev-00000000", "dev-00000001", "dev-00000002"]
    assert reps[2]["complete"] is False and reps[2]["frames"] == 20  # two complete chunks
    assert reps[1]["previous_sequence"] == 0 and reps[0]["previous_sequence"] is None
    r = run_cli("inspect", str(spool.sealed))
    assert r.returncode == 0 and "dev-00000001" in r.stdout and "/camera/h264" in r.stdout
    assert "unfinished" not in r.stdout


def test_bad_paths_exit_2(tmp_path):
    (tmp_path / "x.mcap").write_bytes(b"hello, not mcap")
    (tmp_path / "empty").mkdir()
    for arg, msg in ((tmp_path / "nope.mcap", "no such file"),
                     (tmp_path / "x.mcap", "not an MCAP file"),
                     (tmp_path / "empty", "no .mcap files")):
        r = run_cli("inspect", str(arg))
        assert r.returncode == 2, (arg, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr


def test_truncated_sealed_copy_is_read_as_far_as_it_goes(tmp_path):
    path = make_segment(Spool(tmp_path, "dev"), encode_frames(30))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 4 // 5])
    rep = inspect_file(cut)
    assert rep["complete"] is False and 0 < rep["frames"] < 30


def test_plot_data_shows_gaps_pauses_traces_and_fits(tmp_path):
    pytest.importorskip("matplotlib")
    from agent.inspect_plot import GAPS_ROW, plot, plot_data

    spool = Spool(tmp_path, "dev")
    pause = {"segment": 1, "stream": "*", "start_ns": T0_NS + 2_500_000_000,
             "end_ns": T0_NS + 2_900_000_000, "lost": 0, "cause": "pause: wearer button"}
    segs = Take(seconds=4, segment_s=2, drop_frames=(20, 4), lose_imu=(500, 30),
                extra_gaps=[pause]).write(spool)
    files = [read_streams(s.path) for s in segs]
    pd = plot_data(files)
    assert pd.rows == ["/camera/h264", "/camera/frames", "/wrist/left/imu", GAPS_ROW]
    assert len(pd.gap_bars[GAPS_ROW]) == 3 and pd.reported == 3
    assert len(pd.gap_bars["/camera/h264"]) == 2  # its drop and the pause (every stream)
    drop = (20 - 1) / 30
    assert any(abs(a - drop) < 0.05 for a, _ in pd.gap_bars["/camera/h264"])
    assert len(pd.gap_bars["/wrist/left/imu"]) == 2
    assert [text for _, text in pd.events] == ["pause: wearer button"]
    assert abs(pd.events[0][0] - 2.5) < 1e-6
    assert pd.unreported == 0 and not pd.holes
    assert set(pd.histograms) >= {"/camera/h264", "/wrist/left/imu"}
    _, rates = pd.rates["/wrist/left/imu"]
    assert max(rates) == 200 and min(rates) < 200  # the lost burst shows as a dip
    assert pd.imu["/wrist/left/imu"][1] and 9.0 < max(pd.imu["/wrist/left/imu"][1]) < 11.5
    assert len(pd.clock) == 2 and all(b == 450.0 for _, _, b in pd.clock.values())
    assert [t for _, _, t in pd.labels] == ["seq 0", "seq 1"]
    out = plot(files, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_labels_many_segments_without_overlap_and_warns_on_shared_ids(tmp_path):
    pytest.importorskip("matplotlib")
    from agent.inspect_plot import MAX_LABELS, plot_data

    spool = Spool(tmp_path, "dev")
    fr = encode_frames(300)
    paths = [make_segment(spool, fr[i:i + 5]) for i in range(0, 300, 5)]
    files = [read_streams(p) for p in paths]
    pd = plot_data(files)
    assert len(pd.segment_starts) == 60 and 0 < len(pd.labels) <= MAX_LABELS
    for level in range(3):
        xs = sorted(x for x, lv, _ in pd.labels if lv == level)
        span = 10.0
        assert all(b - a >= span / MAX_LABELS * 3 * 0.99 for a, b in itertools.pairwise(xs))
    copy = tmp_path / "copy.mcap"
    copy.write_bytes(paths[0].read_bytes())
    pd = plot_data([*files[:2], read_streams(copy)])
    assert pd.shared_ids == ["dev-00000000"]
    r = run_cli("inspect", str(paths[0]), str(copy))
    assert "segment id dev-00000000 is in 2 files" in r.stderr


def test_plot_cli_writes_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    spool = Spool(tmp_path, "dev")
    Take(seconds=2, segment_s=1).write(spool)
    out = tmp_path / "seg.png"
    r = run_cli("inspect", str(tmp_path), "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot written to {out}" in r.stdout
    r = run_cli("inspect", "--json", str(spool.sealed), "--plot", str(tmp_path / "j.svg"))
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 2
    assert (tmp_path / "j.svg").read_text().count("<svg") == 1


def test_plot_target_errors_exit_2_before_reading(tmp_path):
    spool = Spool(tmp_path, "dev")
    make_segment(spool, encode_frames(10))
    for target, msg in ((tmp_path / "x.nope", "cannot write nope"),
                        (tmp_path / "missing" / "x.png", "no such directory")):
        r = run_cli("inspect", str(spool.sealed), "--plot", str(target))
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    spool = Spool(tmp_path, "dev")
    make_segment(spool, encode_frames(10))
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib").mkdir()
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked')\n")
    r = run_cli("inspect", str(spool.sealed), "--plot", str(tmp_path / "x.png"),
                env={"PYTHONPATH": str(blocker)})
    assert r.returncode == 2 and "pip install 'wearcap[plot]'" in r.stderr, r.stderr


def test_report_fields_are_one_structure_per_stream(tmp_path):
    from agent.inspect import StreamReport

    segs = Take(seconds=1, segment_s=1).write(Spool(tmp_path, "dev"))
    rep = report(read_streams(segs[0].path))
    assert all(isinstance(v, StreamReport) for v in rep.streams.values())
    assert set(rep.to_dict()["streams"]["/wrist/left/imu"]) == {
        f.name for f in dataclasses.fields(StreamReport)}


def test_head_mcu_batches_are_counted_by_row():
    from tests.test_export_foxglove import FIXTURES

    p = FIXTURES / "recorder-0.1.0-2026-12-01-mcu" / "sim-0001-00000000.mcap"
    st = inspect_file(p)["streams"]
    assert st["/head/imu"]["unit"] == "samples" and 999 < st["/head/imu"]["rate_hz"] < 1001
    assert st["/head/strobe"]["unit"] == "rows" and st["/head/strobe"]["count"] == 88
    assert st["/head/strobe"]["messages"] == 3 and 29.9 < st["/head/strobe"]["rate_hz"] < 30.1
    assert st["/head/battery"]["unit"] == "rows"


def test_a_band_shows_its_claimed_bound_refused_streams_and_gaps_by_cause(tmp_path):
    refused = {"gyro": "not supported (band status 3 to start)"}
    take = Take(seconds=4, segment_s=4, lose_imu=(300, 20),
                band_meta={"refused_streams": json.dumps(refused)})
    segs = take.write(Spool(tmp_path, "dev"))
    imu = inspect_file(segs[0].path)["streams"]["/wrist/left/imu"]
    band = imu["band"]
    assert band["refused"] == refused
    assert band["claimed_bound_ns"] == {"p50": 450_000, "max": 450_000}  # the batches' claim
    assert band["latency"] == ["calibrated"]
    assert imu["gap_causes"] == {"lost:sequence": 1}
    r = run_cli("inspect", str(segs[0].path))
    assert r.returncode == 0, r.stderr
    assert "gyro refused by the band: not supported" in r.stdout
    assert "bound claimed p50 0.450 ms" in r.stdout and "lost:sequence x1" in r.stdout
