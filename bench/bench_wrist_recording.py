"""Bytes per stored wrist sample in REAL recordings: ``wearcap run`` on the simulated rig
(two 200 Hz bands behind the private BlueZ, camera off), once per ``ble.batch_seconds``.

    .venv/bin/python bench/bench_wrist_recording.py                  # 30 s, 0.05 s vs 0.5 s
    .venv/bin/python bench/bench_wrist_recording.py --seconds 60 --batch 0.05 0.5 1 --json

For each recording it reads the sealed segment(s) back and prints, per 6-axis sample: the
file bytes, the zstd chunk bytes (what the messages cost once compressed) and the message
bytes before compression, per topic the messages and samples (decoded with
``agent.wrist.imu_batch.decode_payload``). The baseline, in the same run, is the same
samples as plain msgpack lists (six ints and one host time per sample, one message per
recorded message) written into an MCAP file with zstd chunks closed every second, as the
segment writer does; ``ratio`` is the recording's chunk bytes over the baseline's.
``ble.batch_seconds = 0.05`` is one message per writer drain, i.e. the behaviour before
batching.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGET = 8.0


def record(batch_s: float, seconds: float, tmp: Path) -> Path:
    cfg = tmp / f"batch-{batch_s:g}.toml"
    cfg.write_text('profile = "sim"\n\n[camera]\nbackend = "none"\n\n[spool]\nreserve_mb = 0\n'
                   f'\n[ble]\nbatch_seconds = {batch_s:g}\n')
    spool = tmp / f"spool-{batch_s:g}"
    r = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg),
                        "--duration", f"{seconds:g}", "--spool", str(spool)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"wearcap run failed ({r.returncode}): {r.stderr[-2000:]}")
    return spool / "sealed"


def chunk_bytes(data: bytes) -> int:
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    return sum(len(rec.data) for rec in StreamReader(io.BytesIO(data), emit_chunks=True).records
               if isinstance(rec, Chunk))


def measure(sealed: Path) -> dict[str, Any]:
    import msgpack
    from mcap.reader import make_reader

    from agent.wrist.imu_batch import decode_payload

    files = sorted(sealed.glob("*.mcap"))
    topics: dict[str, dict[str, int]] = {}
    baseline_msgs: list[tuple[str, int, bytes]] = []
    file_bytes = chunks = 0
    for f in files:
        data = f.read_bytes()
        file_bytes += len(data)
        chunks += chunk_bytes(data)
        for _schema, channel, msg in make_reader(io.BytesIO(data)).iter_messages():
            t = topics.setdefault(channel.topic, {"messages": 0, "bytes": 0, "samples": 0})
            t["messages"] += 1
            t["bytes"] += len(msg.data)
            if channel.topic.startswith("/wrist/"):
                d = decode_payload(msgpack.unpackb(msg.data, raw=False))
                n = len(d["host_ns"])
                t["samples"] += n
                rows = [[*a, *g] for a, g in zip(d["acc"].tolist(), d["gyro"].tolist(),
                                                 strict=True)]
                plain = msgpack.packb({"samples": rows, "host_ns": d["host_ns"].tolist()})
                baseline_msgs.append((channel.topic, msg.log_time, plain))
    samples = sum(t["samples"] for k, t in topics.items() if k.startswith("/wrist/"))
    imu_msg_bytes = sum(t["bytes"] for k, t in topics.items() if k.startswith("/wrist/"))
    base = baseline_file(baseline_msgs)
    base_chunks = chunk_bytes(base)
    return {
        "segments": len(files), "samples": samples, "topics": topics,
        "file_B_per_sample": round(file_bytes / samples, 2) if samples else None,
        "chunk_B_per_sample": round(chunks / samples, 2) if samples else None,
        "message_B_per_sample": round(imu_msg_bytes / samples, 2) if samples else None,
        "samples_per_message": round(samples / max(1, sum(
            t["messages"] for k, t in topics.items() if k.startswith("/wrist/"))), 1),
        "baseline_chunk_B_per_sample": round(base_chunks / samples, 2) if samples else None,
        "ratio_vs_baseline": round(chunks / base_chunks, 3) if base_chunks else None,
    }


def baseline_file(msgs: list[tuple[str, int, bytes]]) -> bytes:
    """The same samples as plain msgpack lists, zstd chunks closed every second."""
    from mcap.writer import CompressionType, Writer

    buf = io.BytesIO()
    w = Writer(buf, compression=CompressionType.ZSTD, chunk_size=1 << 62)
    w.start(profile="wearcap", library="bench")
    sid = w.register_schema("plain", "jsonschema", b"{}")
    ids: dict[str, int] = {}
    chunk_t0: int | None = None
    for seq, (topic, t, data) in enumerate(sorted(msgs, key=lambda m: m[1])):
        if topic not in ids:
            ids[topic] = w.register_channel(topic, "msgpack", sid)
        if chunk_t0 is None:
            chunk_t0 = t
        elif t - chunk_t0 >= 1_000_000_000:
            w.flush()  # closes the chunk, as the segment writer's checkpoint does
            chunk_t0 = t
        w.add_message(ids[topic], log_time=t, data=data, publish_time=t, sequence=seq)
    w.finish()
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="each recording's length")
    ap.add_argument("--batch", type=float, nargs="+", default=[0.05, 0.5],
                    help="ble.batch_seconds values, recorded side by side")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wearcap-bench-wrist-") as tmp:
        with ThreadPoolExecutor(len(args.batch)) as pool:
            sealed = list(pool.map(lambda b: record(b, args.seconds, Path(tmp)), args.batch))
        results = {f"{b:g}": measure(s) for b, s in zip(args.batch, sealed, strict=True)}
    report = {"seconds": args.seconds, "budget_B_per_sample": BUDGET, "by_batch_s": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wearcap run on the simulated rig, camera off, {args.seconds:g} s per recording, "
          "two 200 Hz bands")
    for b, r in results.items():
        print(f"  batch {b:>5} s: {r['samples']} samples in {r['samples_per_message']} per "
              f"message; stored {r['chunk_B_per_sample']} B/sample (file "
              f"{r['file_B_per_sample']}, messages {r['message_B_per_sample']} before "
              f"compression); plain msgpack lists {r['baseline_chunk_B_per_sample']} B/sample;"
              f" ratio {r['ratio_vs_baseline']}; "
              f"{'within' if (r['chunk_B_per_sample'] or 99) <= BUDGET else 'OVER'} the "
              f"{BUDGET:g} B budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
