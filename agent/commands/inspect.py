"""wearcap inspect PATH...: what is in a segment: streams, rates, gaps and frame timing."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "show what is in segments: streams, rates, gaps, frame timing, recovered flag"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="segment files (.mcap, also unfinished .mcap.part) or directories")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="F.png", help="also draw message times, intervals and "
                   "gaps of all PATHs on one time axis into F (needs the plot extra)")


def _ts(ns: int) -> str:
    return f"{ns / 1e9:.3f}"


def _render(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(100, Console().width))
    flags = []
    if rep["recovered"]:
        flags.append("[yellow]recovered[/]")
    if not rep["complete"]:
        flags.append("[red]unfinished[/]")
    prev = rep["previous_sha256"][:16] or "-"
    con.print(f"[bold]{rep['id']}[/]  seq {rep['sequence']}  prev {rep['previous_sequence']}:"
              f"{prev}  {rep['duration_s']:.2f} s  {rep['frames']} frames  " + " ".join(flags))
    t = Table(show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("stream", "count", "Hz", "first s", "last s", "gaps rep/ivl",
                "ms p50/p99/max"):
        t.add_column(col, justify="left" if col == "stream" else "right")
    for topic, st in rep["streams"].items():
        iv = st.get("interval_ms")
        count = str(st["count"])
        if st.get("messages", st["count"]) != st["count"]:
            count += f" in {st['messages']} msgs"  # frame timing batches
        t.add_row(topic, count, f"{st['rate_hz']:.2f}", _ts(st["first_ns"]),
                  _ts(st["last_ns"]),
                  f"{st['reported_gaps']}/{st.get('interval_gap_count', '-')}",
                  f"{iv['p50']:.1f}/{iv['p99']:.1f}/{iv['max']:.1f}" if iv else "-")
    con.print(t)
    if rep["frame_index_jumps"]:
        con.print(f"[red]frame index jumps: {len(rep['frame_index_jumps'])}[/] "
                  + ", ".join(f"{j['after']}->{j['next']}" for j in rep["frame_index_jumps"][:8]))
    for g in rep["gaps"][:20]:
        con.print(f"  gap {g['stream']}: {g['cause']}, lost {g['lost']}, "
                  f"{_ts(g['start_ns'])}..{_ts(g['end_ns'])} s")
    con.print()


def run(args: argparse.Namespace) -> int:
    import sys

    from agent.inspect import expand, read_streams, report

    target = None
    if args.plot:
        from agent.inspect_plot import check_target

        target = check_target(args.plot)
    files = [read_streams(p) for p in expand(args.paths)]
    reports = [report(s) for s in files]
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for rep in reports:
            _render(rep)
    if target is not None:
        from agent.inspect_plot import plot

        plot(files, target)
        print(f"plot written to {target}", file=sys.stderr if args.json else sys.stdout)
    return 0
