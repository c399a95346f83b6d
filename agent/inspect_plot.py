"""``wearcap inspect --plot F.png``: one picture of what segments hold, on one time axis.

Top: every stream as a row of ticks (one per message; one per frame for the frame timing),
reported gaps as red bars on their stream's row (or on the gaps row when the stream names a
device rather than a topic), long intervals (over 1.5x the stream's median) as orange marks
(a reported loss shows there too), segment starts as dotted lines. Bottom: the interval
before each message (log scale, so 5 ms IMU batches and 33 ms frames read on one axis).

matplotlib is an optional extra (``pip install 'wearcap[plot]'``), imported only here.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from agent.inspect import GAP_FACTOR, Streams
from agent.record.schemas import FRAMES_TOPIC, VIDEO_TOPIC
from agent.sources import GAP_TOPIC

GAPS_ROW = "reported gaps"


def check_target(path: str) -> Path:
    """Fail before any reading: matplotlib missing, a format it cannot write, no directory."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib, which is not installed: "
                         "pip install 'wearcap[plot]'") from exc
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower()
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise UsageError(f"--plot {path}: cannot write {fmt or 'a file without a suffix'}; "
                         f"use one of {', '.join(sorted(supported))}")
    if not out.parent.is_dir():
        raise UsageError(f"--plot {path}: no such directory {out.parent}")
    return out


def _rows(files: Sequence[Streams]) -> list[str]:
    topics = {t for s in files for t in s.times if t != GAP_TOPIC}
    first = [t for t in (VIDEO_TOPIC, FRAMES_TOPIC) if t in topics]
    return [*first, *sorted(topics - set(first)), GAPS_ROW]


def plot(files: Sequence[Streams], out: Path) -> Path:
    from matplotlib.figure import Figure

    rows = _rows(files)
    all_t = [t for s in files for ts in s.times.values() for t in (ts[0], ts[-1]) if ts]
    t0 = min(all_t) if all_t else 0

    def sec(ns: int) -> float:
        return (ns - t0) / 1e9

    fig = Figure(figsize=(12, 2.2 + 0.45 * len(rows) + 3.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True,
                               height_ratios=[0.6 + 0.45 * len(rows), 3.2])
    colors = {r: f"C{i % 10}" for i, r in enumerate(rows)}
    y = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    silent = reported = 0
    merged: dict[str, list[int]] = {}
    for s in files:
        for topic, ts in s.times.items():
            merged.setdefault(topic, []).extend(ts)
        seq = s.metadata.get("wearcap.segment", {}).get("sequence", "?")
        starts = [ts[0] for ts in s.times.values() if ts]
        if starts:
            x = sec(min(starts))
            top.axvline(x, color="0.5", ls=":", lw=1)
            bottom.axvline(x, color="0.5", ls=":", lw=1)
            flag = "" if s.complete else " (unfinished)"
            top.annotate(f"seq {seq}{flag}", (x, 1), xycoords=("data", "axes fraction"),
                         xytext=(3, -2), textcoords="offset points", va="top", fontsize=8,
                         color="0.3")
        for g in s.gaps:
            row = g["stream"] if g["stream"] in y else GAPS_ROW
            a, b = sec(int(g["start_ns"])), sec(int(g["end_ns"]))
            top.broken_barh([(a, max(b - a, 0.02))], (y[row] - 0.45, 0.9), color="red",
                            alpha=0.5, lw=0)
            reported += 1
    for topic, ts in merged.items():
        if topic == GAP_TOPIC or not ts:
            continue
        ts.sort()
        xs = [sec(t) for t in ts]
        top.eventplot([xs], lineoffsets=y[topic], linelengths=0.7, linewidths=0.6,
                      colors=colors[topic])
        if len(ts) < 3:
            continue
        d = [(b - a) / 1e6 for a, b in itertools.pairwise(ts)]
        typical = statistics.median(d)
        if not (topic == VIDEO_TOPIC and FRAMES_TOPIC in merged):  # same times: draw once
            bottom.plot(xs[1:], d, ".", ms=2.5, color=colors[topic],
                        label=_label(topic, typical))
        holes = [(x, v) for x, v in zip(xs[1:], d, strict=True) if v > GAP_FACTOR * typical]
        if holes:
            silent += len(holes)
            top.plot([x for x, _ in holes], [y[topic]] * len(holes), "v", color="darkorange",
                     ms=6)
    top.set_yticks([y[r] for r in rows], rows, fontsize=8)
    top.set_ylim(-0.7, len(rows) - 0.3)
    top.set_title(_title(files, reported, silent), fontsize=10)
    top.grid(axis="x", color="0.9")
    bottom.set_yscale("log")
    _plain_log_ticks(bottom)
    bottom.set_ylabel("interval before message (ms)")
    bottom.set_xlabel(f"seconds since {t0 / 1e9:.3f} s on the host timeline "
                      "(CLOCK_MONOTONIC)")
    bottom.grid(True, which="both", color="0.92")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize=8, loc="upper right", markerscale=3)
    fig.savefig(out, dpi=110)
    return out


def _plain_log_ticks(ax: Any) -> None:
    """1-2-3-5 ticks written as plain numbers (log scale would print 6x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _label(topic: str, typical_ms: float) -> str:
    return f"{topic} (median {typical_ms:.1f} ms)"


def _title(files: Sequence[Streams], reported: int, silent: int) -> str:
    ids: list[Any] = [s.metadata.get("wearcap.segment", {}).get("segment_id", s.path.name)
                      for s in files]
    span = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]} ({len(ids)} files)"
    return (f"{span}: {reported} reported gap(s) (red), {silent} interval(s) over "
            f"{GAP_FACTOR}x their stream's median (orange)")
