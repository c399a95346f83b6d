"""Disconnect harness: two simulated bands record through the real capture service for M
minutes, each band's link is cut every N seconds of streaming; then the sealed segments are
read back and compared with what the bands delivered.

    .venv/bin/python bench/harness_ble_disconnects.py                # 1 minute, quick
    .venv/bin/python bench/harness_ble_disconnects.py --minutes 5    # the issue's run
    .venv/bin/python bench/harness_ble_disconnects.py --json
    .venv/bin/python bench/harness_ble_disconnects.py --profile witmotion --rate 100 \
        --disconnect-every 20

Prints per band: samples delivered by the simulator vs samples recorded (ratio), disconnects
injected vs disconnect gaps found, how many gaps sit exactly where a disconnect was (the
injection instant inside the gap's time range), the samples the gaps count against those the
band really took and never delivered (its own sample numbers), reconnect times (p50/max:
injection to the first sample recorded after it), and whether the index span is accounted
for (samples recorded + samples the gaps count == span: nothing counted twice or missed).
``--direct``
drives WristSource without the writer; ``--profile`` runs every band as another sensor
profile (e.g. witmotion: no counter, losses judged from arrival times) and ``--rate`` at
another rate. (The simulated link carries at most 10 notifications per connection event: a
one-sample-per-notification band at 200 Hz on a 50 ms interval is at capacity, its backlog
grows without bound, and arrival-time loss judging takes that growing lateness for losses.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import config
from agent.sim.rig import SimRig
from agent.sources import GAP_TOPIC, Message
from agent.wrist.source import WristSource


def record_capture(cfg: config.Config, seconds: float, spool_dir: Path) -> list[Message]:
    """Record through the capture service (no camera) and read the sealed segments back."""
    import msgpack
    from mcap.reader import make_reader

    from agent.capture import CaptureService, CaptureSettings
    from agent.record.spool import Spool

    spool = Spool(spool_dir, cfg.device.id)
    settings = CaptureSettings(device_id=cfg.device.id, config_digest=cfg.digest(),
                               segment_seconds=cfg.segment.seconds, duration=seconds)
    sources = [WristSource(w, cfg.ble) for w in cfg.wrist]
    CaptureService(settings, spool, None, list(sources), status=lambda s: None).run()
    out: list[Message] = []
    for seg in sorted(spool.sealed.glob("*.mcap")):
        with seg.open("rb") as fh:
            for _schema, channel, msg in make_reader(fh).iter_messages():
                if channel.topic == GAP_TOPIC or channel.topic.startswith("/wrist/"):
                    out.append(Message(channel.topic, msg.log_time,
                                       msgpack.unpackb(msg.data, raw=False)))
    return out


def record_direct(cfg: config.Config, seconds: float) -> list[Message]:
    sources = [WristSource(w, cfg.ble) for w in cfg.wrist]
    out: list[Message] = []
    for s in sources:
        s.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s in sources:
            out += s.drain()
        time.sleep(0.05)
    for s in sources:
        s.stop()
        out += s.drain()
    return out


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def analyse(name: str, msgs: list[Message], band: dict[str, Any]) -> dict[str, Any]:
    from agent.wrist.imu_batch import decode_payload

    topic = f"/wrist/{name}/imu"
    idx = [int(i) for m in msgs if m.topic == topic for i in decode_payload(m.payload)["index"]]
    host = [int(t) for m in msgs if m.topic == topic for t in decode_payload(m.payload)["host_ns"]]
    gaps = [m.payload for m in msgs if m.topic == GAP_TOPIC and m.payload["stream"] == topic]
    drops = [f["host_ns"] for f in band["faults"] if f["kind"] == "drop"]
    matched = [any(g["start_ns"] <= t <= g["end_ns"] for g in gaps) for t in drops]
    reconnect_s = []
    for t in drops:
        after = [g["end_ns"] for g in gaps if g["start_ns"] <= t <= g["end_ns"]]
        if after:
            reconnect_s.append((after[0] - t) / 1e9)
    repeated = len(idx) - len(set(idx))
    lost_in_gaps = sum(max(g["lost"], 0) for g in gaps)
    first, last = band.get("first_sample"), band.get("last_sample")
    # the band's own sample numbers: what it took between its first and last sample sent
    # and never delivered (None: the band's feed has no numbers)
    truly_lost = last - first + 1 - band["samples"] if first is not None else None
    span = (max(idx) - min(idx) + 1) if idx else 0
    return {
        "band": name,
        "samples_delivered": band["samples"],
        "samples_recorded": len(idx),
        "recorded_ratio": len(idx) / band["samples"] if band["samples"] else None,
        "samples_repeated": repeated,
        "index_span": span,
        "samples_in_gaps": lost_in_gaps,
        "span_accounted": span == len(set(idx)) + lost_in_gaps,
        "samples_truly_lost": truly_lost,
        "disconnects_injected": len(drops),
        "disconnect_gaps_found": sum(1 for g in gaps if g["cause"].startswith("disconnect:")),
        "gaps_at_injections": sum(matched),
        "other_gaps": [g["cause"] for g in gaps if not g["cause"].startswith("disconnect:")],
        "reconnect_s_p50": _pct(reconnect_s, 0.5),
        "reconnect_s_max": max(reconnect_s) if reconnect_s else None,
        "host_time_monotonic": all(a <= b for a, b in itertools.pairwise(host)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--disconnect-every", type=float, default=60.0, metavar="S",
                    help="cut each band's link after every S seconds of streaming")
    ap.add_argument("--direct", action="store_true", help="WristSource without the writer")
    ap.add_argument("--profile", help="run every band as this sensor profile")
    ap.add_argument("--rate", type=float, help="run every band at this rate (Hz)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = config.load(config.find_profile("sim", "<harness>"))
    if args.profile or args.rate:
        from dataclasses import replace

        from agent.wrist.profiles import load_profile

        def band(w: config.WristBand) -> config.WristBand:
            profile = args.profile or w.profile
            rate = load_profile(profile).pick_rate(args.rate or w.rate_hz)
            return replace(w, profile=profile, rate_hz=rate)

        cfg = replace(cfg, wrist=[band(w) for w in cfg.wrist])
    seconds = args.minutes * 60
    every = ["--drop-every", f"{args.disconnect_every:g}"]
    t0 = time.monotonic()
    with SimRig(cfg, band_args={w.name: every for w in cfg.wrist}) as rig, \
            tempfile.TemporaryDirectory(prefix="wearcap-harness-") as tmp:
        ticker = None
        if not args.json:
            done = threading.Event()

            def tick() -> None:
                while not done.wait(10):
                    print(f"  {time.monotonic() - t0:5.0f} s / {seconds:.0f} s", file=sys.stderr)

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        msgs = (record_direct(cfg, seconds) if args.direct
                else record_capture(cfg, seconds, Path(tmp)))
        if ticker is not None:
            done.set()
        bands = {w.name: rig.stats(w.name) for w in cfg.wrist}
    report = {"minutes": args.minutes, "disconnect_every_s": args.disconnect_every,
              "profile": cfg.wrist[0].profile if cfg.wrist else None,
              "rate_hz": cfg.wrist[0].rate_hz if cfg.wrist else None,
              "path": "direct" if args.direct else "capture service + sealed segments",
              "bands": [analyse(n, msgs, b) for n, b in bands.items()]}
    ok = all(b["samples_recorded"] == b["samples_delivered"] and b["samples_repeated"] == 0
             and b["gaps_at_injections"] == b["disconnects_injected"]
             and b["disconnect_gaps_found"] == b["disconnects_injected"]
             and b["span_accounted"]
             # counted from the band's numbers (exact) or arrival times (within one a break)
             and (b["samples_truly_lost"] is None or abs(b["samples_in_gaps"]
                  - b["samples_truly_lost"]) <= b["disconnects_injected"])
             for b in report["bands"])
    report["ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.minutes:g} min, {report['profile']} at {report['rate_hz']:g} Hz, "
              f"a disconnect every "
              f"{args.disconnect_every:g} s of streaming, via {report['path']}")
        for b in report["bands"]:
            print(f"  {b['band']:>5}: recorded {b['samples_recorded']} / delivered "
                  f"{b['samples_delivered']} samples (ratio {b['recorded_ratio']:.4f}), "
                  f"repeated {b['samples_repeated']}; disconnects injected "
                  f"{b['disconnects_injected']}, gaps found {b['disconnect_gaps_found']}, at the "
                  f"injection {b['gaps_at_injections']}; reconnect p50 "
                  f"{b['reconnect_s_p50']} s max {b['reconnect_s_max']} s; span accounted "
                  f"{b['span_accounted']} ({b['samples_in_gaps']} in gaps, the band lost "
                  f"{b['samples_truly_lost']}); other gaps "
                  f"{b['other_gaps']}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
