"""``wearcap inspect --plot F.png``: one picture of what segments hold, on one time axis.

``plot_data(files)`` gathers what is drawn (plain data, which the tests check); ``plot`` draws
it. Panels, top to bottom, sharing the time axis:

1. streams: one row of ticks per stream (one per frame / sample / message); every reported gap
   as a red bar on its stream's row *and* on the "reported gaps" row (a gap of every stream,
   e.g. a damaged chunk, spans all rows); unreported holes (intervals over 1.5x the stream's
   median that no gap covers) as orange marks; pauses, discards and annotations as labelled
   violet lines; segment starts as dotted lines, labelled ``seq N`` on staggered lines so that
   labels of many short segments do not overlap (every k-th is labelled when they would);
2. rates over time: samples per second of each stream in 1 s bins;
3. the interval before each sample (log scale);
4. IMU traces: acceleration magnitude per band, m/s^2;
5. clock fits: residual of each hull observation to its fit line, with the fit's error bound.

Below them, one sample-interval histogram per stream. A warning goes into the title when two
files share a segment id. matplotlib is an optional extra (``pip install 'wearcap[plot]'``),
imported only here.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import UsageError
from agent.export.streams import EVENT_TOPICS, events
from agent.inspect import GAP_FACTOR, Streams
from agent.record.schemas import FRAMES_TOPIC, VIDEO_TOPIC
from agent.sources import GAP_TOPIC

GAPS_ROW = "reported gaps"
MAX_LABELS = 24


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


@dataclass
class PlotData:
    """Everything the figure shows, in seconds since ``t0_ns`` (host timeline)."""

    t0_ns: int
    rows: list[str]
    ticks: dict[str, list[float]] = field(default_factory=dict)
    gap_bars: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per row: (start, width) of every reported gap drawn there."""
    holes: dict[str, list[float]] = field(default_factory=dict)
    """Per row: end of every unreported hole."""
    events: list[tuple[float, str]] = field(default_factory=list)
    segment_starts: list[tuple[float, str]] = field(default_factory=list)
    labels: list[tuple[float, int, str]] = field(default_factory=list)
    """(x, stagger level, text) of the segment labels drawn."""
    rates: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    intervals: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    histograms: dict[str, list[float]] = field(default_factory=dict)
    """Per stream: its intervals in ms."""
    imu: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    clock: dict[str, tuple[list[float], list[float], float]] = field(default_factory=dict)
    """Per source and segment: (x, residual us, bound us)."""
    reported: int = 0
    unreported: int = 0
    shared_ids: list[str] = field(default_factory=list)


def _rows(files: Sequence[Streams]) -> list[str]:
    topics = {t for s in files for t in s.times if t != GAP_TOPIC and t not in EVENT_TOPICS}
    first = [t for t in (VIDEO_TOPIC, FRAMES_TOPIC) if t in topics]
    return [*first, *sorted(topics - set(first)), GAPS_ROW]


def _events(s: Streams) -> list[tuple[int, str]]:
    return [(e.t_ns, f"{e.kind} {e.text}".strip() if e.source != GAP_TOPIC else
             f"{e.kind}: {e.text}" if e.text else e.kind) for e in events(s.segment)]


def _hull_residuals(fit: dict[str, Any]) -> tuple[list[int], list[float]] | None:
    try:
        hull = fit.get("hull") or []
        x0, y0, k = fit["ref_device_ns"], fit["ref_host_ns"], fit["slope"]
        lat = fit.get("latency_ns") or 0
        if not hull or k is None:
            return None
        ys = [int(y) for _, y in hull]
        res = [(y - (y0 + k * (x - x0) - lat)) / 1e3 for x, y in hull]
        return ys, res
    except (KeyError, TypeError, ValueError):
        return None


