"""The whole loop on the simulated rig: record, upload, verify, in one command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_demo_records_uploads_and_verifies_every_segment(tmp_path: Path) -> None:
    res = run_cli("demo", "--duration", "6", "--segment-seconds", "2", "--dir",
                  str(tmp_path), "--json", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    sealed = sorted((tmp_path / "spool" / "sealed").glob("*.mcap"))
    assert len(sealed) >= 3
    (device,) = report["collector"]
    assert device["device_id"] == "sim-0001"
    assert device["verified"] == len(sealed)
    assert device["missing_count"] == 0
    assert device["complete"] is True
    # The summary: recorded, uploaded, verified; per-stream rates and gaps; each band's
    # timestamp error against the simulator's ground truth; where the files are.
    assert report["recorded"] == len(sealed) == report["uploaded"] == report["verified"]
    left = report["streams"]["/wrist/left/imu"]
    assert left["count"] > 0 and abs(left["rate_hz"] - 200) < 20 and "gaps" in left
    assert report["streams"]["/camera/frames"]["count"] > 0  # its rate depends on the load
    for band in ("left", "right"):
        err = report["timestamp_error"][band]
        assert err["samples"] == report["streams"][f"/wrist/{band}/imu"]["count"]
        assert 0 <= err["p50_us"] <= err["p99_us"] <= err["max_us"]
        # the share of samples within their stored bound, and the converged error, are reported
        assert 0 <= err["within_bound_pct"] <= 100
        assert 0 <= err["converged_samples"] <= err["samples"]
        # an error of a whole sample period (5 ms) would mean misnumbered samples
        assert err["p50_us"] < 5000
    assert report["files"]["sealed"] == str(tmp_path / "spool" / "sealed")


def test_demo_text_summary_off_a_terminal(tmp_path: Path) -> None:
    res = run_cli("demo", "--duration", "3", "--segment-seconds", "2", "--dir",
                  str(tmp_path), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "recorded" in out and "verified by the collector" in out
    assert "/wrist/left/imu" in out and "timestamp error against the simulator" in out
    assert f"{tmp_path / 'spool' / 'sealed'}" in out and "…" not in out
