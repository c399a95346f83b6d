"""Capture CPU per thread on the whole simulated rig (camera + two 200 Hz wrist bands + the
1 kHz head MCU on a pty), so the agent's own cost can be told from the video encoder's.

    .venv/bin/python bench/bench_capture_threads.py [-s SECONDS] [--json]

Records in-process exactly as `wearcap run` does (simulated rig, sources, camera, capture
service), and after a warm-up reads every thread's CPU from /proc/self/task twice. Threads are
named by Python's threading registry; native threads the encoder library starts itself are
counted as the encoder. The simulated MCU runs in this process too (thread ``sim-mcu``): it
is the rig, not the agent, and is listed apart. Prints each thread's share of one core and the
agent's total excluding the encoder (budget: <= 3% of a core at 30 fps + 2 x 200 Hz + 1 kHz),
with the encoder's share as the baseline of the same run. ``--no-mcu``: without the MCU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, float]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            f = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / TICK
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-mcu", action="store_true", help="leave the head MCU out")
    a = ap.parse_args()

    import dataclasses

    from agent import config
    from agent.camera.open import open_camera
    from agent.capture import CaptureService, CaptureSettings
    from agent.commands.run import _mcu_sources, _sim_mcu, _sim_rig, _wearer, _wrist_sources
    from agent.record.spool import Spool

    cfg = config.load(REPO / "device_configs" / "sim.toml")
    if a.no_mcu:
        cfg = dataclasses.replace(cfg, mcu=dataclasses.replace(cfg.mcu, enabled=False))
    spool = Spool(Path(tempfile.mkdtemp(prefix="wearcap-bench-")), cfg.device.id)
    settings = CaptureSettings(device_id=cfg.device.id, config_digest=cfg.digest(),
                               segment_seconds=cfg.segment.seconds,
                               chunk_seconds=cfg.segment.chunk_seconds,
                               chunk_bytes=cfg.segment.chunk_bytes,
                               duration=a.warmup + a.seconds + 3)
    stop = threading.Event()
    with _sim_rig(cfg), _sim_mcu(cfg) as sim_mcu:
        sources = _wrist_sources(cfg) + _mcu_sources(cfg, spool.root, sim_mcu)
        camera = open_camera(cfg.camera)
        if sim_mcu is not None:
            camera.exposure_hook = sim_mcu.on_exposure  # type: ignore[attr-defined]
        svc = CaptureService(settings, spool, camera, sources, stop=stop,
                             notify=lambda s: None, status=lambda s: None,
                             wearer=_wearer(cfg, sources, spool.root))
        writer = threading.Thread(target=svc.run, name="writer")
        writer.start()
        time.sleep(a.warmup)
        c0, t0 = thread_cpu(), time.monotonic()
        time.sleep(a.seconds)
        c1, t1 = thread_cpu(), time.monotonic()
        names = {t.native_id: t.name for t in threading.enumerate()}
        stop.set()
        writer.join()
    wall = t1 - t0
    rows: dict[str, float] = {}
    for tid, cpu in c1.items():
        name = names.get(tid, "native (encoder library)")
        rows[name] = rows.get(name, 0.0) + (cpu - c0.get(tid, 0.0)) / wall * 100
    enc = sum(v for k, v in rows.items() if "native" in k or "camera" in k.lower())
    sim = sum(v for k, v in rows.items() if k.startswith("sim-"))
    agent = sum(rows.values()) - enc - sim
    res = {"seconds": round(wall, 1), "threads_pct": {k: round(v, 2) for k, v in rows.items()},
           "encoder_pct": round(enc, 2), "agent_excluding_encoder_pct": round(agent, 2),
           "simulator_pct": round(sim, 2), "mcu": not a.no_mcu,
           "agent_over_encoder": round(agent / enc, 3) if enc else None, "budget_pct": 3.0}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
            print(f"  {k:32s} {v:6.2f}% of a core")
        print(f"simulated MCU (the rig, not the agent): {sim:.2f}%")
        print(f"agent excluding the encoder: {agent:.2f}% of a core (budget 3%); "
              f"camera+encoder {enc:.2f}% -> agent/encoder = {res['agent_over_encoder']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
