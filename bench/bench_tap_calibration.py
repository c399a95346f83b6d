"""Tap calibration: the band latency it recovers against the simulator's true one.

    .venv/bin/python bench/bench_tap_calibration.py [--taps 10] [--trials 50] [--json]

Per trial: a true band latency drawn from 0.5-8 ms (what a vendor band on an unknown host
might have), a band recorded assuming 0.4 ms, 200 Hz, random sampling phase, its one-way fit
adding +-100 us of its own error (its bound); the head IMU at 1 kHz through the two-way fit
(its error drawn within the UART figures of bench_mcu_clock.py, bound 200 us). ``--taps`` taps,
1-3 s apart, each a sharp damped spike seen by both. The head's truth is the simulator's; nothing
is assumed about the band but its sample rate. Prints the recovered latency's error
p50/p99/max beside the error of the assumed latency (the baseline), and how often the stated
uncertainty covered the true latency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.mcu.tap import calibrate, onset_spans

G = 9.80665
SCALE = 16 * G / 32768


def imu(rate_hz: float, taps: list[int], span: tuple[int, int], rng: np.random.Generator,
        phase: float) -> tuple[np.ndarray, np.ndarray]:
    period = 1e9 / rate_hz
    t = (span[0] + (np.arange(int((span[1] - span[0]) / period)) + phase) * period)
    az = np.full(len(t), G)
    for tap in taps:
        dt = (t - tap) / 1e6  # ms
        hit = dt >= 0
        az[hit] += 60 * np.exp(-dt[hit] / 4.0) * np.minimum(dt[hit] / 2.0, 1.0)
    acc = np.stack([rng.normal(0, 0.05, len(t)), rng.normal(0, 0.05, len(t)), az], axis=1)
    return t.astype(np.int64), np.round(acc / SCALE).astype(np.int16)


def trial(rng: np.random.Generator, n_taps: int) -> dict[str, float]:
    true_lat = rng.uniform(0.5e6, 8e6)
    assumed = 0.4e6
    taps = list(np.cumsum(rng.uniform(1e9, 3e9, n_taps)).astype(np.int64) + 2_000_000_000)
    span = (10**9, int(taps[-1]) + 2_000_000_000)
    ht, hacc = imu(1000, taps, span, rng, rng.uniform())
    ht = ht + rng.integers(-40_000, 40_000)  # the two-way fit's error (bound 200 us)
    bt, bacc = imu(200, taps, span, rng, rng.uniform())
    # the band's mapped times: the one-way fit subtracted the assumed latency, not the true
    bt = bt + int(true_lat - assumed) + rng.integers(-100_000, 100_000)
    r = calibrate(onset_spans(ht, hacc, SCALE), onset_spans(bt, bacc, SCALE),
                  head_bound_ns=200_000, band_period_ns=5_000_000, band_bound_ns=100_000)
    assert r is not None and r.taps == n_taps
    recovered = assumed + r.offset_ns
    return {"true_ms": true_lat / 1e6, "recovered_ms": recovered / 1e6,
            "error_us": abs(recovered - true_lat) / 1e3,
            "assumed_error_us": abs(assumed - true_lat) / 1e3,
            "uncertainty_us": r.uncertainty_ns / 1e3,
            "covered": bool(abs(recovered - true_lat) <= r.uncertainty_ns)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--taps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    rows = [trial(rng, a.taps) for _ in range(a.trials)]
    e = np.array([r["error_us"] for r in rows])
    b = np.array([r["assumed_error_us"] for r in rows])
    out = {"trials": a.trials, "taps": a.taps,
           "error_us": {"p50": float(np.median(e)), "p99": float(np.percentile(e, 99)),
                        "max": float(e.max())},
           "assumed_latency_error_us": {"p50": float(np.median(b)), "max": float(b.max())},
           "uncertainty_p50_us": float(np.median([r["uncertainty_us"] for r in rows])),
           "covered": float(np.mean([r["covered"] for r in rows])),
           "example": rows[0]}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"tap calibration, {a.trials} trials of {a.taps} taps (band 200 Hz, head 1 kHz)")
    print(f"recovered latency error: p50 {out['error_us']['p50']:.0f} us, p99 "
          f"{out['error_us']['p99']:.0f} us, max {out['error_us']['max']:.0f} us; "
          f"the assumed latency's error (baseline): p50 "
          f"{out['assumed_latency_error_us']['p50']:.0f} us "
          f"({out['assumed_latency_error_us']['p50'] / max(out['error_us']['p50'], 1e-9):.0f}x)")
    ex = out["example"]
    print(f"e.g. true {ex['true_ms']:.3f} ms, recovered {ex['recovered_ms']:.3f} ms "
          f"+- {ex['uncertainty_us']:.0f} us; stated uncertainty covered the truth in "
          f"{100 * out['covered']:.0f} % of trials (median +-{out['uncertainty_p50_us']:.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
