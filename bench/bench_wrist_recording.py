"""Bytes per stored wrist sample in REAL recordings: ``wearcap run`` on the simulated rig
(two 200 Hz bands behind the private BlueZ, camera off), once per ``ble.batch_seconds``.

    .venv/bin/python bench/bench_wrist_recording.py                  # 30 s, 0.05 s vs 0.5 s
    .venv/bin/python bench/bench_wrist_recording.py --seconds 60 --batch 0.05 0.5 1 --json
    .venv/bin/python bench/bench_wrist_recording.py --seconds 15 --batch 2 --interval-ms 7.5 7.5

The rig records the 1 kHz head MCU too, in the same chunks. For each recording it reads
the sealed segment(s) back and prints, for the wrist bands and for the head IMU apart, the
stream's stored bytes per 6-axis sample: its share of the zstd chunk bytes (each chunk
rewritten with and without the stream's messages, the difference scaled to the file's real
chunk bytes), and its message bytes before compression; and the per-segment bytes outside
chunks (schemas, metadata, indexes). Samples are decoded with
``agent.wrist.imu_batch.decode_payload``. The baseline, in the same run, is the same samples
as plain msgpack lists (six ints and one host time per sample, one message per recorded
message) written into an MCAP file with zstd chunks closed every second, as the segment
writer does; ``ratio`` is the stream's stored bytes over the baseline's.
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


def record(batch_s: float, seconds: float, tmp: Path,
           interval_ms: tuple[float, float] | None = None) -> Path:
    cfg = tmp / f"batch-{batch_s:g}.toml"
    sim = ("" if interval_ms is None else
           f"\n[sim]\ninterval_ms = [{interval_ms[0]:g}, {interval_ms[1]:g}]\n")
    cfg.write_text('profile = "sim"\n\n[camera]\nbackend = "none"\n\n[spool]\nreserve_mb = 0\n'
                   f'\n[ble]\nbatch_seconds = {batch_s:g}\n{sim}')
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


def write_mcap(messages: list[tuple[str, int, bytes]], chunk_ns: int | None = None) -> bytes:
    """These messages (topic, log time, data) as an MCAP file with zstd chunks, as the segment
    writer writes them: one chunk (``chunk_ns`` None), or a chunk closed every ``chunk_ns``
    of log time, as the writer's checkpoint does."""
    from mcap.writer import CompressionType, Writer

    buf = io.BytesIO()
    w = Writer(buf, compression=CompressionType.ZSTD, chunk_size=1 << 62)
    w.start(profile="wearcap", library="bench")
    sid = w.register_schema("s", "jsonschema", b"{}")
    ids: dict[str, int] = {}
    chunk_t0: int | None = None
    for seq, (topic, t, data) in enumerate(messages):
        if topic not in ids:
            ids[topic] = w.register_channel(topic, "msgpack", sid)
        if chunk_ns is not None:
            if chunk_t0 is None:
                chunk_t0 = t
            elif t - chunk_t0 >= chunk_ns:
                w.flush()  # closes the chunk
                chunk_t0 = t
        w.add_message(ids[topic], log_time=t, data=data, publish_time=t, sequence=seq)
    w.finish()
    return buf.getvalue()


def rewrite_chunk_bytes(messages: list[tuple[str, int, bytes]]) -> int:
    """Chunk bytes of these messages written as one zstd chunk, as the segment writer does."""
    return chunk_bytes(write_mcap(messages))


def file_chunks(data: bytes) -> list[list[tuple[str, int, bytes]]]:
    """Each zstd chunk's messages (topic, log time, data), in file order."""
    import zstandard
    from mcap.exceptions import EndOfFile
    from mcap.records import Channel, Chunk, Message
    from mcap.stream_reader import StreamReader

    topics: dict[int, str] = {}
    out: list[list[tuple[str, int, bytes]]] = []
    for rec in StreamReader(io.BytesIO(data), emit_chunks=True).records:
        if isinstance(rec, Channel):
            topics[rec.id] = rec.topic
        if not isinstance(rec, Chunk):
            continue
        raw = zstandard.ZstdDecompressor().decompress(rec.data,
                                                      max_output_size=rec.uncompressed_size)
        msgs: list[tuple[str, int, bytes]] = []
        try:
            for r in StreamReader(io.BytesIO(raw), skip_magic=True).records:
                if isinstance(r, Channel):
                    topics[r.id] = r.topic
                elif isinstance(r, Message):
                    msgs.append((topics[r.channel_id], r.log_time, r.data))
        except EndOfFile:
            pass
        out.append(msgs)
    return out


def is_imu(topic: str) -> str | None:
    if topic.startswith("/wrist/") and topic.endswith("/imu"):
        return "wrist"
    if topic == "/head/imu":
        return "head"
    return None


