"""Head-MCU time sync and decoder: what the two-way fit gives against the simulator's truth.

    .venv/bin/python bench/bench_mcu_clock.py [--seconds 300] [--json]

For a hardware UART (921,600 baud) and a USB CDC link (1 ms frames), both with asymmetric
latencies (agent.sim.mcu_link), the MCU's clock running 35 ppm fast with wander:
- mapped-time error p50/p99/max of every 1 kHz sample against the ground truth, after the
  fit converged, beside the naive baseline (each sample's host time = the arrival of its
  frame), and the ratio between them;
- bound coverage: the share of ALL samples (before convergence too) whose error is within
  the bound stored with them (target >= 99 %);
- USB CDC, strobe-aided: the same with each camera strobe added as an exchange whose band is
  the camera's own stamp uncertainty (the Pi's SensorTimestamp, +-20 us here). That is how
  strobes tighten the mapping past the link's floor; a recording that does this has spent
  its independent check of the camera (the strobe residual) on the clock.
- the decoder's throughput on a recorded 1 kHz stream, against msgpack alone on the same
  payloads (the baseline), and how many times real time that is.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.clock.twoway import TwoWayFit
from agent.mcu import protocol as p
from agent.sim.mcu_link import LinkModel, McuClock, exchange


def simulate(kind: str, seconds: float, seed: int, *, strobes: bool = False,
             cam_err_ns: int = 20_000) -> dict[str, float]:
    clock = McuClock(drift_ppm=35.0, wander_ppm=0.5, wander_period_s=300, origin_ns=0)
    link = LinkModel(kind, seed=seed)
    rng = random.Random(seed + 9)
    fit = TwoWayFit()
    start = 10**9
    errs, naive, bounds, conv = [], [], [], []
    ping_ns, batch_ns, frame_ns = 100_000_000, 10_000_000, 33_333_333
    next_ping, next_frame = start, start
    t = start
    end = start + int(seconds * 1e9)
    while t < end:
        t += batch_ns  # one imu frame of 10 samples, queued at t
        while next_ping <= t:
            fit.add(*exchange(clock, link, next_ping))
            next_ping += ping_ns
        if strobes:
            while next_frame <= t:
                d = clock.device_ns(next_frame)  # the strobe edge, on the MCU clock
                stamp = next_frame + rng.randint(-cam_err_ns, cam_err_ns)
                fit.add(stamp - cam_err_ns, d, stamp + cam_err_ns)
                next_frame += frame_ns
        arrival = link.to_host(t, 140)
        for k in range(10):
            true_host = t - (9 - k) * 1_000_000
            d = clock.device_ns(true_host)
            truth = clock.host_ns(d)
            errs.append(fit.map(d) - truth)
            bounds.append(fit.bound_ns(d))
            naive.append(arrival - truth)
            conv.append(fit.converged)
    e, b, c = np.abs(np.array(errs)), np.array(bounds), np.array(conv)
    n = np.abs(np.array(naive))
    ec = e[c]
    return {"samples": len(e), "converged_share": float(c.mean()),
            "p50_us": float(np.percentile(ec, 50) / 1e3),
            "p99_us": float(np.percentile(ec, 99) / 1e3), "max_us": float(ec.max() / 1e3),
            "naive_p50_us": float(np.percentile(n, 50) / 1e3),
            "naive_p99_us": float(np.percentile(n, 99) / 1e3),
            "coverage": float(np.mean(e <= b)),
            "bound_p50_us": float(np.percentile(b[c], 50) / 1e3),
            "best_rtt_us": (fit.best_rtt_ns or 0) / 1e3,
            "drift_err_ppm": abs(fit.drift_ppm + 35.0)}


def decoder_throughput(seconds: float = 20.0) -> dict[str, float]:
    rng = random.Random(1)
    frames = []
    seq = 0
    for k in range(int(seconds * 100)):  # 100 imu frames a second, 10 samples each
        samples = b"".join(struct.pack("<6h", *(rng.randint(-2000, 2000) for _ in range(6)))
                           for _ in range(10))
        frames.append(p.encode(p.ImuBatch(seq % p.SEQ_MOD, k * 10, k * 10_000,
                                          tuple(range(1000, 10000, 1000)), samples)))
        seq += 1
        if k % 3 == 0:
            frames.append(p.encode(p.Strobe(seq % p.SEQ_MOD, k, k * 10_000, k * 10_000 + 8000)))
            seq += 1
    wire = b"".join(frames)
    chunks = [wire[i:i + 512] for i in range(0, len(wire), 512)]  # reads of a serial port
    import msgpack
    from cobs import cobs

    payloads = [cobs.decode(f[:-1])[:-4] for f in frames]
    t0 = time.perf_counter()
    for pl in payloads:
        msgpack.unpackb(pl)
    base = time.perf_counter() - t0
    dec = p.Decoder()
    t0 = time.perf_counter()
    n = sum(len(dec.feed(c)) for c in chunks)
    full = time.perf_counter() - t0
    assert n == len(frames) and dec.bad_frames == 0
    return {"frames": len(frames), "bytes": len(wire),
            "frames_per_s": len(frames) / full, "mb_per_s": len(wire) / full / 1e6,
            "x_real_time": seconds / full, "vs_msgpack_only": full / base,
            "cpu_share_of_core_at_1khz": full / seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {"uart": simulate("uart", a.seconds, 1), "usb-cdc": simulate("usb-cdc", a.seconds, 2),
           "usb-cdc+strobes": simulate("usb-cdc", a.seconds, 2, strobes=True),
           "decoder": decoder_throughput()}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"head-MCU clock over {a.seconds:g} s of simulated time (1 kHz samples, 10 pings/s)")
    print(f"{'link':18} {'p50 us':>8} {'p99 us':>8} {'max us':>8} {'naive p99':>10} "
          f"{'ratio':>7} {'coverage':>9} {'bound p50':>10} {'best rtt':>9}")
    for k in ("uart", "usb-cdc", "usb-cdc+strobes"):
        r = out[k]
        print(f"{k:18} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['max_us']:8.1f} "
              f"{r['naive_p99_us']:10.1f} {r['naive_p99_us'] / max(r['p99_us'], 1e-9):6.0f}x "
              f"{100 * r['coverage']:8.2f}% {r['bound_p50_us']:10.1f} {r['best_rtt_us']:9.1f}")
    print(f"UART budget p99 <= 100 us: {'met' if out['uart']['p99_us'] <= 100 else 'MISSED'}; "
          f"USB CDC floor (half the best round trip): "
          f"{out['usb-cdc']['best_rtt_us'] / 2:.0f} us")
    d = out["decoder"]
    print(f"decoder: {d['frames_per_s']:.0f} frames/s, {d['mb_per_s']:.1f} MB/s = "
          f"{d['x_real_time']:.0f}x real time of a 1 kHz MCU "
          f"({100 * d['cpu_share_of_core_at_1khz']:.2f} % of a core); "
          f"{d['vs_msgpack_only']:.2f}x the time of msgpack alone on the same payloads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
