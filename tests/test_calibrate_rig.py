"""wearcap calibrate on the simulated rig (pty MCU, a movesense band behind the private
BlueZ): the latency it recovers from taps, through the band's clock refitted over the whole
calibration recording, is the one a converged mapping needs, within its uncertainty; the
next recording uses it and says it is calibrated, and its bounds still cover the truth.

The true latency is the rig's: the 2 ms it holds the band's notifications for plus whatever
the private bus and this machine take, which nobody knows; it is scored from the rig's
ground truth (agent.sim.tap_truth.converged_latency_ns), never told to the agent.

Kept short for CI (a few seconds of stream either side of 8 taps): the refit of so short a
recording is young, so its bound is wide; bench/bench_tap_rig.py runs the command's own
minute either side and says how tight it gets."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent import config
from agent.cli import main
from agent.commands.calibrate import analyse, refit
from agent.commands.calibrate_config import write_latency
from agent.commands.calibrate_live import Prompter, record
from agent.mcu import led, tap
from agent.sim.rig import TRUTH_ENV
from agent.sim.tap_truth import converged_latency_ns, errors_ns
from agent.wrist.imu_batch import batch_clock
from agent.wrist.timing import profile_latency

RIG = """\
profile = "sim"

[camera]
backend = "none"

[spool]
reserve_mb = 0

[[wrist]]
name = "left"  # calibrated below
address = "00:AA:BB:CC:DD:01"
profile = "movesense"
rate_hz = 416

[sim]
band_latency_ms = [2.0]
drift_ppm = 2.0
"""


def band_payloads(spool: Path) -> list[dict]:
    import msgpack
    from mcap.reader import make_reader

    out = []
    for seg in sorted(spool.rglob("*.mcap")):
        with seg.open("rb") as fh:
            for _s, _c, m in make_reader(fh).iter_messages(topics=["/wrist/left/imu"]):
                out.append(msgpack.unpackb(m.data))
    return out


def test_calibrate_recovers_the_rigs_latency_and_the_next_recording_uses_it(
        tmp_path, monkeypatch, capsys):
    cfg_path = tmp_path / "rig.toml"
    cfg_path.write_text(RIG)
    truth_file = tmp_path / "truth.json"
    monkeypatch.setenv(TRUTH_ENV, str(truth_file))
    cfg = config.load(cfg_path)
    sims: list = []
    head, band = record(cfg, cfg.wrist[0], Prompter(), taps=8, min_taps=6, tap_timeout=20,
                        timeout=90, settle=10, rng=random.Random(4),
                        on_sim=lambda rig, mcu: sims.append(mcu))
    felt = capsys.readouterr().out.count("  felt (")
    haptics = sims[0].haptic_history
    flashes = [h for h in sims[0].led_history if h[1:] == (led.FAST, led.WHITE)]
    # each tap the head felt was confirmed, on the haptic and on the LED the MCU shows
    assert felt == 8 and len(haptics) == felt and len(flashes) == felt
    r, assumed = analyse(tap.stream(head), refit(cfg.wrist[0], band), "left", min_taps=6,
                         refitted=True)
    truth = json.loads(truth_file.read_text())["left"]
    true_ns = converged_latency_ns(band, truth)
    recovered = assumed + r.offset_ns
    default = profile_latency("movesense")
    print(f"true {true_ns / 1e6:.3f} ms, recovered {recovered / 1e6:.3f} ms "
          f"+- {r.uncertainty_ns / 1e6:.3f} ms from {r.taps} taps (assumed {assumed / 1e6} ms; "
          f"the refit's bound {r.band_bound_ns / 1e6:.3f} ms)")
    assert assumed == default.ns and r.taps >= 6 and len(r.rejected_ns) <= 1
    assert true_ns > 2_000_000  # the rig's 2 ms, and the bus's own on top
    assert abs(recovered - true_ns) <= r.uncertainty_ns
    assert abs(recovered - true_ns) < 1_500_000  # and close: the refit, not the young fit
    assert r.band_bound_ns > 0

    write_latency(cfg_path, "left", round(recovered / 1e6, 3), round(r.uncertainty_ns / 1e6, 3))
    assert "# calibrated below" in cfg_path.read_text()
    # the next recording, with taps scripted into it ([sim] taps)
    taps = ", ".join(f'"left:{8 + 1.0 * i:.1f}"' for i in range(7))
    cfg_path.write_text(cfg_path.read_text() + f"taps = [{taps}]\n")
    truth_file.unlink()
    spool = tmp_path / "spool"
    subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg_path),
                    "--duration", "17", "--spool", str(spool)], check=True, timeout=240,
                   capture_output=True)
    after = band_payloads(spool)
    assert after
    clock = batch_clock(after[-1])
    assert "latency_source = \"calibrated\"" in cfg_path.read_text()
    assert clock["latency"] == "calibrated"  # the recording says where its latency came from
    assert abs(clock["latency_ns"] - round(recovered / 1e6, 3) * 1e6) < 1
    assert abs(clock["latency_uncertainty_ns"] - round(r.uncertainty_ns / 1e6, 3) * 1e6) < 1
    truth = json.loads(truth_file.read_text())["left"]
    err = np.abs(errors_ns(after, truth))
    bound = np.concatenate([np.full(p["n"], batch_clock(p)["error_bound_ns"]) for p in after])
    covered = float(np.mean(err <= bound))
    print(f"next recording: {len(err)} samples, {100 * covered:.2f} % within the stored bound "
          f"(median {np.median(bound) / 1e6:.2f} ms), median |error| "
          f"{np.median(err) / 1e6:.3f} ms")
    assert covered >= 0.99
    # calibrate --from that recording: the taps in it find the latency a converged mapping
    # of the band needs, as the rig has it
    segs = [str(p) for p in sorted(spool.rglob("*.mcap"))]
    capsys.readouterr()
    assert main(["calibrate", "--config", str(cfg_path), "--band", "left", "--from", *segs,
                 "--min-taps", "5", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    true2 = converged_latency_ns(after, truth)
    print(f"--from the next recording: {doc['latency_ms']} +- "
          f"{doc['latency_uncertainty_ms']} ms from {doc['taps']} taps; true {true2 / 1e6:.3f}")
    assert doc["written"] is None and doc["taps"] >= 5 and doc["source"] == "segments"
    assert doc["band_mapping"] == "refitted over the recording"
    # its taps were scripted exactly 1 s apart ([sim] taps): 416 band samples and 1000 head
    # samples each, so all land at one sampling phase of both IMUs, and their mean is off by
    # up to half a period of each (1.7 ms) however many there are. The uncertainty holds that
    # (this once missed: 7.249 +- 1.548 ms against a true 5.562 ms)
    assert abs(doc["latency_ms"] * 1e6 - true2) <= doc["latency_uncertainty_ms"] * 1e6
