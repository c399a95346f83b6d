"""The simulated rig with its head MCU, recorded for minutes with the wearer's presses and
link faults, then read back as `wearcap inspect` reads it.

    .venv/bin/python bench/bench_mcu_rig.py [-s 300] [--link uart|usb-cdc] [--json]

In-process exactly as `wearcap run` (camera, two wrist bands behind the private BlueZ, the
MCU on a pty, the capture service, the wearer's controls). Scripted: a pause at 20 % of the
run and a resume at 30 %, an annotation at 40 %, a discard at 50 % (armed, confirmed); a
burst of garbage bytes and a truncated frame every 30 s; an unplug of 2 s at 70 %. Prints:

- the head IMU: samples recorded, samples the gap records count as lost, the samples the
  simulator took that are not in the recording (they must be equal: nothing lost uncounted),
  samples outside any gap (0 means no silent hole);
- the mapped-time error of every head IMU sample against the simulator's truth over the
  real pty (p50/p99/max), beside the naive baseline (the arrival time of its frame), and the
  share within its stored bound;
- strobe residuals (frame stamp - strobe) p50/p99, frames without strobe, exposures with no
  frame and no gap;
- the wearer's events in the recording, the discard request, the decoder's error counters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=300.0)
    ap.add_argument("--link", choices=("uart", "usb-cdc"), default="uart")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--mcu-process", action="store_true",
                    help="run the simulated MCU in a process of its own "
                         "(agent.sim.mcu_process): its 'hardware' instants are then not "
                         "delayed by the agent's interpreter lock")
    a = ap.parse_args()

    from agent import config
    from agent.camera.open import open_camera
    from agent.capture import CaptureService, CaptureSettings
    from agent.commands.run import _mcu_sources, _sim_mcu, _sim_rig, _wearer, _wrist_sources
    from agent.inspect import expand, read_streams, report
    from agent.mcu.source import McuSource
    from agent.record.spool import Spool
    from agent.wrist import imu_batch

    T = a.seconds
    cfg = config.load(REPO / "device_configs" / "sim.toml")
    presses = [f"{0.2 * T:g}:0.2", f"{0.3 * T:g}:0.2", f"{0.4 * T:g}:1.5",
               f"{0.5 * T:g}:5.5"]
    cfg = dataclasses.replace(
        cfg, sim=dataclasses.replace(cfg.sim, mcu_presses=presses, mcu_link=a.link),
        mcu=dataclasses.replace(cfg.mcu, discard_minutes=max(0.1, T / 600)),
        segment=dataclasses.replace(cfg.segment, seconds=min(60.0, T / 5)))
    root = Path(tempfile.mkdtemp(prefix="wearcap-mcu-rig-"))
    spool = Spool(root, cfg.device.id, reserve_mb=0)
    settings = CaptureSettings(device_id=cfg.device.id, config_digest=cfg.digest(),
                               segment_seconds=cfg.segment.seconds,
                               chunk_seconds=cfg.segment.chunk_seconds,
                               chunk_bytes=cfg.segment.chunk_bytes, duration=T)
    stop = threading.Event()
    faults = {"garbage": 0, "truncated": 0, "unplugs": 0}
    if a.mcu_process:
        from agent.sim.mcu import params_from_config
        from agent.sim.mcu_process import SimMcuProcess

        sim_mcu: Any = SimMcuProcess(params_from_config(cfg))
    else:
        sim_mcu = _sim_mcu(cfg)
    with _sim_rig(cfg), sim_mcu as sim:
        sources = _wrist_sources(cfg) + _mcu_sources(cfg, spool.root, sim)
        mcu = next(s for s in sources if isinstance(s, McuSource))
        camera = open_camera(cfg.camera)
        camera.exposure_hook = sim.on_exposure  # type: ignore[attr-defined]
        svc = CaptureService(settings, spool, camera, sources, stop=stop,
                             notify=lambda s: None, status=lambda s: None,
                             wearer=_wearer(cfg, sources, spool.root))
        writer = threading.Thread(target=svc.run, name="writer")
        t0 = time.monotonic()
        writer.start()
        next_fault, unplugged = 30.0, False
        while writer.is_alive():
            time.sleep(0.2)
            t = time.monotonic() - t0
            if t >= next_fault:
                sim.fault("garbage", 200)
                sim.fault("truncate")
                faults["garbage"] += 1
                faults["truncated"] += 1
                next_fault += 30.0
            if not unplugged and t >= 0.7 * T:
                unplugged = True
                sim.unplug()
                time.sleep(2.0)
                sim.replug()
                faults["unplugs"] += 1
        writer.join()
        truth = sim.truth_host_ns
        sim_stats = dict(sim.stats)
        exchanges = dict(sim.exchanges)
    res = svc.result
    reports = [report(read_streams(p)) for p in expand([str(spool.sealed)])]
    streams = [read_streams(p) for p in expand([str(spool.sealed)])]
    # head IMU against the truth
    errs, naive, cover = [], [], []
    idx: list[np.ndarray[Any, Any]] = []
    for s in streams:
        for r in s.segment.topic_records("/head/imu"):
            import msgpack

            pl = msgpack.unpackb(r.data)
            d = imu_batch.decode_payload(pl)
            tr = np.array([truth(int(x)) for x in d["device_ns"]])
            e = np.abs(d["host_ns"] - tr)
            errs.append(e)
            arr = np.repeat(np.array(d["chunks"]["arrival_ns"]), d["chunks"]["chunk_n"])
            naive.append(np.abs(arr - tr))
            b = pl["clock"]["error_bound_ns"]
            cover.append(e <= (b if b >= 0 else np.inf) + 1000)
            idx.append(d["index"])
    e, nv, cv = np.concatenate(errs), np.concatenate(naive), np.concatenate(cover)
    import msgpack

    clock_rows = [msgpack.unpackb(r.data) for st in streams
                  for r in st.segment.topic_records("/head/clock")]
    links = link_figures(clock_rows, exchanges)
    ix = np.sort(np.concatenate(idx))
    missing = int(ix[-1] - ix[0] + 1 - len(ix))
    imu = [r.streams["/head/imu"] for r in reports if "/head/imu" in r.streams]
    lost = sum(st.reported_lost for st in imu)
    holes = sum(st.unreported_holes for st in imu)
    strobes = [r.streams["/head/strobe"].strobes for r in reports
               if "/head/strobe" in r.streams and r.streams["/head/strobe"].strobes]
    events = [ev["kind"] for r in reports
              for ev in (r.streams["/wearcap/events"].events if "/wearcap/events" in r.streams
                         else [])]
    out = {
        "seconds": T, "link": a.link, "mcu_process": a.mcu_process,
        "segments": len(res.sealed), "frames": res.frames,
        "paused_frames": res.paused_frames, "faults_injected": faults,
        "head_imu": {"samples": len(ix), "lost_in_gap_records": lost,
                     "missing_from_recording": missing, "unreported_holes": holes,
                     "sim_samples_never_sent": sim_stats["samples_never_sent"]},
        "mapped_error_us": {"p50": float(np.percentile(e, 50) / 1e3),
                            "p99": float(np.percentile(e, 99) / 1e3),
                            "max": float(e.max() / 1e3)},
        "naive_error_us": {"p50": float(np.percentile(nv, 50) / 1e3),
                           "p99": float(np.percentile(nv, 99) / 1e3)},
        "bound_coverage": float(cv.mean()),
        "link_us": links,
        "strobes": {"matched": sum(x["matched"] for x in strobes),
                    "residual_p50_us": float(np.median([x["residual_ns"]["p50"]
                                                        for x in strobes]) / 1e3),
                    "residual_p99_us": float(max(x["residual_ns"]["p99"]
                                                 for x in strobes) / 1e3),
                    "frames_without_strobe": sum(x["frames_without_strobe"] for x in strobes),
                    "unexplained_missing_frames": sum(x["unexplained_missing_frames"]
                                                      for x in strobes),
                    "strobes_lost_on_link": sum(x["strobes_lost"] for x in strobes)},
        "events": events,
        "discard_requests": [json.loads(p.read_text()) for p in (root / "discard").glob("*")]
        if (root / "discard").exists() else [],
        "decoder_errors": mcu.decoder.errors, "mcu_stats": mcu.stats,
        "spool": str(root),
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    h = out["head_imu"]
    print(f"{T:g} s on the simulated rig, MCU over {a.link}"
          f"{' (in its own process)' if a.mcu_process else ''}: {out['segments']} segments, "
          f"{out['frames']} frames ({out['paused_frames']} withheld while paused)")
    print(f"head IMU: {h['samples']} samples; lost per the gap records {h['lost_in_gap_records']}"
          f", missing from the recording {h['missing_from_recording']} (equal: nothing lost "
          f"uncounted), unreported holes {h['unreported_holes']}")
    m, n = out["mapped_error_us"], out["naive_error_us"]
    print(f"mapped time vs truth over the pty: p50 {m['p50']:.1f} us, p99 {m['p99']:.1f} us, "
          f"max {m['max']:.1f} us; naive arrival p99 {n['p99']:.1f} us "
          f"({n['p99'] / max(m['p99'], 1e-9):.0f}x); within the stored bound "
          f"{100 * out['bound_coverage']:.2f} %")
    lk = out["link_us"]
    if lk:
        q = lk["all"]
        b = lk["best_rtt_tenth"]
        print(f"what the real pty and scheduler add to the link model, per ping/pong "
              f"({lk['exchanges']} exchanges, us p50/p99): host->sim "
              f"{q['fwd_real'][0]:.0f}/{q['fwd_real'][1]:.0f}, sim late to deliver "
              f"{q['ret_sim_late'][0]:.0f}/{q['ret_sim_late'][1]:.0f}, sim->host stamp "
              f"{q['ret_real'][0]:.0f}/{q['ret_real'][1]:.0f} (model: forward "
              f"{q['fwd_model'][0]:.0f}/{q['fwd_model'][1]:.0f}, return "
              f"{q['ret_model'][0]:.0f}/{q['ret_model'][1]:.0f})")
        print(f"  over the tenth with the best round trips (what the fit leans on): "
              f"round trip {b['rtt'][0]:.0f}/{b['rtt'][1]:.0f}, of which real pty and "
              f"scheduler {b['real'][0]:.0f}/{b['real'][1]:.0f}; half the asymmetry "
              f"{b['half_asym'][0]:.0f}/{b['half_asym'][1]:.0f} (model only "
              f"{b['half_asym_model'][0]:.0f}/{b['half_asym_model'][1]:.0f})")
    s = out["strobes"]
    print(f"strobes: {s['matched']} matched, residual p50 {s['residual_p50_us']:.0f} us, p99 "
          f"{s['residual_p99_us']:.0f} us; {s['frames_without_strobe']} frames without strobe, "
          f"{s['unexplained_missing_frames']} exposures with no frame and no gap, "
          f"{s['strobes_lost_on_link']} strobes lost on the link")
    print(f"events: {', '.join(events)}; discard requests: {len(out['discard_requests'])}")
    print(f"faults injected: {faults}; decoder counted: "
          f"{ {k: v for k, v in mcu.decoder.errors.items() if v} }")
    return 0


def link_figures(rows: list[dict[str, Any]], exchanges: dict[int, list[int]],
                 ) -> dict[str, Any] | None:
    """Each recorded exchange (host send t0, MCU tick, host receive t1) split with the
    simulator's own instants into what its link model adds and what the real pty and both
    processes' scheduling add: host->sim (the sim reads the ping late), sim late (the sim
    writes the pong after the model's delivery instant), sim->host (pty + the agent's
    reader thread waking and stamping). Half the asymmetry of an exchange is the error it
    puts into the fit."""
    t0s, t1s, ticks = [], [], []
    for r in rows:
        t0s += r["host_send_ns"]
        t1s += r["host_recv_ns"]
        ticks += r["tick"]
    recs = [(t0, t1, exchanges[k]) for t0, t1, k in zip(t0s, t1s, ticks, strict=True)
            if k in exchanges and exchanges[k][3]]
    if not recs:
        return None
    t0 = np.array([r[0] for r in recs], float)
    t1 = np.array([r[1] for r in recs], float)
    read, at_mcu, sched, wrote = (np.array([r[2][i] for r in recs], float) for i in range(4))
    parts = {"fwd_real": read - t0, "fwd_model": at_mcu - read,
             "ret_model": sched - (at_mcu + 3_000), "ret_sim_late": wrote - sched,
             "ret_real": t1 - wrote}
    rtt = t1 - t0
    fwd, ret = at_mcu - t0, t1 - at_mcu
    half = np.abs(fwd - ret) / 2
    half_model = np.abs(parts["fwd_model"] - (sched - at_mcu)) / 2
    real = parts["fwd_real"] + parts["ret_sim_late"] + parts["ret_real"]
    best = rtt <= np.percentile(rtt, 10)

    def q(x: Any) -> list[float]:
        return [float(np.percentile(x, 50) / 1e3), float(np.percentile(x, 99) / 1e3)]

    return {"exchanges": len(recs), "all": {k: q(v) for k, v in parts.items()},
            "best_rtt_tenth": {"rtt": q(rtt[best]), "real": q(real[best]),
                               "half_asym": q(half[best]),
                               "half_asym_model": q(half_model[best])}}


if __name__ == "__main__":
    raise SystemExit(main())