def plot_data(files: Sequence[Streams]) -> PlotData:
    rows = _rows(files)
    all_t = [t for s in files for ts in s.times.values() for t in (ts[0], ts[-1]) if ts]
    t0 = min(all_t) if all_t else 0
    pd = PlotData(t0, rows)

    def sec(ns: int) -> float:
        return (ns - t0) / 1e9

    merged: dict[str, list[int]] = {}
    ids: dict[str, int] = {}
    for s in files:
        for topic, ts in s.times.items():
            merged.setdefault(topic, []).extend(ts)
        sid = s.segment.id
        ids[sid] = ids.get(sid, 0) + 1
        starts = [ts[0] for ts in s.times.values() if ts]
        if starts:
            seq = s.segment.sequence
            flag = "" if s.complete else " (unfinished)"
            flag += " (damaged)" if s.segment.damage else ""
            pd.segment_starts.append((sec(min(starts)), f"seq {seq}{flag}"))
        for g in s.gaps:
            a, b = sec(g.start_ns), sec(g.end_ns)
            bar = (a, max(b - a, 0.02))
            targets = rows if g.stream == "*" else ([g.stream] if g.stream in rows else [])
            for row in {*targets, GAPS_ROW}:
                pd.gap_bars.setdefault(row, []).append(bar)
            pd.reported += 1
        pd.events += [(sec(t), text) for t, text in _events(s)]
        for name, fit in s.segment_fits().items():
            got = _hull_residuals(fit)
            if got is not None:
                key = f"{name} seq {s.segment.sequence}"
                bound = fit.get("error_bound_ns")
                pd.clock[key] = ([sec(y) for y in got[0]], got[1],
                                 float(bound) / 1e3 if bound is not None else float("nan"))
        for topic, imu in s.imu.items():
            xs, ys = pd.imu.setdefault(topic, ([], []))
            acc = imu.acc.astype(np.float64) * imu.acc_scale[:, None]
            acc[(imu.acc == -32768).any(axis=1)] = np.nan
            mag = np.sqrt((acc ** 2).sum(axis=1))
            step = max(1, len(mag) // 4000)
            xs += [sec(int(t)) for t in imu.host_ns[::step]]
            ys += mag[::step].tolist()
    pd.shared_ids = sorted(k for k, v in ids.items() if v > 1)
    for topic, ts in merged.items():
        if topic == GAP_TOPIC or topic in EVENT_TOPICS or not ts:
            continue
        ts.sort()
        xs = [sec(t) for t in ts]
        pd.ticks[topic] = xs
        if len(ts) >= 2:
            lo, hi = int(xs[0]), int(xs[-1]) + 1
            counts, edges = np.histogram(xs, bins=max(1, hi - lo), range=(lo, hi))
            pd.rates[topic] = ((edges[:-1] + 0.5).tolist(), counts.astype(float).tolist())
        if len(ts) < 3:
            continue
        d = [(b - a) / 1e6 for a, b in itertools.pairwise(ts)]
        typical = statistics.median(d) or statistics.median([v for v in d if v > 0] or [0])
        pd.histograms[topic] = d
        if not (topic == VIDEO_TOPIC and FRAMES_TOPIC in merged):  # same times: draw once
            pd.intervals[topic] = (xs[1:], d)
        gs = [g for s in files for g in s.gaps]
        holes = [xs[i + 1] for i, v in enumerate(d) if typical and v > GAP_FACTOR * typical
                 and not any(g.covers(topic, ts[i], ts[i + 1]) for g in gs)]
        if holes:
            pd.unreported += len(holes)
            pd.holes[topic] = holes
    pd.labels = _stagger(pd.segment_starts, (all_t and (max(all_t) - t0) / 1e9) or 1.0)
    return pd


def _stagger(starts: list[tuple[float, str]], span: float) -> list[tuple[float, int, str]]:
    """Labels on three staggered lines; with more segments than MAX_LABELS, every k-th."""
    if not starts:
        return []
    k = max(1, -(-len(starts) // MAX_LABELS))
    min_dx = span / MAX_LABELS * 3  # labels on one line at least this far apart
    out: list[tuple[float, int, str]] = []
    last: dict[int, float] = {}
    for i, (x, text) in enumerate(sorted(starts)):
        if i % k:
            continue
        level = next((lv for lv in range(3) if x - last.get(lv, -1e18) >= min_dx), None)
        if level is None:
            continue
        last[level] = x
        out.append((x, level, text))
    return out


def plot(files: Sequence[Streams], out: Path) -> Path:
    from matplotlib.figure import Figure

    pd = plot_data(files)
    rows = pd.rows
    hist_topics = list(pd.histograms)
    nh = max(1, len(hist_topics))
    h_rows = 0.8 + 0.45 * len(rows)
    fig = Figure(figsize=(13, h_rows + 2.2 * 4 + 2.4), layout="constrained")
    grid = fig.add_gridspec(6, nh, height_ratios=[h_rows, 2.2, 2.2, 2.2, 2.2, 2.4])
    top = fig.add_subplot(grid[0, :])
    axes = [top] + [fig.add_subplot(grid[i, :], sharex=top) for i in range(1, 5)]
    rate_ax, iv_ax, imu_ax, clk_ax = axes[1:]
    colors = {r: f"C{i % 10}" for i, r in enumerate(rows)}
    y = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    for x, _ in pd.segment_starts:
        for ax in axes:
            ax.axvline(x, color="0.5", ls=":", lw=1)
    for x, level, text in pd.labels:
        top.annotate(text, (x, 1), xycoords=("data", "axes fraction"),
                     xytext=(3, -2 - 10 * level), textcoords="offset points", va="top",
                     fontsize=7, color="0.3")
    for row, bars in pd.gap_bars.items():
        top.broken_barh(bars, (y[row] - 0.45, 0.9), color="red", alpha=0.5, lw=0,
                        label="reported gap" if row == GAPS_ROW else None)
    for topic, xs in pd.ticks.items():
        top.eventplot([xs], lineoffsets=y[topic], linelengths=0.7, linewidths=0.6,
                      colors=colors[topic])
    for topic, xs in pd.holes.items():
        top.plot(xs, [y[topic]] * len(xs), "v", color="darkorange", ms=6)
    for x, text in pd.events:
        for ax in axes:
            ax.axvline(x, color="darkviolet", lw=1.2)
        top.annotate(text, (x, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                     textcoords="offset points", fontsize=7, color="darkviolet", rotation=90)
    top.set_yticks([y[r] for r in rows], rows, fontsize=8)
    top.set_ylim(-0.7, len(rows) - 0.3)
    top.set_title(_title(files, pd), fontsize=10)
    top.grid(axis="x", color="0.9")
    for topic, (xs, ys) in pd.rates.items():
        rate_ax.step(xs, ys, where="mid", color=colors.get(topic, "k"), lw=1, label=topic)
    rate_ax.set_ylabel("per second")
    if pd.rates:
        rate_ax.legend(fontsize=7, loc="upper right")
    for topic, (xs, ys) in pd.intervals.items():
        iv_ax.plot(xs, ys, ".", ms=2.5, color=colors.get(topic, "k"),
                   label=_label(topic, statistics.median(ys)))
    if pd.intervals:
        iv_ax.set_yscale("log")
        _plain_log_ticks(iv_ax)
        iv_ax.legend(fontsize=7, loc="upper right", markerscale=3)
    iv_ax.set_ylabel("interval before (ms)")
    iv_ax.grid(True, which="both", color="0.92")
    for topic, (xs, ys) in pd.imu.items():
        imu_ax.plot(xs, ys, lw=0.6, color=colors.get(topic, "k"), label=topic)
    imu_ax.set_ylabel("|acc| m/s²")
    if pd.imu:
        imu_ax.legend(fontsize=7, loc="upper right")
    else:
        imu_ax.text(0.5, 0.5, "no IMU stream", transform=imu_ax.transAxes, ha="center")
    for i, (key, (xs, res, bound)) in enumerate(sorted(pd.clock.items())):
        c = f"C{i % 10}"
        clk_ax.plot(xs, res, ".", ms=3, color=c, label=f"{key} (bound {bound:.0f} us)")
        if xs and bound == bound:
            clk_ax.fill_between([min(xs), max(xs)], -bound, bound, color=c, alpha=0.12)
    clk_ax.set_ylabel("clock fit residual (us)")
    if pd.clock:
        clk_ax.legend(fontsize=7, loc="upper right")
    else:
        clk_ax.text(0.5, 0.5, "no clock fit in these segments", transform=clk_ax.transAxes,
                    ha="center")
    clk_ax.set_xlabel(f"seconds since {pd.t0_ns / 1e9:.3f} s on the host timeline "
                      "(CLOCK_MONOTONIC)")
    for i, topic in enumerate(hist_topics):
        ax = fig.add_subplot(grid[5, i])
        d = np.asarray(pd.histograms[topic])
        pos = d[d > 0]
        if pos.size:
            bins = np.geomspace(max(pos.min(), 1e-3), pos.max() * 1.01 + 1e-3, 40)
            ax.hist(pos, bins=bins.tolist(), color=colors.get(topic, "k"))
            ax.set_xscale("log")
        ax.set_title(topic, fontsize=7)
        ax.set_xlabel("interval ms", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.savefig(out, dpi=100)
    return out


def _plain_log_ticks(ax: Any) -> None:
    """1-2-3-5 ticks written as plain numbers (log scale would print 6x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _label(topic: str, typical_ms: float) -> str:
    return f"{topic} (median {typical_ms:.1f} ms)"


def _title(files: Sequence[Streams], pd: PlotData) -> str:
    ids = [s.segment.id for s in files]
    span = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]} ({len(ids)} files)"
    t = (f"{span}: {pd.reported} reported gap(s) (red), {pd.unreported} unreported hole(s) "
         f"(orange, interval over {GAP_FACTOR}x the stream's median), "
         f"{len(pd.events)} event(s) (violet)")
    if pd.shared_ids:
        t += f"\nWARNING: {len(pd.shared_ids)} segment id(s) in more than one file: " + \
            ", ".join(pd.shared_ids[:4])
    return t
