"""Capture CPU per thread on the whole simulated rig (camera + two 200 Hz wrist bands + the
1 kHz head MCU on a pty), so the agent's own cost can be told from the video encoder's.

    .venv/bin/python bench/bench_capture_threads.py [-s SECONDS] [--warmup S] [--no-mcu]
                                                    [--stages] [--notify auto|acquire|start]
                                                    [--interval-ms LO HI] [--json]
    .venv/bin/python bench/bench_capture_threads.py --compare-notify ROUNDS [-s S]
                                                    [--interval-ms LO HI] [--json]

Records in-process exactly as `wearcap run` does (bench/rig.py: simulated rig, sources,
camera, capture service), and after a warm-up reads every thread's CPU from /proc/self/task
twice. Threads are named by Python's threading registry; native threads the encoder library
starts itself are counted as the encoder. The simulated MCU runs in this process too (thread
``sim-mcu``): it is the rig, not the agent, and is listed apart. Prints each thread's share of
one core and the agent's total excluding the encoder (budget: <= 3% of a core at 30 fps +
2 x 200 Hz + 1 kHz), with the encoder's share as the baseline of the same run.
``--no-mcu``: without the MCU. ``--stages``: also the writer thread's CPU per stage of its
loop (each stage's own thread CPU time, stages nest: a flush drains), which costs a little
CPU itself. ``--notify``: every band's ``notify`` key (``acquire``: data notifications
through AcquireNotify's socket where the band offers it; ``start``: StartNotify, one D-Bus
signal per notification; ``auto``: StartNotify for the simulated rig's two-way bands); the
path each band used is printed. ``--interval-ms LO HI``: the simulated
bands' connection interval range (``[sim] interval_ms``); ``--interval-ms 15 15`` fixes it, so
that runs carry the samples in like numbers of notifications and can be compared.
``--compare-notify ROUNDS``: that many rounds of ``--notify start`` (the baseline) and
``--notify acquire``, taking turns, each in a fresh interpreter; prints each run and the ratios
(acquire / start) of the BLE loop's CPU per notification and of the agent's total, median over
the rounds.

Also printed: what came in per second over the measured window (camera frames written, each
band's notifications and samples, the MCU's reads, frames and samples). The samples are
fixed by the rig; how many notifications and reads carry them is not (the simulated links
and a loaded machine batch them differently from run to run), and the agent's cost follows
the notifications more than the samples: compare runs at like rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rig import recording, thread_cpu

BUDGET_PCT = 3.0


class Stage:
    """Wraps a method; adds the calling thread's CPU time while on."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner, self.name, self.fn = owner, name, getattr(owner, name)
        self.ns = self.calls = 0
        self.on = False
        stage = self

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.thread_time_ns()
            try:
                return stage.fn(*a, **kw)
            finally:
                if stage.on:
                    stage.ns += time.thread_time_ns() - t
                    stage.calls += 1

        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.fn)


def stages() -> dict[str, Stage]:
    from agent.capture import CaptureService
    from agent.mcu import records
    from agent.mcu.source import McuSource
    from agent.record.segment import SegmentWriter
    from agent.wrist import imu_batch, timing
    from agent.wrist.source import WristSource
    from agent.wrist.stream import BandStream

    return {"camera frames (write_frame)": Stage(SegmentWriter, "write_frame"),
            "wrist bands (drain)": Stage(WristSource, "drain"),
            "  notifications decoded (BandStream.feed)": Stage(BandStream, "feed"),
            "    band clock observes (timing.observe)": Stage(imu_batch, "observe"),
            "  batches (imu_batch.imu_message)": Stage(imu_batch, "imu_message"),
            "    band clock places (timing.place)": Stage(timing, "place"),
            "head MCU (drain)": Stage(McuSource, "drain"),
            "  head IMU batches (records.imu_message)": Stage(records, "imu_message"),
            "sources' flush at chunk close": Stage(CaptureService, "_flush_sources"),
            "messages (write_message)": Stage(SegmentWriter, "write_message"),
            "chunk close + fsync (checkpoint)": Stage(SegmentWriter, "checkpoint"),
            "live status (_publish)": Stage(CaptureService, "_publish")}


def inputs(rig: Any) -> dict[str, int]:
    """Counters of what the rig delivered so far (see the module doc)."""
    out = {"camera frames": rig.service.result.frames}
    for src in rig.sources:
        st = getattr(src, "stats", None)
        if not isinstance(st, dict):
            continue
        if "packets" in st:  # a wrist band (agent.wrist.stream STATS)
            out[f"{src.name} notifications"] = st["packets"]
            out[f"{src.name} samples"] = st["samples"]
        elif "reads" in st:  # the head MCU
            out[f"{src.name} reads"] = st["reads"]
            out[f"{src.name} frames"] = st["frames"]
            out[f"{src.name} samples"] = st["samples"]
    return out


