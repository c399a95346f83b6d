"""Bytes per stored 6-axis wrist sample in an MCAP segment (zstd chunks), vs plain msgpack.

Two simulated 200 Hz bands write T minutes of IMU batches (one message per ``--batch-s``)
through the agent's imu_message into an MCAP file with zstd chunk compression, exactly
as a segment holds them. The baseline is the same samples as msgpack lists of ints (and
one host timestamp per sample), written the same way in the same run.

    .venv/bin/python bench/bench_imu_storage.py [--minutes 2] [--batch-s 0.5] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import msgpack
from mcap.writer import CompressionType, Writer

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder
from agent.wrist.imu_batch import SCHEMA, host_times, imu_message, make_fit, observe

BUDGET = 8.0


def write(minutes: float, batch_s: float, baseline: bool) -> tuple[int, int]:
    buf = io.BytesIO()
    w = Writer(buf, compression=CompressionType.ZSTD, chunk_size=1024 * 1024)
    w.start(profile="wearcap", library="bench")
    sid = w.register_schema("wearcap.ImuBatch", "jsonschema", json.dumps(SCHEMA).encode())
    bands = []
    for i, name in enumerate(("left", "right")):
        cid = w.register_channel(f"/wrist/{name}/imu", "msgpack", sid)
        m = BandModel(BandParams(profile="wearcap-open", seed=10 + i), 0)
        bands.append((name, cid, m, make_decoder("wearcap-open", rate_hz=200),
                      make_fit("wearcap-open", 200)))
    samples = 0
    t = 0
    step = int(batch_s * 1e9)
    while t < minutes * 60e9:
        t += step
        for name, cid, m, dec, fit in bands:
            chunks = []
            for d in m.deliveries_until(t):
                for c in dec.feed(d.packet, d.host_ns):
                    observe(fit, c)
                    chunks.append(c)
            if not chunks:
                continue
            samples += sum(c.n for c in chunks)
            if baseline:
                rows, times = [], []
                for c in chunks:
                    h0, hp = host_times(fit, c)
                    assert c.gyro is not None
                    for i in range(c.n):
                        rows.append(c.acc[i].tolist() + c.gyro[i].tolist())
                        times.append(h0 + round(i * hp))
                data = msgpack.packb({"band": name, "samples": rows, "host_ns": times})
                log = times[0]
            else:
                msg = imu_message(name, chunks, fit, "wearcap-open")
                data, log = msgpack.packb(msg.payload), msg.log_time_ns
            w.add_message(cid, log_time=log, data=data, publish_time=log)
    w.finish()
    return len(buf.getvalue()), samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--batch-s", type=float, default=0.5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    ours, n = write(a.minutes, a.batch_s, baseline=False)
    base, n2 = write(a.minutes, a.batch_s, baseline=True)
    r = {"minutes": a.minutes, "batch_s": a.batch_s, "samples": n,
         "bytes_per_sample": ours / n, "baseline_bytes_per_sample": base / n2,
         "ratio_baseline_over_ours": (base / n2) / (ours / n), "budget": BUDGET,
         "within_budget": ours / n <= BUDGET}
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{n} samples (2 bands x 200 Hz x {a.minutes:g} min), batches of {a.batch_s} s, "
              f"MCAP zstd chunks")
        print(f"imu batch (delta-i16le-planar): {r['bytes_per_sample']:.2f} B/sample "
              f"(budget {BUDGET})")
        print(f"baseline msgpack int lists:     {r['baseline_bytes_per_sample']:.2f} B/sample"
              f"  -> {r['ratio_baseline_over_ours']:.2f}x smaller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
