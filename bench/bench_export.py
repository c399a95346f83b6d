"""Export speed per target as a multiple of real time, beside ``ffmpeg -c copy`` of the same
video stream (the baseline, measured in the same run).

A recording is made on the simulated rig with the real recorder (``wearcap run``: 1280x720
30 fps H.264, two 200 Hz wrist bands and the 1 kHz head MCU, by default), then each target
is exported from it in a child process, as a user runs it. The baseline muxes the same
H.264 elementary stream into MP4 with ``ffmpeg -c copy`` (frame rate given, no timestamps:
less work than the export does). Figures: recording seconds / wall seconds (x real time)
and the ratio to the baseline.

    .venv/bin/python bench/bench_export.py [--seconds 20] [--spool DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGETS: list[tuple[str, list[str]]] = [("foxglove", []), ("mp4", []),
                                        ("lerobot", []), ("lerobot", ["--copy-video"])]


def _wearcap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, cwd=REPO, check=False, timeout=3600)


def record(seconds: float, spool: Path) -> None:
    r = _wearcap("run", "--duration", str(seconds), "--spool", str(spool))
    if r.returncode != 0:
        raise SystemExit(f"recording failed: {r.stderr[-2000:]}")


def recorded_seconds(spool: Path) -> tuple[float, Path]:
    """(span of the recorded frames in seconds, the H.264 elementary stream on disk)."""
    from agent.export.mp4 import _video_data
    from agent.export.reader import read_segment
    from agent.export.streams import frames, video_records

    first = last = None
    es = spool / "stream.h264"
    with es.open("wb") as fh:
        for p in sorted((spool / "sealed").glob("*.mcap")):
            seg = read_segment(p)
            fr = frames(seg)
            if fr is not None and len(fr):
                a, b = int(fr.host_ns[0]), int(fr.host_ns[-1])
                first = a if first is None else min(first, a)
                last = b if last is None else max(last, b)
            for _, data in video_records(seg):
                fh.write(_video_data(data))
    if first is None or last is None:
        raise SystemExit("no frames recorded")
    return (last - first) / 1e9 + 1 / 30, es


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the recording")
    ap.add_argument("--spool", type=Path, help="export this spool instead of recording one")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    spool = a.spool or tmp / "spool"
    if a.spool is None:
        record(a.seconds, spool)
    span, es = recorded_seconds(spool)
    base = timed(["ffmpeg", "-v", "error", "-y", "-f", "h264", "-r", "30", "-i", str(es),
                  "-c", "copy", str(tmp / "baseline.mp4")])
    rows: list[dict[str, Any]] = [{"target": "ffmpeg -c copy (baseline)", "seconds": base,
                                   "x_realtime": span / base, "vs_baseline": 1.0}]
    for target, extra in TARGETS:
        out = tmp / f"out-{target}{'-copy' if extra else ''}"
        dt = timed([sys.executable, "-m", "agent", "export", str(spool), "--to", target,
                    str(out), *extra])
        rows.append({"target": " ".join([target, *extra]), "seconds": dt,
                     "x_realtime": span / dt, "vs_baseline": base / dt})
    res = {"recording_s": span, "results": rows}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"recording: {span:.1f} s of the simulated rig (1280x720 30 fps video, two 200 Hz "
              "wrist bands, the 1 kHz head MCU)")
        print(f"{'target':32} {'wall s':>8} {'x real time':>12} {'speed vs baseline':>18}")
        for r in rows:
            print(f"{r['target']:32} {r['seconds']:8.2f} {r['x_realtime']:12.1f} "
                  f"{r['vs_baseline']:18.3f}")
        print("(each export includes starting Python and reading every chunk with its CRC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
