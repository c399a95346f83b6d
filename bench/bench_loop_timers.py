"""When a sleeping coroutine wakes, relative to the instant it asked for: asyncio's loop
(the baseline) against uvloop, with ``asyncio.sleep`` and with the BLE loop's ``sleep_ns``
(``agent/wrist/ble_loop.py``), in turns.

    .venv/bin/python bench/bench_loop_timers.py [--sleeps N] [--rounds R] [--json]

Each sleep is for a random 5-99.5 ms (any fraction of a millisecond), asked from
inside a callback that ran a little work first (as the time requests' loop asks after
planning its next request). Prints the wake's lateness p1/p50/p99 in microseconds (negative:
early) for each, medians over the rounds. The aimed time requests were tuned on asyncio's
wake (late by up to a millisecond plus the scheduler's delay, never early); uvloop's own
``sleep`` wakes up to 1.5 ms early.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.wrist import ble_loop


def quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    n = len(xs)
    return {"p1": xs[n // 100], "p50": xs[n // 2], "p99": xs[min(n - 1, n * 99 // 100)]}


def one(kind: str, sleeper: Callable[[float], Awaitable[None]], n: int,
        rng: random.Random) -> dict[str, float]:
    loop: asyncio.AbstractEventLoop
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    late: list[float] = []

    async def main() -> None:
        for _ in range(n):
            wait_ns = rng.uniform(0.005, 0.0995) * 1e9
            x = 0
            for i in range(rng.randrange(200, 3000)):  # the work before the sleep
                x += i
            t0 = time.monotonic_ns()
            await sleeper(wait_ns)
            late.append((time.monotonic_ns() - t0 - wait_ns) / 1e3)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return quantiles(late)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sleeps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rng = random.Random(1)

    async def plain(ns: float) -> None:
        await asyncio.sleep(ns / 1e9)

    cases: list[tuple[str, str, Callable[[float], Awaitable[None]]]] = [
        ("asyncio loop, asyncio.sleep (baseline)", "asyncio", plain),
        ("asyncio loop, sleep_ns", "asyncio", ble_loop.sleep_ns),
        ("uvloop, asyncio.sleep", "uvloop", plain),
        ("uvloop, sleep_ns", "uvloop", ble_loop.sleep_ns)]
    got: dict[str, list[dict[str, float]]] = {c[0]: [] for c in cases}
    for _ in range(a.rounds):
        for name, kind, sleeper in cases:
            got[name].append(one(kind, sleeper, a.sleeps, rng))
    res: dict[str, Any] = {name: {q: round(statistics.median(r[q] for r in rs), 1)
                                  for q in ("p1", "p50", "p99")} for name, rs in got.items()}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"wake lateness after the asked instant, us (medians of {a.rounds} rounds of "
          f"{a.sleeps} sleeps; negative = early):")
    for name, q in res.items():
        print(f"  {name:40s} p1 {q['p1']:8.1f}  p50 {q['p50']:8.1f}  p99 {q['p99']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
