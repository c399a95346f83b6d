"""Bytes and encode CPU per stored 6-axis wrist sample in an MCAP segment, vs plain msgpack.

Two simulated 200 Hz bands write T minutes of IMU batches (one message per batch period)
through the agent's imu_message into an MCAP file with zstd chunk compression, a chunk closed
every second, as a segment holds them (the recorder closes a chunk at least every second).
The baseline is the same samples as msgpack lists of ints (and one host timestamp per
sample), written the same way in the same run. Bytes are the whole file's (schemas, summary
and index included) over its samples. Encode cost is the
process CPU time spent turning chunks into the message bytes (imu_message + msgpack, or the
baseline's list building + msgpack), per sample, measured in the same run.

    .venv/bin/python bench/bench_imu_storage.py [--minutes 2] [--batch-s 0.25 1] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from typing import Any

import msgpack
from mcap.writer import CompressionType, Writer

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import ImuChunk, make_decoder
from agent.wrist.imu_batch import ENCODING, SCHEMA, Fit, host_times, imu_message, make_fit, observe

BUDGET = 8.0
T0 = 10_000_000_000
"""Host time the bands start at (log times are unsigned)."""


def baseline_bytes(name: str, chunks: list[ImuChunk], fit: Fit) -> tuple[bytes, int]:
    rows, times = [], []
    for c in chunks:
        h0, hp = host_times(fit, c)
        assert c.gyro is not None
        for i in range(c.n):
            rows.append(c.acc[i].tolist() + c.gyro[i].tolist())
            times.append(h0 + round(i * hp))
    return msgpack.packb({"band": name, "samples": rows, "host_ns": times}), times[0]


def ours_bytes(name: str, chunks: list[ImuChunk], fit: Fit) -> tuple[bytes, int]:
    msg = imu_message(name, chunks, fit, "wearcap-open")
    return msgpack.packb(msg.payload), msg.log_time_ns


def write(minutes: float, batch_s: float, baseline: bool) -> tuple[int, int, float]:
    """(file bytes, samples, encode CPU seconds)."""
    buf = io.BytesIO()
    w = Writer(buf, compression=CompressionType.ZSTD, chunk_size=1 << 62)
    w.start(profile="wearcap", library="bench")
    sid = w.register_schema("wearcap.ImuBatch", "jsonschema", json.dumps(SCHEMA).encode())
    bands = []
    for i, name in enumerate(("left", "right")):
        cid = w.register_channel(f"/wrist/{name}/imu", "msgpack", sid)
        m = BandModel(BandParams(profile="wearcap-open", seed=10 + i), T0)
        bands.append((name, cid, m, make_decoder("wearcap-open", rate_hz=200),
                      make_fit("wearcap-open", 200)))
    encode = baseline_bytes if baseline else ours_bytes
    samples, cpu = 0, 0.0
    t = T0
    step = int(batch_s * 1e9)
    last_chunk = T0
    while t < T0 + minutes * 60e9:
        t += step
        if t - last_chunk >= 1_000_000_000:
            w.flush()  # closes the chunk, as the segment writer's checkpoint does
            last_chunk = t
        for name, cid, m, dec, fit in bands:
            chunks = []
            for d in m.deliveries_until(t):
                for c in dec.feed(d.packet, d.host_ns):
                    observe(fit, c)
                    chunks.append(c)
            if not chunks:
                continue
            samples += sum(c.n for c in chunks)
            c0 = time.process_time()
            data, log = encode(name, chunks, fit)
            cpu += time.process_time() - c0
            w.add_message(cid, log_time=log, data=data, publish_time=log)
    w.finish()
    return len(buf.getvalue()), samples, cpu


def measure(minutes: float, batch_s: float) -> dict[str, Any]:
    ours, n, cpu = write(minutes, batch_s, baseline=False)
    base, n2, bcpu = write(minutes, batch_s, baseline=True)
    return {"minutes": minutes, "batch_s": batch_s, "samples": n, "encoding": ENCODING,
            "bytes_per_sample": ours / n, "baseline_bytes_per_sample": base / n2,
            "ratio_baseline_over_ours": (base / n2) / (ours / n),
            "encode_us_per_sample": cpu / n * 1e6,
            "baseline_encode_us_per_sample": bcpu / n2 * 1e6,
            "encode_cost_ratio_ours_over_baseline": (cpu / n) / max(1e-12, bcpu / n2),
            "budget": BUDGET, "within_budget": ours / n <= BUDGET}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--batch-s", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = [measure(a.minutes, b) for b in a.batch_s]
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"2 bands x 200 Hz x {a.minutes:g} min, MCAP zstd chunks; imu batch encoding "
          f"{ENCODING} vs the baseline of msgpack int lists")
    print(f"{'batch s':>7} {'ours B/sample':>13} {'baseline':>9} {'smaller':>8} | "
          f"{'encode us/sample':>16} {'baseline':>9} {'cost ratio':>10} | budget {BUDGET:g}")
    for r in rows:
        print(f"{r['batch_s']:7.2f} {r['bytes_per_sample']:13.2f} "
              f"{r['baseline_bytes_per_sample']:9.2f} {r['ratio_baseline_over_ours']:7.2f}x | "
              f"{r['encode_us_per_sample']:16.2f} {r['baseline_encode_us_per_sample']:9.2f} "
              f"{r['encode_cost_ratio_ours_over_baseline']:9.2f}x | "
              f"{'within' if r['within_budget'] else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
