"""wearcap inspect lists each band's slews: runs of batches whose clock records a fit change
not yet slewed into the output (``clock.slew_ns``), with the largest and the rate; and how the
band's notifications reached the agent (AcquireNotify or StartNotify, and why)."""

from __future__ import annotations

from agent.inspect import SLEW_MIN_NS, inspect_file
from agent.record.spool import Spool
from tests.conftest import run_cli
from tests.recordings import Take


def test_a_band_shows_its_slews(tmp_path):
    # batches of 0.25 s: a 1.2 ms fit change absorbed over batches 3-6, a small one at 10;
    # batch 8's residue is below the rounding floor and is no slew
    slews = {3: 1_200_000, 4: 900_000, 5: 500_000, 6: 100_000, 8: SLEW_MIN_NS - 1,
             10: 40_000}
    segs = Take(seconds=4, segment_s=4, slews=slews).write(Spool(tmp_path, "dev"))
    band = inspect_file(segs[0].path)["streams"]["/wrist/left/imu"]["band"]
    sl = band["slews"]
    assert sl["count"] == 2 and sl["batches"] == 5 and sl["of_batches"] == 16
    assert sl["max_ns"] == 1_200_000 and sl["max_ppm"] == 500.0
    first, second = sl["listed"]
    assert first["batches"] == 4 and first["max_ns"] == 1_200_000
    assert first["start_ns"] < first["end_ns"] < second["start_ns"] == second["end_ns"]
    assert second["max_ns"] == 40_000
    # a slewing batch's claimed bound includes what is still to absorb
    assert band["claimed_bound_ns"]["max"] == 450_000 + 1_200_000
    r = run_cli("inspect", str(segs[0].path))
    assert r.returncode == 0, r.stderr
    assert ("/wrist/left/imu: slews 2 (5 of 16 batches slewing; largest 1.200 ms still to "
            "absorb, at <= 500 ppm)") in r.stdout
    assert "1.200 ms at 500 ppm" in r.stdout and "0.040 ms at 500 ppm" in r.stdout


def test_a_band_that_never_slewed_says_so(tmp_path):
    segs = Take(seconds=2, segment_s=2).write(Spool(tmp_path, "dev"))
    band = inspect_file(segs[0].path)["streams"]["/wrist/left/imu"]["band"]
    assert band["slews"]["count"] == 0 and band["slews"]["listed"] == []
    r = run_cli("inspect", str(segs[0].path))
    assert "/wrist/left/imu: slews 0" in r.stdout


def test_a_band_shows_how_its_notifications_came(tmp_path):
    segs = Take(seconds=2, segment_s=2, band_meta={
        "notify_path": "start-notify", "notify_fallback": "acquire-silent"}).write(
        Spool(tmp_path, "dev"))
    band = inspect_file(segs[0].path)["streams"]["/wrist/left/imu"]["band"]
    assert (band["notify_path"], band["notify_fallback"]) == ("start-notify", "acquire-silent")
    r = run_cli("inspect", str(segs[0].path))
    assert "notifications by start-notify (acquire-silent)" in r.stdout
