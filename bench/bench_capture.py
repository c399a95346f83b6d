"""Capture service figures on the simulated rig, each against a baseline measured in this run.

    .venv/bin/python bench/bench_capture.py [-s SECONDS] [--json]
    .venv/bin/python bench/bench_capture.py --soak 3600 [--interval 10] [--ref HEAD] [--json]
    .venv/bin/python bench/bench_capture.py --breakdown | --micro [--json]

- CPU: the writer loop (the thread that polls the camera, drains sources, writes MCAP,
  checkpoints, rolls, seals) as % of one core, next to the encoder thread's CPU (the
  baseline: what the video encoder costs on this machine). Budget: writer <= 3% of a core
  at 30 fps.
- Cold start: spawn `wearcap run` -> READY=1 on NOTIFY_SOCKET (the first frame is written),
  against spawning `python -c "import agent"`. Budget: <= 1.5 s.
- RSS: peak and end of the recording process, against a bare python that imports numpy and
  av. Budget: <= 120 MB.
- Soak (``--soak S``): `wearcap run` on the whole simulated rig (camera, both wrist bands,
  60 s segments) for S seconds; its RSS is sampled every ``--interval`` seconds. Prints the
  baseline (the first sample after a warm-up of one segment), mid, end and peak, and the
  least-squares slope after the warm-up in MB/hour, over the whole run and over its second
  half. Budget: <= 120 MB and flat: the second-half slope within 1% of the baseline per
  hour (a leak keeps its slope; an allocator settling in flattens out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.trees import export_tree  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: str = "self") -> tuple[float, float]:
    vals = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) / 1024
    return vals["VmHWM"], vals["VmRSS"]


def write_config(tmp: Path, seconds: float) -> Path:
    cfg = tmp / "bench.toml"
    cfg.write_text(f'profile = "sim"\n[segment]\nseconds = {max(1.0, seconds / 2):g}\n'
                   "[spool]\nreserve_mb = 0\n")
    return cfg


def record_in_process(cfg_path: Path, spool: Path, seconds: float) -> dict[str, float]:
    from agent import config
    from agent.camera.open import open_camera
    from agent.capture import CaptureService, CaptureSettings
    from agent.record.spool import Spool
    from agent.timeline import monotonic_ns

    cfg = config.load(cfg_path)
    st = CaptureSettings(device_id=cfg.device.id, config_digest=cfg.digest(),
                         segment_seconds=cfg.segment.seconds,
                         chunk_seconds=cfg.segment.chunk_seconds,
                         chunk_bytes=cfg.segment.chunk_bytes, duration=seconds)
    camera = open_camera(cfg.camera, monotonic_ns)
    svc = CaptureService(st, Spool(spool, cfg.device.id), camera, [],
                         notify=lambda s: None, status=lambda s: None)
    main_tid = threading.get_native_id()
    cpu0, proc0 = thread_cpu_s(main_tid), time.process_time()
    t0 = time.monotonic()
    res = svc.run()
    wall = time.monotonic() - t0
    writer = thread_cpu_s(main_tid) - cpu0
    # Everything else in the process: the camera thread (decode, convert, encode) and the
    # encoder's own native threads. That is the baseline the writer is compared with.
    encoder = time.process_time() - proc0 - writer
    hwm, rss = rss_mb()
    return {"wall_s": wall, "frames": res.frames, "segments": len(res.sealed),
            "fps": res.frames / wall, "writer_cpu_s": writer,
            "writer_pct_core": 100 * writer / wall,
            "encoder_cpu_s": encoder, "encoder_pct_core": 100 * encoder / wall,
            "rss_peak_mb": hwm, "rss_end_mb": rss}


class Notify:
    """NOTIFY_SOCKET listener that, like systemd (NotifyAccess=main), hears only the main
    process: the simulated rig's D-Bus daemon inherits the socket and reports READY=1 too."""

    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / f"n-{uuid.uuid4().hex[:8]}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(30)

    def ready(self, pid: int) -> float:
        while True:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            sender = next((int.from_bytes(d[:4], sys.byteorder) for lvl, typ, d in anc
                           if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), -1)
            if sender == pid and "READY=1" in data.decode(errors="replace").split("\n"):
                return time.monotonic()

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


