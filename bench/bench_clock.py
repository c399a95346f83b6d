"""Wrist-band timestamps: |mapped - true| per profile against simulator ground truth, swept.

For each profile, each connection interval (7.5, 15, 30, 50 ms) and each seed, a simulated
band (+-50 ppm drift by seed, wander, 5% retransmissions, host jitter) is decoded and fed
through the clock fit exactly as the agent does. Per run: the fit's p50/p99/max error over
samples mapped after the fit said it converged, the naive baseline (each sample stamped with
its notification's arrival) over the same samples, their p99 ratio, and when the fit
converged. Per profile: the worst case across the sweep. WitMotion has no device clock: its
fit is the rate fit from arrivals (agent/clock/rate.py).

A last section measures the physical bound of arrival-only timing (agent/clock/rate.py): a
WitMotion band whose crystal matches the host's within 0.2 ppm on an interval that is a
multiple of its sample period never sees the sampling phase slide, so the wait of its samples
for the connection event stays unknown in [0, P); the fit must then stay unconverged with an
error bound of P, and the error over all samples is printed.

    .venv/bin/python bench/bench_clock.py                 # short sweep (< 1 min)
    .venv/bin/python bench/bench_clock.py --minutes 10 --seeds 1 2 3 4 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from agent.clock.rate import RateFit
from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import PROFILES, ImuChunk, make_decoder
from agent.wrist.imu_batch import host_times, make_fit, observe
from agent.wrist.profiles import load_profile

BUDGET_NS = 1_000_000
INTERVALS_MS = (7.5, 15.0, 30.0, 50.0)
T0 = 1_000_000_000


def run_one(profile: str, interval_ms: float, seed: int, minutes: float,
            drift_ppm: float | None = None, wander_ppm: float = 0.5) -> dict[str, Any]:
    rate = load_profile(profile).pick_rate(100 if profile == "witmotion" else 200)
    drift = drift_ppm if drift_ppm is not None else (50.0 if seed % 2 else -50.0)
    params = BandParams(profile=profile, rate_hz=rate, drift_ppm=drift, seed=seed,
                        wander_ppm=wander_ppm, interval_ms=(interval_ms, interval_ms),
                        rate_error=0.05 if profile == "movesense" else 0.0)
    model = BandModel(params, T0)
    dec = make_decoder(profile, rate_hz=rate)
    fit = make_fit(profile, rate, latency_ns=params.latency_ns)
    f = fit.fit if isinstance(fit, RateFit) else fit
    errs, naive, conv = [], [], []
    conv_at: float | None = None

    def take(chunks: list[ImuChunk]) -> None:
        nonlocal conv_at
        for c in chunks:
            observe(fit, c)
            if f.converged and conv_at is None:
                conv_at = (c.arrival_ns - T0) / 1e9
            h0, hp = host_times(fit, c)
            truth = model.truth_ns(np.arange(c.index, c.index + c.n))
            mapped = h0 + np.rint(np.arange(c.n) * hp).astype(np.int64)
            errs.append(np.abs(mapped - truth))
            naive.append(np.abs(c.arrival_ns - truth))
            conv.append(np.full(c.n, f.converged))

    end = T0 + int(minutes * 60e9)
    t = T0
    while t < end:
        t += 100_000_000
        for d in model.deliveries_until(t):
            take(dec.feed(d.packet, d.host_ns))
    take(dec.flush())
    e_all, nv_all, cv = np.concatenate(errs), np.concatenate(naive), np.concatenate(conv)
    e, nv = e_all[cv], nv_all[cv]
    out: dict[str, Any] = {
        "profile": profile, "rate_hz": rate, "interval_ms": model.interval_ns / 1e6,
        "seed": seed, "drift_ppm": drift, "samples": len(e_all),
        "samples_converged": len(e), "malformed": dec.malformed,
        "converged_after_s": conv_at, "error_bound_us": f.error_bound_ns / 1e3,
        "latency": f.latency_kind, "fitted_drift_ppm": f.drift_ppm,
        "all_p99_us": float(np.percentile(e_all, 99) / 1e3),
        "all_max_us": float(e_all.max() / 1e3),
        "late_half_p50_us": float(np.percentile(e_all[len(e_all) // 2:], 50) / 1e3),
        "late_half_max_us": float(e_all[len(e_all) // 2:].max() / 1e3),
    }
    if len(e):
        p99, np99 = float(np.percentile(e, 99)), float(np.percentile(nv, 99))
        out.update({
            "fit_p50_us": float(np.percentile(e, 50) / 1e3), "fit_p99_us": p99 / 1e3,
            "fit_max_us": float(e.max() / 1e3),
            "naive_p50_us": float(np.percentile(nv, 50) / 1e3), "naive_p99_us": np99 / 1e3,
            "naive_max_us": float(nv.max() / 1e3),
            "p99_ratio_naive_over_fit": np99 / max(1.0, p99),
            "within_budget": p99 <= BUDGET_NS,
        })
    if isinstance(fit, RateFit):
        true_rate = 1e9 / model.period_host
        out["rate_fit_error_ppm"] = (fit.rate_hz - true_rate) / true_rate * 1e6
        out["bottoms"] = fit.fit.bottoms
    return out


def worst(rows: list[dict[str, Any]]) -> dict[str, Any]:
    conv = [r for r in rows if "fit_p99_us" in r]
    w: dict[str, Any] = {"runs": len(rows), "runs_converged": len(conv)}
    if conv:
        bad = max(conv, key=lambda r: r["fit_p99_us"])
        w.update({"fit_p99_us": bad["fit_p99_us"], "fit_max_us": max(r["fit_max_us"]
                                                                        for r in conv),
                  "at_interval_ms": bad["interval_ms"], "at_seed": bad["seed"],
                  "min_ratio": min(r["p99_ratio_naive_over_fit"] for r in conv),
                  "slowest_convergence_s": max(r["converged_after_s"] for r in conv),
                  "within_budget": all(r["within_budget"] for r in conv),
                  "error_bound_held_runs": sum(r["fit_p99_us"] <= r["error_bound_us"]
                                               for r in conv)})
    return w


BOUND_SEEDS = (5, 6, 7, 8)


def bound_case(seed: int, minutes: float) -> dict[str, Any]:
    """A phase-locked WitMotion band: what arrival times alone cannot tell. Each seed puts the
    sampling at another phase against the connection events."""
    r = run_one("witmotion", 40.0, seed, minutes, drift_ppm=0.2, wander_ppm=0.0)
    period_us = 1e6 / r["rate_hz"]
    slide_us = abs(r["drift_ppm"]) * 1e-6 * minutes * 60e6
    r.update({"period_us": period_us, "phase_slide_us": slide_us,
              "physical_bound_us": max(0.0, period_us - slide_us),
              "honest": (not r["samples_converged"]) and r["error_bound_us"] >= period_us})
    return r


def fmt(r: dict[str, Any]) -> str:
    head = f"{r['profile']:13} {r['interval_ms']:5.1f} {r['seed']:4d} {r['drift_ppm']:+4.0f}"
    if "fit_p99_us" not in r:
        return head + f"  never converged (all-sample p99 {r['all_p99_us']:.0f} us)"
    extra = (f"  rate err {r['rate_fit_error_ppm']:+.2f} ppm" if "rate_fit_error_ppm" in r
             else "")
    return (head + f" {r['fit_p50_us']:8.1f} {r['fit_p99_us']:8.1f} {r['fit_max_us']:8.1f} |"
            f" {r['naive_p50_us']:8.0f} {r['naive_p99_us']:8.0f} {r['naive_max_us']:8.0f} |"
            f" {r['p99_ratio_naive_over_fit']:7.1f} {r['converged_after_s']:6.1f}"
            f" {'ok' if r['within_budget'] else 'OVER'}" + extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=7.0, help="simulated minutes per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--intervals", type=float, nargs="+", default=list(INTERVALS_MS))
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    started = time.monotonic()
    jobs = [(p, i, s) for p in a.profiles for i in a.intervals for s in a.seeds]
    bound_minutes = min(a.minutes, 4.0)
    with ProcessPoolExecutor(a.jobs) as pool:
        futs = [pool.submit(run_one, p, i, s, a.minutes) for p, i, s in jobs]
        bfuts = [pool.submit(bound_case, s, bound_minutes) for s in BOUND_SEEDS]
        if not a.json:
            from rich.progress import Progress

            with Progress(transient=True) as prog:
                task = prog.add_task("simulating bands", total=len(futs) + len(bfuts))
                for _ in as_completed(futs + bfuts):
                    prog.advance(task)
        rows = [f.result() for f in futs]
        bounds = [f.result() for f in bfuts]
    summary = {p: worst([r for r in rows if r["profile"] == p]) for p in a.profiles}
    if a.json:
        print(json.dumps({"minutes": a.minutes, "seeds": a.seeds, "intervals_ms": a.intervals,
                          "budget_p99_us": BUDGET_NS / 1e3, "runs": rows, "worst": summary,
                          "bound_cases": bounds,
                          "wall_s": round(time.monotonic() - started, 1)}, indent=1))
        return 0
    print(f"{a.minutes:g} simulated min per run, drift +-50 ppm by seed, calibrated latency; "
          "errors (us) over samples mapped after the fit converged")
    print(f"{'profile':13} {'ivl':>5} {'seed':>4} {'ppm':>4} {'fit p50':>8} {'p99':>8} "
          f"{'max':>8} | {'naive p50':>8} {'p99':>8} {'max':>8} | {'p99 x':>7} {'conv s':>6}")
    for r in rows:
        print(fmt(r))
    print("\nworst case across the sweep (budget: p99 <= 1000 us)")
    for p, w in summary.items():
        if "fit_p99_us" not in w:
            print(f"  {p:13} no run converged in {a.minutes:g} min")
            continue
        print(f"  {p:13} p99 {w['fit_p99_us']:8.1f} us (interval {w['at_interval_ms']:g} ms, "
              f"seed {w['at_seed']}), max {w['fit_max_us']:8.1f} us, naive/fit >= "
              f"{w['min_ratio']:.1f}x, converged in <= {w['slowest_convergence_s']:.0f} s, "
              f"{w['runs_converged']}/{w['runs']} runs converged, "
              f"{'within budget' if w['within_budget'] else 'OVER BUDGET'}; the fit's own "
              f"error bound covered p99 in {w['error_bound_held_runs']}/{w['runs_converged']}")
    b0 = bounds[0]
    print(f"\nphysical bound of arrival-only timing: witmotion 100 Hz, 40 ms interval (a "
          f"multiple of the period), band crystal 0.2 ppm from the host's, {bound_minutes:g} min:"
          f" the sampling phase slides only {b0['phase_slide_us']:.0f} us of the "
          f"{b0['period_us']:.0f} us period, so each band's wait for the event stays unknown "
          "and its error is that wait, anywhere in [0, P):")
    for b in bounds:
        print(f"  seed {b['seed']}: error over the 2nd half p50 {b['late_half_p50_us']:7.0f} us,"
              f" max {b['late_half_max_us']:7.0f} us (bound P - slide = "
              f"{b['physical_bound_us']:.0f} us); fit converged: "
              f"{'yes' if b['samples_converged'] else 'no'}, error bound it reports "
              f"{b['error_bound_us']:.0f} us -> {'honest' if b['honest'] else 'NOT HONEST'}")
    print(f"\n{len(jobs) + len(bounds)} runs in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
