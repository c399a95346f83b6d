"""The wearer's discard requests, carried out on the device: whole sealed segments become
content-free tombstones.

    <spool>/discard/<requested_ns>.json     written by capture (agent.mcu.wearer), durable
    <spool>/tombstones/<segment id>.json    {id, sequence, sha256, size, discarded_ns, ...}

``carry_out(spool_root, segment_info)`` handles every pending request: for each named
segment still in ``sealed/`` it writes the tombstone first (durably), then deletes the
segment file and syncs the directory, so a power cut at any point leaves either the segment
or its tombstone, and running it again finishes the job. The request is then rewritten with
``state = "done-local"`` and the list of tombstoned ids, which the sync service reports to the
collector (the segments it had already uploaded are deleted there: the collector's part).
A tombstone keeps the segment's sequence number and SHA-256, so the chain stays checkable
and the completeness view can show a discard where it would otherwise show a loss; the
sequence number is never reused (the spool numbers from the highest it has seen).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.digest import sha256_file
from agent.durable import fsync_dir, write_atomic

log = logging.getLogger("wearcap.discard")

DISCARD_DIR = "discard"
TOMBSTONE_DIR = "tombstones"


def pending(spool_root: Path) -> list[Path]:
    d = spool_root / DISCARD_DIR
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        try:
            if json.loads(p.read_text()).get("state") == "pending":
                out.append(p)
        except (OSError, ValueError):
            log.warning("unreadable discard request %s: left as is", p)
    return out


def tombstones(spool_root: Path) -> dict[str, dict[str, Any]]:
    d = spool_root / TOMBSTONE_DIR
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            t = json.loads(p.read_text())
            out[str(t["id"])] = t
        except (OSError, ValueError, KeyError):
            log.warning("unreadable tombstone %s", p)
    return out


def _seq(segment_id: str) -> int | None:
    tail = segment_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def carry_out(spool_root: Path, *, now_ns: int,
              on_tombstone: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Carry out every pending request; returns the tombstones written by this call."""
    written: list[dict[str, Any]] = []
    sealed = spool_root / "sealed"
    tdir = spool_root / TOMBSTONE_DIR
    for req_path in pending(spool_root):
        req = json.loads(req_path.read_text())
        done: list[str] = []
        for sid in req.get("segments", []):
            seg = sealed / f"{sid}.mcap"
            tomb = tdir / f"{sid}.json"
            if not seg.exists():
                if tomb.exists():
                    done.append(sid)  # a power cut after the tombstone: finished before
                else:
                    log.warning("discard %s: %s is not in the spool (already evicted "
                                "after upload?)", req_path.name, sid)
                    done.append(sid)
                continue
            tdir.mkdir(parents=True, exist_ok=True)
            t = {"id": sid, "sequence": _seq(sid), "sha256": sha256_file(seg),
                 "size": seg.stat().st_size, "discarded_ns": now_ns,
                 "requested_ns": req.get("requested_ns"), "reason": "wearer-discard",
                 "window_ns": [req.get("from_ns"), req.get("to_ns")]}
            write_atomic(tomb, json.dumps(t, indent=1).encode())
            os.unlink(seg)
            fsync_dir(sealed)
            written.append(t)
            done.append(sid)
            if on_tombstone is not None:
                on_tombstone(t)
            log.warning("discarded %s at the wearer's request (tombstone kept)", sid)
        req.update(state="done-local", done_ns=now_ns, tombstoned=done)
        write_atomic(req_path, json.dumps(req, indent=1).encode())
    return written