def cold_start(cfg: Path, tmp: Path, trials: int,
               seconds: float) -> tuple[list[float], list[float], list[float]]:
    """READY latency of `wearcap run` children (and their peak RSS, from wait4)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    starts, bases, peaks = [], [], []
    for i in range(trials):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import agent"], env=env, check=True, cwd=REPO)
        bases.append(time.monotonic() - t)
        n = Notify(tmp)
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg),
                              "--spool", str(tmp / f"cold{i}"), "--duration", f"{seconds:g}"],
                             env={**env, "NOTIFY_SOCKET": n.path}, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            starts.append(n.ready(p.pid) - t)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            peaks.append(ru.ru_maxrss / 1024)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            n.close()
    return starts, bases, peaks


def baseline_rss() -> float:
    code = ("import numpy, av\n"
            "print([int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return int(out) / 1024


SOAK_WARMUP_S = 70.0


def proc_status(pid: int) -> dict[str, float]:
    vals: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                vals[k] = int(v.split()[0]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    vals["cpu_s"] = (int(f[11]) + int(f[12])) / CLK_TCK
    return vals


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    if len(samples) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in samples)
    mv = statistics.fmean(v for _, v in samples)
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    return 3600 * sum((t - mt) * (v - mv) for t, v in samples) / den


def soak(seconds: float, interval: float, config: str | None, as_json: bool,
         ref: str | None = None) -> int:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        src = export_tree(ref, tmp / "src") if ref else REPO
        if not as_json:
            print(f"soak: `wearcap run` from {ref or 'the work tree'} for {seconds:g} s",
                  flush=True)
        cfg = Path(config) if config else tmp / "soak.toml"
        if not config:
            cfg.write_text('profile = "sim"\n[spool]\nreserve_mb = 0\n')
        spool = tmp / "spool"
        env = {**os.environ, "PYTHONPATH": str(src)}
        p = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg),
                              "--spool", str(spool), "--duration", f"{seconds:g}"],
                             env=env, cwd=src, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stdout or []), daemon=True)
        reader.start()
        t0 = time.monotonic()
        rows: list[dict[str, float]] = []
        try:
            while p.poll() is None:
                time.sleep(interval)
                try:
                    st = proc_status(p.pid)
                except (FileNotFoundError, ProcessLookupError, IndexError):
                    break
                if "VmRSS" not in st:  # exited, not yet reaped
                    break
                st["t_s"] = time.monotonic() - t0
                rows.append(st)
                if not as_json:
                    print(f"  t={st['t_s']:7.0f} s  rss {st['VmRSS']:6.1f} MB  anon "
                          f"{st['RssAnon']:6.1f}  file {st['RssFile']:5.1f}  cpu "
                          f"{st['cpu_s']:7.1f} s", flush=True)
        finally:
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=60)
            reader.join(timeout=5)
        sealed = len(list((spool / "sealed").glob("*.mcap")))
    steady = [r for r in rows if r["t_s"] >= SOAK_WARMUP_S] or rows
    if not steady:
        print("soak: no samples (the recording ended at once)", file=sys.stderr)
        print("".join(lines[-20:]), file=sys.stderr)
        return 1
    base, end = steady[0], steady[-1]
    mid = steady[len(steady) // 2]
    slope = slope_mb_per_hour([(r["t_s"], r["VmRSS"]) for r in steady])
    anon_slope = slope_mb_per_hour([(r["t_s"], r["RssAnon"]) for r in steady])
    # A leak keeps its slope; an allocator settling in (arenas, caches) flattens out.
    late = steady[len(steady) // 2:]
    late_slope = slope_mb_per_hour([(r["t_s"], r["VmRSS"]) for r in late])
    wall = rows[-1]["t_s"] - rows[0]["t_s"] if len(rows) > 1 else 0.0
    cpu_pct = 100 * (rows[-1]["cpu_s"] - rows[0]["cpu_s"]) / wall if wall else 0.0
    peak = max(r["VmHWM"] for r in rows)
    out: dict[str, Any] = {
        "seconds": round(rows[-1]["t_s"], 1), "samples": len(rows), "exit_code": p.returncode,
        "sealed_segments": sealed, "baseline_t_s": round(base["t_s"], 1),
        "rss_baseline_mb": round(base["VmRSS"], 2), "rss_mid_mb": round(mid["VmRSS"], 2),
        "rss_end_mb": round(end["VmRSS"], 2), "rss_peak_mb": round(peak, 2),
        "anon_baseline_mb": round(base["RssAnon"], 2), "anon_end_mb": round(end["RssAnon"], 2),
        "slope_mb_per_hour": round(slope, 3), "anon_slope_mb_per_hour": round(anon_slope, 3),
        "second_half_slope_mb_per_hour": round(late_slope, 3),
        "slope_vs_baseline_per_hour": round(slope / base["VmRSS"], 4),
        "end_vs_baseline": round(end["VmRSS"] / base["VmRSS"], 4),
        "process_cpu_pct_core": round(cpu_pct, 2),
        "within_budget": {"rss": peak <= 120,
                          "flat": abs(late_slope) <= 0.01 * base["VmRSS"]},
        "last_output": [ln.rstrip() for ln in lines[-3:]],
    }
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print(f"soak {out['seconds']:.0f} s, {len(rows)} samples, {sealed} sealed segments, "
              f"exit {p.returncode}")
        print(f"RSS  baseline {base['VmRSS']:.1f} MB (t={base['t_s']:.0f} s)  mid "
              f"{mid['VmRSS']:.1f}  end {end['VmRSS']:.1f}  peak {peak:.1f} (budget 120)")
        print(f"     slope {slope:+.2f} MB/h = {100 * out['slope_vs_baseline_per_hour']:+.2f}% "
              f"of baseline per hour (anon {anon_slope:+.2f} MB/h); end/baseline "
              f"{out['end_vs_baseline']:.3f}")
        print(f"     second half: slope {late_slope:+.2f} MB/h = "
              f"{100 * late_slope / base['VmRSS']:+.2f}% of baseline per hour "
              f"(flat: within 1%/h)")
        print(f"CPU  whole capture process {cpu_pct:.1f}% of a core (encoder included)")
    return 0 if p.returncode == 0 else 1


def writer_micro(frames_n: int = 3000, repeats: int = 3) -> dict[str, float]:
    """Writer cost per frame with no camera thread competing: real 720p H.264 access units
    (cycled, restamped at 30 fps) into a SegmentWriter on an in-memory stream, a checkpoint
    every 30 frames (fsync off). Baseline: the bytes alone (SHA-256 + zstd + copy), the least
    any writer must do with them."""
    import dataclasses
    import io

    import zstandard

    from agent.record.segment import SegmentHeader, SegmentWriter
    from tests.h264_frames import encode_frames

    src = encode_frames(60, width=1280, height=720)
    period = 33_333_333
    frames = [dataclasses.replace(src[i % len(src)], index=i,
                                  host_ts_ns=src[0].host_ts_ns + i * period,
                                  sensor_ts_ns=src[0].sensor_ts_ns + i * period)
              for i in range(frames_n)]
    best_w = best_b = float("inf")
    for _ in range(repeats):
        buf = io.BytesIO()
        w = SegmentWriter(buf, SegmentHeader("bench", 1, 0, "", "", None), sync=lambda: None)
        t = time.process_time()
        for i, f in enumerate(frames):
            w.write_frame(f)
            if i % 30 == 29:
                w.checkpoint()
        w.close()
        best_w = min(best_w, time.process_time() - t)
        out = io.BytesIO()
        t = time.process_time()
        import hashlib
        h = hashlib.sha256()
        for i in range(0, frames_n, 30):
            blob = b"".join(f.data for f in frames[i:i + 30])
            z = zstandard.compress(blob)
            h.update(z)
            out.write(z)
        best_b = min(best_b, time.process_time() - t)
    return {"writer_us_per_frame": 1e6 * best_w / frames_n,
            "bytes_only_us_per_frame": 1e6 * best_b / frames_n,
            "writer_vs_bytes_only": best_w / best_b,
            "writer_pct_core_at_30fps": 100 * 30 * best_w / frames_n}


def _status_mb() -> dict[str, float]:
    vals = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                vals[k] = int(v.split()[0]) / 1024
    return vals


def breakdown_child(cfg_path: str, seconds: float) -> None:
    """Runs in a fresh interpreter: RSS after each piece the capture process adds, in the
    order it adds them. Prints one JSON list of {step, rss, anon, file} (MB, cumulative)."""
    import gc
    import importlib

    steps: list[dict[str, Any]] = []

    def mark(name: str) -> None:
        gc.collect()
        steps.append({"step": name, **_status_mb()})

    mark("python (+ this harness)")
    importlib.import_module("numpy")
    mark("numpy")
    importlib.import_module("av")
    mark("av (FFmpeg libraries)")
    for m in ("msgpack", "zstandard", "mcap.writer", "mcap.stream_reader"):
        importlib.import_module(m)
    mark("mcap writer, zstd, msgpack")
    from agent import config
    from agent.capture import CaptureService  # noqa: F401
    from agent.record.segment import SegmentHeader, SegmentWriter

    cfg = config.load(cfg_path)
    mark("the capture code (agent.*)")
    if cfg.wrist:
        for m in ("bleak", "dbus_fast", "agent.wrist.source"):
            importlib.import_module(m)
        mark("wrist stack imports (bleak, dbus-fast)")
    from agent.camera.open import open_camera
    from agent.timeline import monotonic_ns

    cam = open_camera(cfg.camera, monotonic_ns)  # the ring's bytearray is zero-filled now
    mark(f"frame ring ({cfg.camera.ring_bytes / 2**20:g} MiB)")
    from agent import heap

    heap.pin_mmap_threshold()  # as CaptureService.run does before it starts the camera
    cam.start()
    mark(f"camera open: input + encoder {cfg.camera.width}x{cfg.camera.height}")
    frames = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cam.wait(0.1)
        frames += cam.poll(64)
    cam.stop()
    mark(f"camera {seconds:g} s running (encoder buffers, frames kept for the writer)")
    with tempfile.TemporaryDirectory() as td:
        for seg in range(2):
            with open(Path(td) / f"s{seg}.mcap", "wb") as fh:
                w = SegmentWriter(fh, SegmentHeader("bench", seg, seg - 1, "", "", None))
                for i, f in enumerate(frames):
                    w.write_frame(f)
                    if i % round(cfg.camera.fps * cfg.segment.chunk_seconds) == 0:
                        w.checkpoint()
                w.close()
    del w
    mark(f"writer: 2 segments of those {len(frames)} frames (chunks, zstd, indexes)")
    print(json.dumps(steps))


def breakdown(config: str | None, seconds: float, as_json: bool) -> int:
    with tempfile.TemporaryDirectory() as td:
        cfg = Path(config) if config else Path(td) / "sim.toml"
        if not config:
            cfg.write_text('profile = "sim"\n')
        out = subprocess.run([sys.executable, __file__, "--breakdown-child", str(cfg),
                              "-s", f"{seconds:g}"], capture_output=True, text=True,
                             cwd=REPO, check=False)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    rows = [{"step": st["step"], "rss_mb": round(st["VmRSS"], 1),
             "delta_mb": round(st["VmRSS"] - (steps[i - 1]["VmRSS"] if i else 0.0), 1),
             "delta_anon_mb": round(st["RssAnon"] - (steps[i - 1]["RssAnon"] if i else 0.0),
                                    1),
             "delta_file_mb": round(st["RssFile"] - (steps[i - 1]["RssFile"] if i else 0.0),
                                    1)}
            for i, st in enumerate(steps)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'RSS of the capture process, piece by piece':66s} {'+MB':>6s} {'anon':>6s} "
          f"{'file':>6s} {'total':>6s}")
    for r in rows:
        print(f"{r['step']:66s} {r['delta_mb']:6.1f} {r['delta_anon_mb']:6.1f} "
              f"{r['delta_file_mb']:6.1f} {r['rss_mb']:6.1f}")
    print("(file: shared-library pages, shared with other processes; anon: this process's)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=60.0, help="recording length")
    ap.add_argument("--trials", type=int, default=3, help="cold-start trials")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--soak", type=float, metavar="S",
                    help="instead: record S seconds on the simulated rig, sampling RSS")
    ap.add_argument("--interval", type=float, default=10.0, help="soak sampling period")
    ap.add_argument("--config", help="soak: config to record with (default: the sim rig)")
    ap.add_argument("--ref", help="soak: run the code committed at this git ref (a clean "
                    "copy), not the work tree")
    ap.add_argument("--micro", action="store_true",
                    help="instead: writer cost per frame, no camera thread competing")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: RSS piece by piece (imports, ring, encoder, writer)")
    ap.add_argument("--breakdown-child", metavar="CFG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.breakdown_child:
        breakdown_child(args.breakdown_child, min(args.seconds, 10.0))
        return 0
    if args.breakdown:
        return breakdown(args.config, min(args.seconds, 10.0), args.json)
    if args.soak:
        return soak(args.soak, args.interval, args.config, args.json, args.ref)
    if args.micro:
        m = writer_micro()
        if args.json:
            print(json.dumps({k: round(v, 3) for k, v in m.items()}, indent=2))
        else:
            print(f"writer       {m['writer_us_per_frame']:.0f} us/frame "
                  f"({m['writer_pct_core_at_30fps']:.2f}% of a core at 30 fps); the bytes "
                  f"alone {m['bytes_only_us_per_frame']:.0f} us/frame -> "
                  f"{m['writer_vs_bytes_only']:.2f}x")
        return 0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        cfg = write_config(tmp, args.seconds)
        starts, bases, peaks = cold_start(cfg, tmp, args.trials, min(args.seconds, 10.0))
        rec = record_in_process(cfg, tmp / "spool", args.seconds)
    base_rss = baseline_rss()
    cold, base = statistics.median(starts), statistics.median(bases)
    out = {
        **{k: round(v, 4) for k, v in rec.items()},
        "writer_vs_encoder": round(rec["writer_cpu_s"] / max(rec["encoder_cpu_s"], 1e-9), 4),
        "cold_start_s": round(cold, 3), "baseline_import_s": round(base, 3),
        "cold_start_vs_import": round(cold / base, 2),
        "baseline_rss_mb": round(base_rss, 1),
        "run_child_rss_peak_mb": round(max(peaks), 1),
        "rss_peak_vs_baseline": round(max(peaks) / base_rss, 2),
        "budgets": {"writer_pct_core": 3.0, "cold_start_s": 1.5, "rss_mb": 120},
        "within_budget": {
            "cpu": rec["writer_pct_core"] <= 3.0, "cold_start": cold <= 1.5,
            "rss": max(peaks) <= 120 and rec["rss_peak_mb"] <= 120},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"recorded {rec['frames']:.0f} frames in {rec['wall_s']:.1f} s "
          f"({rec['fps']:.1f} fps, {rec['segments']:.0f} segments)")
    print(f"writer CPU   {rec['writer_pct_core']:.2f}% of a core (budget 3%); camera+encoder "
          f"{rec['encoder_pct_core']:.1f}% -> writer/encoder = {out['writer_vs_encoder']:.3f}")
    print(f"cold start   {cold:.2f} s to READY (budget 1.5 s); `import agent` {base:.2f} s "
          f"-> {out['cold_start_vs_import']:.1f}x")
    print(f"RSS          `wearcap run` peak {max(peaks):.0f} MB; in-process recording peak "
          f"{rec['rss_peak_mb']:.0f} MB, end {rec['rss_end_mb']:.0f} MB (budget 120); "
          f"python+numpy+av {base_rss:.0f} MB -> {out['rss_peak_vs_baseline']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
