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
