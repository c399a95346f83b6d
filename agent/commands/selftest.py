"""wearcap selftest: does this rig work? Each check passes or fails, with the fix to try.

Exit 0 when nothing failed (warnings allowed), 1 when a check failed. The report is kept in
the spool (``selftest/``) and uploaded with the next sync.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

HELP = "check camera, bands, MCU, disk, NTP and the collector; each with its fix (--json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own)")
    p.add_argument("--spool", metavar="D", help="spool directory (overrides spool.path)")
    p.add_argument("--seconds", type=float, default=5.0, metavar="S",
                   help="how long to watch the camera and bands when the capture service "
                        "is not running (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from agent import config, livestatus, selftest
    from agent.errors import UsageError

    if not (0 < args.seconds < math.inf):
        raise UsageError(f"--seconds must be a positive number, got {args.seconds:g}")
    cfg = config.load_default(args.config)
    live = livestatus.find_capture()
    if live is not None and not (live.get("fresh") and live.get("device_id") == cfg.device.id):
        live = None
    spool = Path(os.path.expanduser(args.spool)) if args.spool else (
        Path(live["spool"]) if live and live.get("spool") else cfg.spool_path)
    if not args.json and live is None:
        print(f"selftest: opening the camera and bands for {args.seconds:g} s ...",
              flush=True)
    report = selftest.run_all(cfg, spool, seconds=args.seconds, live=live)
    saved = selftest.save(report, spool)
    if args.json:
        doc = report.to_dict()
        doc["saved"] = str(saved) if saved else None
        print(json.dumps(doc, indent=2))
        return 0 if report.ok else 1
    from rich.table import Table

    from agent.termout import console

    colour = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim"}
    t = Table(title=f"wearcap selftest: {cfg.device.id}"
              + (" (from the running capture service)" if report.source == "live" else ""))
    for col in ("check", "result", "detail", "fix"):
        t.add_column(col, overflow="fold")
    for c in report.checks:
        t.add_row(c.name, f"[{colour[c.result]}]{c.result.upper()}[/]", c.detail, c.fix)
    con = console()
    con.print(t)
    failed = [c.name for c in report.checks if c.result == "fail"]
    verdict = "[green]PASS[/]" if report.ok else f"[red]FAIL[/] ({', '.join(failed)})"
    con.print(f"selftest: {verdict} in {report.seconds:.1f} s; report "
              f"{saved or 'not saved (spool not writable)'}")
    return 0 if report.ok else 1
