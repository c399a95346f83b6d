"""Wrist-band timestamps: |mapped - true| per profile against simulator ground truth.

For each profile a simulated band (50 ppm drift + wander, 7.5-50 ms connection intervals,
5% retransmissions, host jitter) is decoded and fed through the one-way fit exactly as the
agent does. Printed side by side: the fit's p50/p99/max error over samples taken after the
fit said it converged, the naive baseline (each sample stamped with its notification's
arrival), their ratio, and when the fit converged. WitMotion has no device clock: its
line is the rate fit, and the fitted rate's error is printed too.

    .venv/bin/python bench/bench_clock.py [--minutes 6] [--json] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from agent.clock.oneway import RateFit
from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import PROFILES, make_decoder
from agent.wrist.imu_batch import host_times, make_fit, observe
from agent.wrist.profiles import load_profile

BUDGET_NS = 1_000_000


def run_profile(profile: str, minutes: float, seed: int) -> dict[str, object]:
    rate = load_profile(profile).pick_rate(100 if profile == "witmotion" else 200)
    params = BandParams(profile=profile, rate_hz=rate, drift_ppm=50.0, seed=seed,
                        rate_error=0.05 if profile == "movesense" else 0.0)
    model = BandModel(params, 1_000_000_000)
    dec = make_decoder(profile, rate_hz=rate)
    fit = make_fit(profile, rate, latency_ns=params.latency_ns)
    f = fit.fit if isinstance(fit, RateFit) else fit
    errs, naive, conv = [], [], []
    conv_at = None
    end = 1_000_000_000 + int(minutes * 60e9)
    t = 1_000_000_000
    while t < end:
        t += 100_000_000
        for d in model.deliveries_until(t):
            for c in dec.feed(d.packet, d.host_ns):
                observe(fit, c)
                if f.converged and conv_at is None:
                    conv_at = (d.host_ns - 1_000_000_000) / 1e9
                h0, hp = host_times(fit, c)
                truth = model.truth_ns(np.arange(c.index, c.index + c.n))
                mapped = h0 + np.rint(np.arange(c.n) * hp).astype(np.int64)
                errs.append(np.abs(mapped - truth))
                naive.append(np.abs(c.arrival_ns - truth))
                conv.append(np.full(c.n, f.converged))
    e, nv, cv = np.concatenate(errs), np.concatenate(naive), np.concatenate(conv)
    e, nv = (e[cv], nv[cv]) if cv.any() else (e, nv)
    out: dict[str, object] = {
        "profile": profile, "rate_hz": rate, "interval_ms": model.interval_ns / 1e6,
        "samples": len(e), "malformed": dec.malformed,
        "fit_p50_us": float(np.percentile(e, 50) / 1e3),
        "fit_p99_us": float(np.percentile(e, 99) / 1e3),
        "fit_max_us": float(e.max() / 1e3),
        "naive_p50_us": float(np.percentile(nv, 50) / 1e3),
        "naive_p99_us": float(np.percentile(nv, 99) / 1e3),
        "naive_max_us": float(nv.max() / 1e3),
        "p99_ratio_naive_over_fit": float(np.percentile(nv, 99) / max(1, np.percentile(e, 99))),
        "converged_after_s": conv_at,
        "error_bound_us": f.error_bound_ns / 1e3,
        "latency": f.latency_kind,
        "fitted_drift_ppm": f.drift_ppm,
        "within_budget": bool(np.percentile(e, 99) <= BUDGET_NS),
    }
    if isinstance(fit, RateFit):
        true_rate = 1e9 / model.period_host
        out["rate_fit_error_ppm"] = (fit.rate_hz - true_rate) / true_rate * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [run_profile(p, args.minutes, args.seed) for p in PROFILES]
    if args.json:
        print(json.dumps({"minutes": args.minutes, "budget_p99_us": BUDGET_NS / 1e3,
                          "profiles": rows}, indent=1))
        return 0
    print(f"{args.minutes:g} min per band, 50 ppm drift, calibrated latency; errors over "
          "samples after convergence (us)")
    print(f"{'profile':13} {'ivl ms':>6} {'fit p50':>8} {'p99':>8} {'max':>8} | "
          f"{'naive p50':>9} {'p99':>8} {'max':>8} | {'ratio':>6} {'conv s':>6}")
    for r in rows:
        print(f"{r['profile']:13} {r['interval_ms']:6.2f} {r['fit_p50_us']:8.1f} "
              f"{r['fit_p99_us']:8.1f} {r['fit_max_us']:8.1f} | {r['naive_p50_us']:9.1f} "
              f"{r['naive_p99_us']:8.1f} {r['naive_max_us']:8.1f} | "
              f"{r['p99_ratio_naive_over_fit']:6.1f} {r['converged_after_s'] or -1:6.1f}"
              + (f"  rate err {r['rate_fit_error_ppm']:.1f} ppm" if "rate_fit_error_ppm" in r
                 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
