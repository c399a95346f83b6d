"""Where the BLE loop's and the serial reader's CPU goes, on the whole simulated rig: each
thread's own CPU time (``time.thread_time``) under cProfile, after a warm-up.

    .venv/bin/python bench/profile_capture_readers.py [-s SECONDS] [--warmup S]
                                                      [--interval-ms LO HI] [--top N]
                                                      [--thread ble-loop|mcu-serial|both]

Records in-process as bench/bench_capture_threads.py does (bench/rig.py). The profiler is
switched on inside each thread once the warm-up has passed (the BLE loop through
``call_soon_threadsafe``, the serial reader at its next read) and off before the rig stops,
so connection set-up and shutdown are left out. Prints, per thread, the functions with the
most own time and the most cumulative time, and the thread's CPU per input over the window
(notifications for the BLE loop, reads for the serial reader). cProfile's own overhead
inflates every figure (several-fold for tiny functions): read the shares, not the sums.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_capture_threads import inputs
from bench.rig import recording


def _patch_serial(profs: dict[str, cProfile.Profile], on: threading.Event,
                  off: threading.Event) -> Any:
    from agent.mcu.serial_port import SerialLink

    orig = SerialLink._read_once
    state = {"enabled": False}

    def read_once(self: Any) -> None:
        if on.is_set() and not state["enabled"]:
            prof = profs["mcu-serial"] = cProfile.Profile(time.thread_time)
            prof.enable()
            state["enabled"] = True
        if off.is_set() and state["enabled"]:
            profs["mcu-serial"].disable()
            state["enabled"] = False
            on.clear()
        orig(self)

    SerialLink._read_once = read_once  # type: ignore[method-assign]
    return orig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--interval-ms", type=float, nargs=2, metavar=("LO", "HI"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", choices=("ble-loop", "mcu-serial", "both"), default="both")
    a = ap.parse_args(argv)
    from agent.mcu.serial_port import SerialLink
    from agent.wrist import ble_loop

    profs: dict[str, cProfile.Profile] = {}
    on, off = threading.Event(), threading.Event()
    orig = SerialLink._read_once
    if a.thread in ("mcu-serial", "both"):
        _patch_serial(profs, on, off)
    try:
        with recording(a.warmup + a.seconds + 3,
                       interval_ms=tuple(a.interval_ms) if a.interval_ms else None) as rig:
            time.sleep(a.warmup)
            shared = ble_loop.current()
            done = threading.Event()
            if a.thread in ("ble-loop", "both") and shared is not None:
                prof = profs["ble-loop"] = cProfile.Profile(time.thread_time)
                shared.loop.call_soon_threadsafe(prof.enable)
            on.set()
            n0, t0 = inputs(rig), time.monotonic()
            time.sleep(a.seconds)
            n1, t1 = inputs(rig), time.monotonic()
            if "ble-loop" in profs and shared is not None:
                def stop() -> None:
                    profs["ble-loop"].disable()
                    done.set()

                shared.loop.call_soon_threadsafe(stop)
                done.wait(2.0)
            off.set()
            time.sleep(0.2)
    finally:
        SerialLink._read_once = orig  # type: ignore[method-assign]
    wall = t1 - t0
    rates = {k: (n1[k] - n0.get(k, 0)) / wall for k in n1}
    per = {"ble-loop": sum(v for k, v in rates.items() if k.endswith(" notifications")),
           "mcu-serial": sum(v for k, v in rates.items() if k.endswith(" reads"))}
    print("inputs per second: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    for name, prof in profs.items():
        st = pstats.Stats(prof, stream=(buf := io.StringIO()))
        total = st.total_tt  # type: ignore[attr-defined]
        n = per[name] * wall
        print(f"\n=== {name}: {total * 1e3:.0f} ms profiled CPU in {wall:.1f} s = "
              f"{total / wall * 100:.2f}% of a core (profiled), "
              f"{total / n * 1e6 if n else 0:.0f} us per input ({n:.0f} inputs)")
        st.sort_stats("tottime").print_stats(a.top)
        st.sort_stats("cumulative").print_stats(a.top)
        print(buf.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
