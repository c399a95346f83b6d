"""The cost of one ``ByteRing.push`` as the readers make it: one payload per wake, after a
sleep, with the caches cold (the BLE loop pushes a notification every ~7 ms, the serial
reader a read every ~12 ms). The baseline, in the same run, is ``agent/ring.py`` as it is at
``--ref`` (default ``main``), loaded from git; the two take turns.

    .venv/bin/python bench/bench_ring_push.py [--ref REF] [--pushes N] [--sleep-ms MS]
                                              [--rounds R] [--json]

Prints the median wall time of a push, cold (after ``--sleep-ms``) and warm (in a tight
loop), for both, and the ratios. Wall time, not thread CPU: the push never blocks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.ring import ByteRing

REPO = Path(__file__).resolve().parent.parent

META = [("arrival_ns", "<i8"), ("ticket", "<u8")]  # the wrist and MCU sources' META_DTYPE


def ring_at(ref: str) -> Any:
    """``agent/ring.py`` as it is at git ``ref``, as a module."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:agent/ring.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="wearcap-ring-")) / "ring_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ring_ref", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one(cls: Any, pushes: int, sleep_s: float) -> float:
    """Median ns of a push (each after ``sleep_s``; 0: a tight loop)."""
    ring = cls(1 << 20, 1 << 14, META)
    data = bytes(46)  # an open-profile notification's size
    t = time.perf_counter_ns
    out = []
    for i in range(pushes):
        if sleep_s:
            time.sleep(sleep_s)
        t0 = t()
        ring.push(data, (1_700_000_000_000_000_000 + i, i))
        out.append(t() - t0)
        if len(ring) > 64:
            ring.pop_all()
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="main", help="the baseline's git ref")
    ap.add_argument("--pushes", type=int, default=400)
    ap.add_argument("--sleep-ms", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    base = ring_at(a.ref).ByteRing
    res: dict[str, Any] = {"ref": a.ref}
    for mode, sleep_s in (("cold", a.sleep_ms / 1e3), ("warm", 0.0)):
        new, old = [], []
        for _ in range(a.rounds):
            old.append(one(base, a.pushes, sleep_s))
            new.append(one(ByteRing, a.pushes, sleep_s))
        n, o = statistics.median(new), statistics.median(old)
        res[mode] = {"push_us": round(n / 1e3, 2), "ref_us": round(o / 1e3, 2),
                     "ratio": round(n / o, 3)}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    for mode in ("cold", "warm"):
        r = res[mode]
        print(f"{mode}: push {r['push_us']} us, {a.ref} {r['ref_us']} us -> ratio {r['ratio']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
