"""What the live status costs the capture: the status files the writer loop rewrites
(``capture.json`` once a second, the Prometheus textfile ``wearcap.prom`` every 5 s; on tmpfs).

    .venv/bin/python bench/bench_livestatus.py [-s SECONDS] [--warmup S] [--json]

Records in-process on the whole simulated rig as `wearcap run` does (bench/rig.py: camera, two
200 Hz wrist bands, the 1 kHz head MCU, the capture service with its status publisher), and
times, in the
writer thread's own CPU time (``time.thread_time_ns``), each part of a publication: building
the snapshot (``agent.progress.live_status``), the JSON file, the Prometheus textfile. The
baseline, measured in the same run over the same window, is the writer thread's whole CPU:
the figure is the status's share of it, and its share of one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rig import recording, thread_cpu


class Timed:
    """Wraps a function; adds the calling thread's CPU time while counting is on."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.ns, self.calls, self.on = fn, 0, 0, False

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t = time.thread_time_ns()
        try:
            return self.fn(*a, **kw)
        finally:
            if self.on:
                self.ns += time.thread_time_ns() - t
                self.calls += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from agent import capture, livestatus, progress

    build = Timed(progress.live_status)
    publish = Timed(livestatus.Publisher.publish)
    vars(capture)["live_status"] = build  # the name the writer loop calls
    prom_file = getattr(livestatus, "PromFile", None)
    if prom_file is not None:  # one registry kept across writes
        prom = Timed(prom_file.write)
        prom_file.write = lambda self, path, doc: prom(self, path, doc)
    else:  # a registry built per write (before PromFile)
        prom = Timed(livestatus.write_prometheus)
        vars(livestatus)["write_prometheus"] = prom
    livestatus.Publisher.publish = lambda self, doc: publish(self, doc)  # type: ignore[method-assign]

    with recording(a.warmup + a.seconds + 3) as rig:
        time.sleep(a.warmup)
        for t in (build, prom, publish):
            t.on = True
        c0, t0 = thread_cpu(), time.monotonic()
        time.sleep(a.seconds)
        c1, t1 = thread_cpu(), time.monotonic()
        for t in (build, prom, publish):
            t.on = False
        wid = rig.writer.native_id
    wall = t1 - t0
    writer_s = c1.get(wid or -1, 0.0) - c0.get(wid or -1, 0.0)
    status_ns = build.ns + publish.ns
    n = max(1, publish.calls)
    res: dict[str, Any] = {
        "seconds": round(wall, 1), "publications": publish.calls,
        "per_publication_ms": {"snapshot": round(build.ns / n / 1e6, 3),
                               "json_file": round((publish.ns - prom.ns) / n / 1e6, 3),
                               "prometheus_file": round(prom.ns / n / 1e6, 3),
                               "total": round(status_ns / n / 1e6, 3)},
        "status_pct_of_core": round(status_ns / 1e9 / wall * 100, 3),
        "writer_pct_of_core": round(writer_s / wall * 100, 2),
        "status_over_writer": round(status_ns / 1e9 / writer_s, 4) if writer_s else None,
    }
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        per = res["per_publication_ms"]
        print(f"{publish.calls} publications in {wall:.1f} s; each: snapshot "
              f"{per['snapshot']:.2f} ms + capture.json {per['json_file']:.2f} ms + "
              f"wearcap.prom {per['prometheus_file']:.2f} ms = {per['total']:.2f} ms of CPU")
        print(f"live status: {res['status_pct_of_core']:.2f}% of a core = "
              f"{res['status_over_writer']} of the writer loop's CPU "
              f"(baseline, same run: writer {res['writer_pct_of_core']:.2f}% of a core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
