"""wearcap demo: the whole loop on the simulated rig, in one command.

Starts a reference collector on loopback with a fresh data directory, enrolls the simulated
device, records the simulated rig for ``--duration`` seconds with the sync service running
beside it, drains the backlog, and ends with what the collector holds: every segment verified,
none missing. Everything lives in ``--dir`` (a temporary directory unless given), and every
process it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.commands import finite_float

HELP = "record, upload and verify on the simulated rig: the whole loop in one command"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=finite_float, default=30.0, metavar="S",
                   help="seconds to record (default 30)")
    p.add_argument("--segment-seconds", type=finite_float, default=10.0, metavar="S",
                   help="segment length for the demo (default 10)")
    p.add_argument("--dir", metavar="D", help="keep everything here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def _start_collector(data: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    from agent.errors import WearcapError

    proc = subprocess.Popen(_cli("collector", "--data", str(data), "--listen", "127.0.0.1:0"),
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"(http://127\.0\.0\.1:\d+/files/)", line)
        if m:
            return proc, m.group(1)
    _stop(proc)
    raise WearcapError(f"the collector did not start; see {log}")


def _stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _prepare_dir(root: Path, logs: Path) -> None:
    """--dir must be a directory the demo can write (it records, uploads and logs there)."""
    from agent.errors import UsageError

    if root.exists() and not root.is_dir():
        raise UsageError(f"--dir {root}: is a file, not a directory; give a new or empty "
                         "directory (or leave --dir out for a temporary one)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        logs.mkdir(exist_ok=True)
        probe = root / ".wearcap-demo-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--dir {root}: cannot write there ({exc.strerror or exc}); give a "
                         "writable directory (or leave --dir out for a temporary one)") from None


def _report(spool: Path, data: Path, logs: Path, truth: Path,
            collector: dict[str, Any]) -> dict[str, Any]:
    """Recorded, uploaded, verified; streams; timestamp error; files (agent.demo_report)."""
    from agent import demo_report
    from agent.sync.state import State

    sealed = sorted((spool / "sealed").glob("*.mcap"))
    st = State(spool / "sync.sqlite3")
    try:
        c = st.counts()
    finally:
        st.close()
    uploaded = c["verified"][0] + c["evicted"][0] + c["uploaded"][0]
    inspected = subprocess.run(_cli("inspect", "--json", str(spool / "sealed")),
                               capture_output=True, text=True, check=False)
    try:
        segs = json.loads(inspected.stdout)
    except ValueError:
        segs = []
    return {"recorded": len(sealed), "uploaded": uploaded,
            "verified": collector.get("verified"), "device": collector,
            "streams": demo_report.streams(segs if isinstance(segs, list) else []),
            "timestamp_error": demo_report.timestamp_error(sealed,
                                                           demo_report.load_truth(truth)),
            "files": {"sealed": str(spool / "sealed"), "collector": str(data),
                      "logs": str(logs)}}


def run(args: argparse.Namespace) -> int:
    from agent.errors import UsageError, WearcapError
    from agent.sim.rig import TRUTH_ENV
    from agent.termout import console

    if not (0 < args.duration < math.inf) or not (1 <= args.segment_seconds < math.inf):
        raise UsageError("--duration must be > 0 and --segment-seconds >= 1 (finite numbers)")
    con = console(stderr=True)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="wearcap-demo-"))
    spool, data, logs = root / "spool", root / "collector", root / "logs"
    _prepare_dir(root, logs)
    collector = sync = None
    try:
        with con.status("starting the collector"):
            collector, url = _start_collector(data, logs / "collector.log")
        enroll = subprocess.run(_cli("collector", "enroll", "sim-0001", "--data", str(data)),
                                capture_output=True, text=True, check=False)
        if enroll.returncode != 0:
            raise WearcapError(f"enrolling the device failed: {enroll.stderr.strip()}")
        token = root / "token"
        token.write_text(enroll.stdout.strip() + "\n")
        cfg = root / "agent.toml"
        cfg.write_text(
            'profile = "sim"\n'
            f"[segment]\nseconds = {args.segment_seconds}\n"
            f'[spool]\npath = "{spool}"\nreserve_mb = 0\n'
            f'[sync]\nurl = "{url}"\ntoken_file = "{token}"\nrescan_seconds = 2.0\n'
        )
        con.print(f"collector at {url}; device sim-0001 enrolled; files in {root}")
        sync = subprocess.Popen(_cli("sync", "--config", str(cfg)),
                                stdout=subprocess.DEVNULL,
                                stderr=(logs / "sync.log").open("w"), start_new_session=True)
        con.print(f"recording the simulated rig for {args.duration:g} s "
                  "(camera + wrist bands), uploading as segments seal")
        # The recorder's own summary goes to stderr so that stdout stays the demo's report.
        truth = logs / "sim-truth.json"
        rec = subprocess.run(_cli("run", "--config", str(cfg), "--duration", str(args.duration)),
                             stdout=sys.stderr, check=False,
                             env={**os.environ, TRUTH_ENV: str(truth)})
        if rec.returncode != 0:
            raise WearcapError(f"recording failed (exit {rec.returncode})")
        _stop(sync)
        sync = None
        with con.status("draining the backlog"):
            drain = subprocess.run(_cli("sync", "--config", str(cfg), "--once", "--json"),
                                   capture_output=True, text=True, check=False)
        report = subprocess.run(_cli("collector", "report", "--data", str(data), "--json",
                                     "--device", "sim-0001"),
                                capture_output=True, text=True, check=False)
        try:
            summary = json.loads(report.stdout)
        except ValueError:
            summary = {"error": report.stdout + report.stderr}
        device = summary[0] if isinstance(summary, list) and summary else {}
        final = _report(spool, data, logs, truth, device)
        if args.json:
            print(json.dumps({"dir": str(root), "collector": summary,
                              "sync_exit": drain.returncode, **final}, indent=2))
        else:
            from agent import demo_report

            demo_report.render(final, console())
        return 0 if drain.returncode == 0 else 1
    finally:
        _stop(sync)
        _stop(collector)
