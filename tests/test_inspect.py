"""wearcap inspect: streams, rates, gaps (reported and from intervals), frame timing, errors."""

from __future__ import annotations

import dataclasses
import json

from agent.inspect import inspect_file
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import Spool
from tests.conftest import run_cli
from tests.h264_frames import encode_frames


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


def test_rates_gaps_and_frame_intervals(tmp_path):
    fr = encode_frames(60)
    # frames 20..22 lost and reported; a silent hole after frame 40 (stamps jump 0.2 s).
    kept = [*fr[:20], dataclasses.replace(fr[23], dropped_before=3), *fr[24:41]]
    kept += [dataclasses.replace(f, host_ts_ns=f.host_ts_ns + 200_000_000) for f in fr[41:]]
    path = make_segment(Spool(tmp_path, "dev"), kept)
    rep = inspect_file(path)
    assert rep["id"] == "dev-00000000" and rep["sequence"] == 0 and not rep["recovered"]
    v = rep["streams"]["/camera/h264"]
    assert v["count"] == 57 and v["reported_gaps"] == 1
    assert v["interval_gap_count"] == 2  # the reported loss and the silent one
    assert abs(v["interval_ms"]["p50"] - 33.333) < 0.01 and v["interval_ms"]["max"] > 200
    assert rep["frame_index_jumps"] == [{"after": 19, "next": 23}]
    assert rep["gaps"][0]["lost"] == 3


def test_cli_json_directory_and_part_files(tmp_path):
    spool = Spool(tmp_path, "dev")
    make_segment(spool, encode_frames(30))
    make_segment(spool, encode_frames(30))
    part = make_segment(spool, encode_frames(25), seal=False)
    r = run_cli("inspect", "--json", str(spool.sealed), str(part))
    assert r.returncode == 0, r.stderr
    reps = json.loads(r.stdout)
    assert [x["id"] for x in reps] == ["dev-00000000", "dev-00000001", "dev-00000002"]
    assert reps[2]["complete"] is False and reps[2]["frames"] == 20  # two complete chunks
    r = run_cli("inspect", str(spool.sealed))
    assert r.returncode == 0 and "dev-00000001" in r.stdout and "/camera/h264" in r.stdout


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


def test_plot_draws_every_segment_and_its_gaps(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    from agent.inspect import read_streams
    from agent.inspect_plot import GAPS_ROW, _rows, check_target, plot

    spool = Spool(tmp_path, "dev")
    fr = encode_frames(90)
    make_segment(spool, fr[:45])
    make_segment(spool, [*fr[45:60], dataclasses.replace(fr[64], dropped_before=4), *fr[65:]])
    out = tmp_path / "seg.png"
    r = run_cli("inspect", str(spool.sealed), "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot written to {out}" in r.stdout
    files = [read_streams(p) for p in sorted(spool.sealed.glob("*.mcap"))]
    assert _rows(files) == ["/camera/h264", "/camera/frames", GAPS_ROW]
    assert plot(files, tmp_path / "again.svg").read_text().count("<svg") == 1
    # --json keeps stdout pure JSON
    r = run_cli("inspect", "--json", str(spool.sealed), "--plot", str(tmp_path / "j.png"))
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 2
    assert check_target(str(tmp_path / "ok.png")) == tmp_path / "ok.png"


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
