"""The connection-event grid's CPU per notification, against the grid redrawing its whole
hull for every arrival it takes (how it was drawn before), measured in the same run.

Both grids are fed the same notifications: those of a simulated band (bench/bench_clock.py's
cells: polar-pmd and movesense, 3 simulated minutes, on the default and fast links), first the
grid alone (``EventGrid.add`` per arrival), then the whole band clock's ``observe`` per
notification (which re-times observations onto the grid once per bin). Each figure is the
best of ``--repeat`` runs, in microseconds per notification, with the ratio old / new. The
two grids must number every arrival alike and give the same grid values; the bench says so.

    .venv/bin/python bench/bench_band_grid.py [--minutes M] [--repeat R] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.clock.band import BandClock
from agent.clock.band_grid import EventGrid
from agent.clock.oneway import lower_hull
from agent.clock.window_hull import Point, WindowHull
from agent.sim.band_model import BandModel
from agent.wrist.decode import ImuChunk, make_decoder
from agent.wrist.timing import make_clock, observe, profile_latency
from bench.bench_clock import T0, Cell, band_params, cell_rate

CELLS = [("polar-pmd", "default"), ("polar-pmd", "fast"), ("movesense", "default"),
         ("movesense", "fast")]


class RedrawHull(WindowHull):
    """The window, its hull drawn anew from all its points at each change (the old way)."""

    def __init__(self) -> None:
        super().__init__()
        self._drawn: list[Point] = []

    def _redraw(self) -> None:
        self._drawn = lower_hull(list(self._pts))

    @property
    def hull(self) -> list[Point]:
        return self._drawn

    @property
    def sum_x(self) -> int:
        return sum(p[0] for p in self._pts)

    @sum_x.setter
    def sum_x(self, _v: int) -> None:
        pass

    def clear(self) -> None:
        self._pts.clear()
        self._drawn = []

    def push(self, p: Point) -> None:
        self._pts.append(p)
        self._redraw()

    def lower_last(self, y: int) -> None:
        self._pts[-1] = (self._pts[-1][0], y)
        self._redraw()

    def popleft(self) -> Point:
        gone = self._pts.popleft()
        self._redraw()
        return gone


def _old_grid() -> EventGrid:
    g = EventGrid()
    g._pts = RedrawHull()
    return g


def notifications(profile: str, link: str, minutes: float) -> list[ImuChunk]:
    c = Cell(profile, link, 1.0, 1, minutes)
    model = BandModel(band_params(c), T0)
    dec = make_decoder(profile, rate_hz=cell_rate(c))
    out: list[ImuChunk] = []
    t, end = T0, T0 + int(minutes * 60e9)
    while t < end:
        t += 10_000_000
        for d in model.deliveries_until(t):
            if d.exchange is None:
                out.extend(dec.feed(d.packet, d.host_ns))
    return out


def _grid_run(arrivals: list[int], old: bool) -> tuple[float, list[Any]]:
    g = _old_grid() if old else EventGrid()
    seen: list[Any] = []
    t0 = time.perf_counter()
    for a in arrivals:
        seen.append(g.add(a))
    dt = time.perf_counter() - t0
    # what the grid says: each arrival's event, and its values at the window's events
    seen.extend(g.value(k) for k in range(g.event(0) or 0, (g.event(-1) or 0) + 1))
    return dt, seen


def _clock_run(profile: str, chunks: list[ImuChunk], old: bool) -> tuple[float, Any]:
    clock: BandClock = make_clock(profile, cell_rate(Cell(profile, "default", 1.0, 1, 1)),
                                  profile_latency(profile))
    if old:
        clock._grid = _old_grid()
    t0 = time.perf_counter()
    for ch in chunks:
        observe(clock, ch)
    dt = time.perf_counter() - t0
    f = clock.fit
    return dt, (clock.retimed, f.refits, f.slope, f.map(chunks[-1].last_device_ns or 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for profile, link in CELLS:
        chunks = [ch for ch in notifications(profile, link, a.minutes)
                  if ch.device_t0_ns is not None]
        arrivals = [ch.first_arrival_ns if ch.first_arrival_ns is not None else ch.arrival_ns
                    for ch in chunks]
        best: dict[str, float] = {}
        same = True
        for _ in range(a.repeat):
            for old in (True, False):
                dt, seen = _grid_run(arrivals, old)
                dc, fit = _clock_run(profile, chunks, old)
                tag = "old" if old else "new"
                best[f"grid_{tag}"] = min(best.get(f"grid_{tag}", 1e9), dt)
                best[f"clock_{tag}"] = min(best.get(f"clock_{tag}", 1e9), dc)
                if old:
                    ref = (seen, fit)
                else:
                    same = same and (seen, fit) == ref
        n = len(chunks)
        rows.append({
            "profile": profile, "link": link, "notifications": n, "identical": same,
            "grid_old_us": 1e6 * best["grid_old"] / n, "grid_new_us": 1e6 * best["grid_new"] / n,
            "grid_ratio": best["grid_old"] / best["grid_new"],
            "observe_old_us": 1e6 * best["clock_old"] / n,
            "observe_new_us": 1e6 * best["clock_new"] / n,
            "observe_ratio": best["clock_old"] / best["clock_new"],
        })
    if a.json:
        print(json.dumps({"minutes": a.minutes, "repeat": a.repeat, "cells": rows}, indent=1))
        return 0
    print(f"{a.minutes:g} simulated min per cell, best of {a.repeat}; us per notification; "
          "old = the hull redrawn from every point at each arrival taken")
    print(f"{'profile':10} {'link':8} {'notes':>6} | {'grid old':>8} {'new':>6} {'ratio':>6} | "
          f"{'observe old':>11} {'new':>6} {'ratio':>6} | outputs")
    for r in rows:
        print(f"{r['profile']:10} {r['link']:8} {r['notifications']:6d} | "
              f"{r['grid_old_us']:8.1f} {r['grid_new_us']:6.1f} {r['grid_ratio']:5.1f}x | "
              f"{r['observe_old_us']:11.1f} {r['observe_new_us']:6.1f} "
              f"{r['observe_ratio']:5.1f}x | {'identical' if r['identical'] else 'DIFFER'}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