def measure(seconds: float, warmup: float, mcu: bool, with_stages: bool,
            notify: str | None = None,
            interval_ms: tuple[float, float] | None = None) -> dict[str, Any]:
    st = stages() if with_stages else {}
    try:
        with recording(warmup + seconds + 3, mcu=mcu, notify=notify,
                       interval_ms=interval_ms) as rig:
            time.sleep(warmup)
            for s in st.values():
                s.on = True
            c0, t0, n0 = thread_cpu(), time.monotonic(), inputs(rig)
            time.sleep(seconds)
            c1, t1, n1 = thread_cpu(), time.monotonic(), inputs(rig)
            for s in st.values():
                s.on = False
            names = rig.thread_names()
            paths = {src.name: src.status().get("notify_path", "")
                     for src in rig.sources if hasattr(src, "stream")}
    finally:
        for s in st.values():
            s.restore()
    wall = t1 - t0
    rows: dict[str, float] = {}
    for tid, cpu in c1.items():
        name = names.get(tid, "native (encoder library)")
        rows[name] = rows.get(name, 0.0) + (cpu - c0.get(tid, 0.0)) / wall * 100
    enc = sum(v for k, v in rows.items() if "native" in k or "camera" in k.lower())
    sim = sum(v for k, v in rows.items() if k.startswith("sim-"))
    agent = sum(rows.values()) - enc - sim
    return {"seconds": round(wall, 1), "threads_pct": {k: round(v, 2) for k, v in rows.items()},
            "encoder_pct": round(enc, 2), "agent_excluding_encoder_pct": round(agent, 2),
            "simulator_pct": round(sim, 2), "mcu": mcu,
            "agent_over_encoder": round(agent / enc, 3) if enc else None,
            "budget_pct": BUDGET_PCT,
            "notify_paths": paths,
            "inputs_per_s": {k: round((n1[k] - n0.get(k, 0)) / wall, 1) for k in n1},
            "writer_stages_pct": {k: round(s.ns / 1e9 / wall * 100, 3) for k, s in st.items()}}


def _ble_us_per_notification(res: dict[str, Any]) -> float | None:
    n = sum(v for k, v in res["inputs_per_s"].items() if k.endswith(" notifications"))
    ble = res["threads_pct"].get("ble-loop")
    return None if not n or ble is None else ble / 100 / n * 1e6


def compare_notify(rounds: int, seconds: float, warmup: float, as_json: bool,
                   interval_ms: list[float] | None = None) -> int:
    """Both notify paths, taking turns in fresh interpreters (see the module doc)."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for path in ("start", "acquire"):
            cmd = [sys.executable, __file__, "-s", f"{seconds:g}", "--warmup", f"{warmup:g}",
                   "--notify", path, "--json",
                   *(["--interval-ms", *map(str, interval_ms)] if interval_ms else [])]
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res = json.loads(out)
            row = {"round": r + 1, "notify": path, "load": load,
                   "paths": res["notify_paths"],
                   "agent_pct": res["agent_excluding_encoder_pct"],
                   "agent_over_encoder": res["agent_over_encoder"],
                   "ble_loop_pct": res["threads_pct"].get("ble-loop"),
                   "writer_pct": res["threads_pct"].get("writer"),
                   "notifications_per_s": round(sum(
                       v for k, v in res["inputs_per_s"].items()
                       if k.endswith(" notifications")), 1),
                   "ble_us_per_notification": _ble_us_per_notification(res)}
            runs.append(row)
            if not as_json:
                print(f"round {row['round']} {path:5s} load {load:>5s}: agent excl. encoder "
                      f"{row['agent_pct']:.2f}% (agent/encoder {row['agent_over_encoder']}), "
                      f"ble-loop {row['ble_loop_pct']:.2f}% at {row['notifications_per_s']:g} "
                      f"notifications/s = {row['ble_us_per_notification'] or 0:.1f} us each, "
                      f"writer {row['writer_pct']:.2f}%; paths {row['paths']}", flush=True)

    def ratio(key: str) -> float | None:
        pairs = [(a[key], b[key]) for a, b in zip(runs[::2], runs[1::2], strict=True)
                 if a[key] and b[key]]
        return round(statistics.median(b / a for a, b in pairs), 3) if pairs else None

    summary = {"rounds": runs,
               "ratio_ble_per_notification": ratio("ble_us_per_notification"),
               "ratio_agent": ratio("agent_pct"),
               "ratio_agent_over_encoder": ratio("agent_over_encoder")}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"acquire / start, median of {rounds} rounds: BLE loop per notification "
              f"{summary['ratio_ble_per_notification']}, agent excluding the encoder "
              f"{summary['ratio_agent']}, agent/encoder {summary['ratio_agent_over_encoder']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-mcu", action="store_true", help="leave the head MCU out")
    ap.add_argument("--stages", action="store_true", help="the writer's CPU per stage")
    ap.add_argument("--notify", choices=("auto", "acquire", "start"),
                    help="every band's notify path (default: the config's)")
    ap.add_argument("--compare-notify", type=int, metavar="ROUNDS",
                    help="rounds of both notify paths, taking turns; prints the ratios")
    ap.add_argument("--interval-ms", type=float, nargs=2, metavar=("LO", "HI"),
                    help="the simulated bands' connection interval range (default: config)")
    a = ap.parse_args(argv)
    if a.compare_notify:
        return compare_notify(a.compare_notify, a.seconds, a.warmup, a.json, a.interval_ms)
    res = measure(a.seconds, a.warmup, not a.no_mcu, a.stages, a.notify,
                  tuple(a.interval_ms) if a.interval_ms else None)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    for k, v in sorted(res["threads_pct"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v:6.2f}% of a core")
    for k, v in res["writer_stages_pct"].items():
        print(f"    writer: {k:44s} {v:6.3f}% of a core")
    print("inputs per second: " + ", ".join(f"{k} {v:g}" for k, v in res["inputs_per_s"].items()))
    print("notify paths: " + ", ".join(f"{k} {v or '?'}" for k, v in res["notify_paths"].items()))
    print(f"simulated MCU (the rig, not the agent): {res['simulator_pct']:.2f}%")
    print(f"agent excluding the encoder: {res['agent_excluding_encoder_pct']:.2f}% of a core "
          f"(budget {BUDGET_PCT:g}%); camera+encoder {res['encoder_pct']:.2f}% -> "
          f"agent/encoder = {res['agent_over_encoder']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
