"""wearcap status: is it recording, and is it syncing? Read from the spool alone.

Recording: the capture service holds ``<spool>/capture.lock`` and an ``active/*.mcap.part``
grew recently. Syncing: the sync service's ``<spool>/sync-status.json`` (backlog, collector
reachable, last error) and its age.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

HELP = "is it recording, and is it syncing? (--json for scripts)"
FRESH_SECONDS = 5.0
"""An active segment written to within this many seconds counts as recording."""
SYNC_STALE_SECONDS = 120.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own)")
    p.add_argument("--spool", metavar="D", help="spool directory (overrides the config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _files(d: Path, pattern: str) -> list[Path]:
    try:
        return sorted(d.glob(pattern))
    except OSError:
        return []


def collect(spool: Path, reserve_bytes: int, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    parts = _files(spool / "active", "*.mcap.part")
    sealed = _files(spool / "sealed", "*.mcap")
    quarantined = [p for p in _files(spool / "quarantine", "*") if not p.name.endswith(".why")]
    newest_write = max((p.stat().st_mtime for p in parts if p.exists()), default=None)
    service_up = _lock_held(spool / "capture.lock")
    recording = bool(service_up and newest_write is not None
                     and now - newest_write < FRESH_SECONDS)
    try:
        free = shutil.disk_usage(spool).free
    except OSError:
        free = None
    sync: dict[str, Any] | None = None
    sync_age = None
    try:
        sync = json.loads((spool / "sync-status.json").read_text())
        sync_age = now - float(sync.get("updated", 0))
    except (OSError, ValueError, AttributeError):
        sync = None
    faults = []
    if free is not None and free < reserve_bytes:
        faults.append("disk below the reserve: recording stops until uploads free space")
    if service_up and not recording:
        faults.append("capture service is up but nothing was written in the last "
                      f"{FRESH_SECONDS:.0f} s")
    if quarantined:
        faults.append(f"{len(quarantined)} file(s) in quarantine/")
    if sync is not None and sync.get("last_error"):
        faults.append(f"sync: {sync['last_error']}")
    return {
        "spool": str(spool),
        "recording": recording,
        "capture_service": service_up,
        "active": [{"file": p.name, "bytes": p.stat().st_size} for p in parts if p.exists()],
        "sealed_segments": len(sealed),
        "sealed_bytes": sum(p.stat().st_size for p in sealed if p.exists()),
        "last_sealed": sealed[-1].stem if sealed else None,
        "quarantined": len(quarantined),
        "disk_free_bytes": free,
        "reserve_bytes": reserve_bytes,
        "sync": sync,
        "sync_status_age_s": None if sync_age is None else round(sync_age, 1),
        "syncing": bool(sync and sync.get("uploading") and sync_age is not None
                        and sync_age < SYNC_STALE_SECONDS),
        "faults": faults,
    }


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from agent import config

    cfg = config.load_default(args.config)
    spool = Path(os.path.expanduser(args.spool)) if args.spool else cfg.spool_path
    st = collect(spool, cfg.spool.reserve_mb * 1024 * 1024)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    from rich.console import Console

    con = Console()
    rec = "[green]yes[/]" if st["recording"] else "[red]no[/]"
    con.print(f"recording: {rec}   (capture service {'up' if st['capture_service'] else 'down'})")
    sync = st["sync"]
    if sync is None:
        con.print("syncing:   [yellow]unknown[/] (no sync status yet: is `wearcap sync` running?)")
    else:
        state = "[green]yes[/]" if st["syncing"] else "[yellow]no[/]"
        con.print(f"syncing:   {state}   ({sync.get('reason', '')}; backlog "
                  f"{sync.get('backlog_segments', '?')} segments, "
                  f"{_mb(sync.get('backlog_bytes'))}; status {st['sync_status_age_s']} s old)")
    con.print(f"spool:     {st['spool']}: {st['sealed_segments']} sealed "
              f"({_mb(st['sealed_bytes'])}), last {st['last_sealed'] or '-'}, "
              f"free {_mb(st['disk_free_bytes'])}")
    for fault in st["faults"]:
        con.print(f"[red]fault:[/] {fault}")
    return 0