def measure(sealed: Path) -> dict[str, Any]:
    """Per stream group (wrist bands, head IMU): its share of the recording's chunk bytes
    (the chunk bytes with its messages, minus the same chunks rewritten without them), per
    6-axis sample, beside the same samples as plain msgpack lists."""
    import msgpack

    from agent.wrist.imu_batch import decode_payload

    files = sorted(sealed.glob("*.mcap"))
    topics: dict[str, dict[str, int]] = {}
    baseline: dict[str, list[tuple[str, int, bytes]]] = {"wrist": [], "head": []}
    share = {"wrist": 0, "head": 0}
    file_bytes = chunks = rewritten = 0
    for f in files:
        data = f.read_bytes()
        file_bytes += len(data)
        chunks += chunk_bytes(data)
        for msgs in file_chunks(data):
            whole = rewrite_chunk_bytes(msgs)
            rewritten += whole
            for group in share:
                rest = [m for m in msgs if is_imu(m[0]) != group]
                share[group] += whole - (rewrite_chunk_bytes(rest) if rest else 0)
            for topic, t, payload in msgs:
                s = topics.setdefault(topic, {"messages": 0, "bytes": 0, "samples": 0})
                s["messages"] += 1
                s["bytes"] += len(payload)
                group = is_imu(topic)
                if group is None:
                    continue
                d = decode_payload(msgpack.unpackb(payload, raw=False))
                s["samples"] += len(d["host_ns"])
                rows = [[*a, *g] for a, g in zip(d["acc"].tolist(), d["gyro"].tolist(),
                                                 strict=True)]
                plain = msgpack.packb({"samples": rows, "host_ns": d["host_ns"].tolist()})
                baseline[group].append((topic, t, plain))
    out: dict[str, Any] = {"segments": len(files), "topics": topics,
                           "chunk_bytes": chunks,
                           "file_overhead_B_per_segment": round((file_bytes - chunks)
                                                                / max(1, len(files)))}
    scale = chunks / rewritten if rewritten else 1.0  # rewriting frames messages alike
    for group in share:
        ts = {k: v for k, v in topics.items() if is_imu(k) == group}
        n = sum(v["samples"] for v in ts.values())
        if not n:
            out[group] = None
            continue
        base = chunk_bytes(baseline_file(baseline[group]))
        out[group] = {
            "samples": n,
            "samples_per_message": round(n / max(1, sum(v["messages"] for v in ts.values())),
                                         1),
            "stored_B_per_sample": round(share[group] * scale / n, 2),
            "message_B_per_sample": round(sum(v["bytes"] for v in ts.values()) / n, 2),
            "baseline_B_per_sample": round(base / n, 2),
            "ratio_vs_baseline": round(share[group] * scale / base, 3) if base else None,
            "within_budget": share[group] * scale / n <= BUDGET,
        }
    return out


def baseline_file(msgs: list[tuple[str, int, bytes]]) -> bytes:
    """The same samples as plain msgpack lists, zstd chunks closed every second."""
    return write_mcap(sorted(msgs, key=lambda m: m[1]), chunk_ns=1_000_000_000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="each recording's length")
    ap.add_argument("--batch", type=float, nargs="+", default=[0.05, 0.5],
                    help="ble.batch_seconds values, recorded side by side")
    ap.add_argument("--interval-ms", type=float, nargs=2, metavar=("LOW", "HIGH"),
                    help="the simulated bands' BLE connection interval range ([sim] "
                    "interval_ms; default: the rig's, 7.5-50 ms drawn per band). "
                    "--interval-ms 7.5 7.5 is the fast-link case: 1-2 samples a notification")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.interval_ms and not 7.5 <= args.interval_ms[0] <= args.interval_ms[1] <= 4000:
        ap.error("--interval-ms: LOW HIGH within 7.5..4000 ms, LOW <= HIGH")
    interval = tuple(args.interval_ms) if args.interval_ms else None
    with tempfile.TemporaryDirectory(prefix="wearcap-bench-wrist-") as tmp:
        with ThreadPoolExecutor(len(args.batch)) as pool:
            sealed = list(pool.map(lambda b: record(b, args.seconds, Path(tmp), interval),
                                   args.batch))
        results = {f"{b:g}": measure(s) for b, s in zip(args.batch, sealed, strict=True)}
    links = (f"{interval[0]:g}-{interval[1]:g} ms" if interval else "the rig's 7.5-50 ms")
    report = {"seconds": args.seconds, "interval_ms": list(interval) if interval else None,
              "budget_B_per_sample": BUDGET, "by_batch_s": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wearcap run on the simulated rig (two 200 Hz bands, the 1 kHz head MCU), camera "
          f"off, BLE connection interval {links}, {args.seconds:g} s per recording; stored = "
          f"each stream's share of the zstd chunk bytes, per 6-axis sample; "
          f"budget {BUDGET:g} B")
    for b, r in results.items():
        print(f"  batch {b:>5} s ({r['segments']} segment(s), "
              f"{r['file_overhead_B_per_segment']} B of schemas/metadata/index per segment):")
        for group, label in (("wrist", "wrist bands"), ("head", "head IMU   ")):
            g = r[group]
            if g is None:
                print(f"    {label}: no samples")
                continue
            print(f"    {label}: {g['samples']} samples, {g['samples_per_message']} per message;"
                  f" stored {g['stored_B_per_sample']} B/sample ({g['message_B_per_sample']}"
                  f" before compression); plain msgpack lists {g['baseline_B_per_sample']}"
                  f" B/sample; ratio {g['ratio_vs_baseline']}; "
                  f"{'within' if g['within_budget'] else 'OVER'} the budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
