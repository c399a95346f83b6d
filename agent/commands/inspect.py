"""wearcap inspect PATH...: what is in a segment: streams, rates, gaps, frame timing, integrity.

Every file is reported, readable or not: a file that cannot be read gets an error line (and an
``error`` entry in ``--json``) and the others are still listed. Exit 0 when every file is
intact or merely unfinished; exit 2 when a file is unreadable or has a chunk that failed its
CRC.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.inspect import SegmentReport, StreamReport

HELP = "show what is in segments: streams, sample counts and rates, gaps, frame timing, damage"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="segment files (.mcap, also unfinished .mcap.part), directories of "
                   "them, or a spool directory (its sealed/ and active/ are read)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="F.png", help="also draw streams, rates, intervals, "
                   "gaps, IMU traces and clock fits of all PATHs into F (needs the plot extra)")


def _ts(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e9:.3f}"


def _gaps_cell(st: StreamReport) -> str:
    if not st.reported_gaps:
        return "none"
    lost = f"{st.reported_lost} lost"
    if st.uncounted_gaps:
        lost += f" + {st.uncounted_gaps} uncounted"
    return f"{st.reported_gaps} ({lost})"


def _render(rep: SegmentReport, con: Any) -> None:
    from rich.table import Table

    flags = []
    if rep.recovered:
        flags.append("[yellow]recovered after a crash[/]")
    if rep.damaged_chunks:
        flags.append(f"[red]DAMAGED: {rep.damaged_chunks} chunk(s) failed their CRC and were "
                     "skipped[/]")
    if not rep.complete:
        flags.append("[red]unfinished (no closing records)[/]")
    if rep.previous_sequence is None:
        chain = "first of its chain"
    else:
        chain = f"follows seq {rep.previous_sequence}"
        if rep.previous_sha256:
            chain += f" (sha256 {rep.previous_sha256[:12]}…)"
    con.print(f"[bold]{rep.id}[/]  seq {rep.sequence if rep.sequence is not None else '?'}, "
              f"{chain}  {rep.duration_s:.2f} s  {rep.frames} frames  " + "  ".join(flags))
    t = Table(show_edge=False, pad_edge=False, collapse_padding=True)
    cols = ("stream", "count", "rate Hz", "start s", "end s", "reported gaps",
            "unreported holes", "interval ms p50/p99/max")
    for col in cols:
        t.add_column(col, justify="left" if col == "stream" else "right", no_wrap=True)
    for topic, st in rep.streams.items():
        iv = st.interval_ms
        count = f"{st.count} {st.unit}"
        if st.messages != st.count:
            count += f" in {st.messages} msgs"
        holes = str(st.unreported_holes) if iv else "-"
        if st.unreported_holes:
            holes = f"[red]{holes}[/]"
        t.add_row(topic, count, f"{st.rate_hz:.2f}", _ts(st.first_ns), _ts(st.last_ns),
                  _gaps_cell(st), holes,
                  f"{iv['p50']:.1f}/{iv['p99']:.1f}/{iv['max']:.1f}" if iv else "-")
    con.print(t)
    for topic, st in rep.streams.items():
        if st.sample_index_jumps:
            con.print(f"  {topic}: {st.sample_index_jumps} sample number(s) skipped")
        if st.missing_values:
            con.print(f"  {topic}: {st.missing_values} axis value(s) with no measurement")
        if st.strobes:
            _strobe_line(con, st.strobes)
        if st.band:
            _band_line(con, topic, st.band, st.gap_causes)
        if st.events:
            con.print("  events: " + ", ".join(f"{e.get('kind')} {_ts(e.get('host_ns'))} s"
                                               for e in st.events[:20]))
    if rep.frame_index_jumps:
        con.print(f"[red]frame index jumps: {len(rep.frame_index_jumps)}[/] "
                  + ", ".join(f"{j['after']}->{j['next']}" for j in rep.frame_index_jumps[:8]))
    for g in rep.gaps[:20]:
        lost = "unknown count" if g["lost"] < 0 else f"{g['lost']} lost"
        con.print(f"  gap {g['stream']}: {g['cause']}, {lost}, "
                  f"{_ts(g['start_ns'])}..{_ts(g['end_ns'])} s")
    if len(rep.gaps) > 20:
        con.print(f"  ... and {len(rep.gaps) - 20} more gaps (--json lists all)")
    con.print()


def _band_line(con: Any, topic: str, b: dict[str, Any], causes: dict[str, int]) -> None:
    """A wrist band: the bound it claimed, what it refused, its slews, its gaps by cause."""
    bd = b.get("claimed_bound_ns")
    line = f"  {topic}: bound claimed "
    line += (f"p50 {bd['p50'] / 1e6:.3f} ms, max {bd['max'] / 1e6:.3f} ms" if bd else "none")
    if b.get("latency"):
        line += f" (latency {', '.join(b['latency'])})"
    ex = b.get("time_exchange")
    if ex and ex.get("latency_upper_ns") is not None:
        line += f"; time exchange: latency <= {ex['latency_upper_ns'] / 1e6:.3f} ms"
    if b.get("notify_path"):
        line += f"; notifications by {b['notify_path']}"
        if b.get("notify_fallback"):
            line += f" ({b['notify_fallback']})"
    con.print(line)
    for stream, reason in sorted((b.get("refused") or {}).items()):
        con.print(f"  {topic}: [yellow]{stream} refused by the band[/]: {reason}")
    sl = b.get("slews")
    if sl is not None:
        line = f"  {topic}: slews {sl['count']}"
        if sl["count"]:
            line += (f" ({sl['batches']} of {sl['of_batches']} batches slewing; largest "
                     f"{sl['max_ns'] / 1e6:.3f} ms still to absorb, at <= {sl['max_ppm']:g} ppm)")
        con.print(line)
        for r in sl["listed"]:
            con.print(f"    slew {_ts(r['start_ns'])}..{_ts(r['end_ns'])} s: "
                      f"{r['max_ns'] / 1e6:.3f} ms at {r['max_ppm']:g} ppm")
    if causes:
        con.print(f"  {topic}: gaps " + ", ".join(f"{c} x{n}" for c, n in sorted(causes.items())))


def _strobe_line(con: Any, r: dict[str, Any]) -> None:
    """The camera's timestamps checked against the MCU's strobes."""
    res = r.get("residual_ns") or {}
    line = (f"  strobes: {r['matched']}/{r['frames']} frames matched, residual "
            f"p50 {res.get('p50', 0) / 1e3:.0f} us p99 {res.get('p99', 0) / 1e3:.0f} us "
            f"(median {res.get('median', 0) / 1e3:+.0f} us; strobe bound "
            f"{(r.get('strobe_bound_ns') or 0) / 1e3:.0f} us); "
            f"{r['frames_without_strobe']} frame(s) without strobe")
    if r["strobes_lost"]:
        line += f", {r['strobes_lost']} strobe(s) lost on the link"
    if r.get("stored"):
        line += " (matched at capture)"
        if r.get("unchecked"):
            line += f"; {r['unchecked']} matched after the roll (next segment)"
        if r.get("for_previous_segment"):
            line += f"; {r['for_previous_segment']} for the previous segment's frames"
    con.print(line)
    if r["unexplained_missing_frames"]:
        con.print(f"  [red]strobes: {r['unexplained_missing_frames']} exposure(s) with no "
                  "frame and no gap record: frames lost silently[/]")
    if r["outliers"]:
        con.print(f"  [red]strobes: {r['outliers']} frame stamp(s) off the median by over "
                  f"1 ms[/] (frames {', '.join(map(str, r['outlier_frames'][:8]))})")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.errors import InputError
    from agent.inspect import Streams, error_report, expand, read_streams, report, shared_ids

    target = None
    if args.plot:
        from agent.inspect_plot import check_target

        target = check_target(args.plot)
    paths = expand(args.paths)
    probe = Console()
    con = Console(width=probe.width if probe.is_terminal else 200, highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    files: list[Streams] = []
    out: list[dict[str, Any]] = []
    reports: list[SegmentReport] = []
    bad = 0
    for p in paths:
        try:
            s = read_streams(p)
        except InputError as exc:
            bad += 1
            out.append(error_report(Path(p), str(exc)))
            if not args.json:
                err.print(f"[red]{exc}[/]")
            continue
        rep = report(s)
        files.append(s)
        reports.append(rep)
        out.append(rep.to_dict())
        bad += rep.damaged_chunks > 0
        if not args.json:
            _render(rep, con)
    shared = shared_ids(reports)
    for sid, where in shared.items():
        err.print(f"[yellow]warning: segment id {sid} is in {len(where)} files "
                  f"({', '.join(where)}): two recordings or a copy[/]")
    if args.json:
        print(json.dumps(out, indent=2))
    if bad and not args.json:
        err.print(f"[red]{bad} of {len(paths)} file(s) unreadable or damaged[/]")
    if target is not None and files:
        from agent.inspect_plot import plot

        plot(files, target)
        print(f"plot written to {target}", file=sys.stderr if args.json else sys.stdout)
    return 2 if bad else 0
