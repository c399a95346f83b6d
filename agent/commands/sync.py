"""wearcap sync: upload sealed segments to the collector (tus), verified, exactly once."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELP = "sync service: upload sealed segments when the collector is reachable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own)")
    p.add_argument("--once", action="store_true",
                   help="drain the backlog and exit (0: all verified; 1: names what is left)")
    p.add_argument("--spool", metavar="D", help="spool directory (overrides spool.path)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


def read_token(cfg: Any) -> str:
    from agent.errors import ConfigError

    path = Path(os.path.expanduser(cfg.sync.token_file))
    where = cfg.sources[-1] if cfg.sources else "<config>"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(where, "sync.token_file", "token file not found (enroll the device "
                          "on the collector with `wearcap collector enroll DEVICE_ID` and "
                          "save the token it prints there)", value=str(path)) from None
    except OSError as exc:
        raise ConfigError(where, "sync.token_file", f"cannot read token file: {exc.strerror}",
                          value=str(path)) from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(where, "sync.token_file", "token file is empty or malformed",
                          value=str(path))
    return token


def check_spool(spool: Path, given_by: str) -> None:
    """The sync service keeps its state in the spool: it must be a directory it can write."""
    from agent.errors import SpoolError

    if spool.exists() and not spool.is_dir():
        raise SpoolError(f"is a file, not a spool directory; point {given_by} at the "
                         "directory the capture service records into", path=str(spool))
    probe = spool if spool.exists() else next((p for p in spool.parents if p.exists()), spool)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SpoolError("is read-only for this user, and the sync service records its "
                         "progress there (sync.sqlite3); run it as the service user "
                         f"(sudo -u wearcap wearcap sync) or point {given_by} at a "
                         "writable spool", path=str(spool))


def run(args: argparse.Namespace) -> int:
    import signal
    import sqlite3

    from agent import config
    from agent.errors import SpoolError
    from agent.sync.service import SyncService

    cfg = config.load_default(args.config)
    spool = Path(os.path.expanduser(args.spool)) if args.spool else cfg.spool_path
    token = read_token(cfg)
    check_spool(spool, "--spool" if args.spool else "spool.path")
    progress = _Display() if sys.stderr.isatty() and not args.json else None
    try:
        service = SyncService(cfg, spool=spool, token=token, once=args.once,
                              on_progress=progress.update if progress else None)
    except (OSError, sqlite3.Error) as exc:
        if progress:
            progress.close()
        raise SpoolError(f"cannot open the sync state: {exc}; check that the spool is "
                         "writable by this user", path=str(spool)) from None

    def _stop(signum: int, frame: object) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        summary = service.run()
    finally:
        if progress:
            progress.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(f"verified {len(summary.verified)} segment(s), evicted {len(summary.evicted)}, "
              f"sent {summary.bytes_sent} bytes"
              + (f", repaired {summary.repairs} upload(s) the server held with wrong bytes"
                 if summary.repairs else ""))
        for item in summary.left:
            print(f"  left: {item['id']} ({item['state']}): "
                  f"{item['last_error'] or item['why']}")
    if not args.once:
        return 0
    if not summary.ok:
        print(f"wearcap: sync: {len(summary.left)} segment(s) left: {summary.reason}",
              file=sys.stderr)
        return 1
    return 0


class _Display:
    """A rich progress bar per segment in flight (only on a terminal)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), transient=False)
        self.progress.start()
        self.tasks: dict[str, Any] = {}

    def update(self, seg_id: str, offset: int, size: int) -> None:
        task = self.tasks.get(seg_id)
        if task is None:
            task = self.tasks[seg_id] = self.progress.add_task(seg_id, total=size)
        self.progress.update(task, completed=offset)

    def close(self) -> None:
        self.progress.stop()
