"""`wearcap run` on the simulated rig with its head MCU, then `wearcap inspect --json`: the
1 kHz head IMU with nothing lost, the wearer's presses as events, strobe residuals, a
discard request in the spool. (A 5-minute version: bench/bench_mcu_rig.py.)"""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_simulated_rig_with_the_mcu_records_presses_imu_and_strobes(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('profile = "sim"\n[camera]\nwidth = 320\nheight = 240\n'
                   "[segment]\nseconds = 6\n[spool]\nreserve_mb = 0\n"
                   "[mcu]\ndiscard_press_s = 2.0\ndiscard_cancel_s = 1.0\n"
                   "discard_minutes = 0.1\n"
                   '[sim]\nenabled = true\nmcu_presses = ["3:0.2", "5:0.2", "7:1.5", '
                   '"9:2.5"]\n')
    spool = tmp_path / "spool"
    r = run_cli("run", "--config", str(cfg), "--duration", "20", "--spool", str(spool),
                timeout=180)
    assert r.returncode == 0, r.stderr
    assert "wearer: pause, resume, annotation, discard-armed, discard-requested" in r.stdout
    r = run_cli("inspect", "--json", str(spool))
    assert r.returncode == 0, r.stderr
    reports = json.loads(r.stdout)
    segs = reports if isinstance(reports, list) else reports["segments"]
    kinds = [e["kind"] for s in segs
             for e in s["streams"].get("/wearcap/events", {}).get("events", [])]
    assert kinds == ["pause", "resume", "annotation", "discard-armed", "discard-requested",
                     "discard-written"]
    imu = [s["streams"]["/head/imu"] for s in segs if "/head/imu" in s["streams"]]
    assert sum(st["count"] for st in imu) > 12_000
    lost = [(st["reported_lost"], st["sample_index_jumps"], st["unreported_holes"])
            for st in imu]
    assert all(x == (0, 0, 0) for x in lost), lost
    strobes = [s["streams"]["/head/strobe"]["strobes"] for s in segs
               if s["streams"].get("/head/strobe", {}).get("strobes")]
    assert strobes and sum(x["matched"] for x in strobes) > 200
    assert all(x["unexplained_missing_frames"] == 0 for x in strobes), strobes
    for x in strobes:  # the camera's stamps agree with the strobes within their bound
        assert abs(x["residual_ns"]["median"]) <= x["strobe_bound_ns"]
    (req,) = (spool / "discard").glob("*.json")
    assert json.loads(req.read_text())["segments"]
