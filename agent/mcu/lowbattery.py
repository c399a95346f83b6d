"""After a low-battery stop: the marker capture leaves, and when to resume (pure).

    write_marker(spool_root, battery, low_percent)   # capture, after sealing, before exit 3
    read_marker(spool_root) -> dict | None           # wearcap battery / wearcap status
    clear_marker(spool_root)                         # capture, once it records again
    resume_decision(battery, low, margin) -> (resume?, why)

Capture exits 3 at a low battery and systemd does not restart it (RestartPreventExitStatus).
The marker ``<spool>/stopped-low-battery.json`` says so durably, across a power cut: the
resume timer (systemd/wearcap-capture-resume.timer) only looks at the gauge while it exists,
and ``wearcap status`` shows "stopped: battery low, waiting for charge" from it.

Resume when the gauge says charging, or reads at least ``low + margin`` percent (a battery
swapped for a full one, or a gauge that recovered at rest): the margin keeps a battery that
recovers a point at rest from restarting capture into the same brown-out.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from agent.durable import fsync_dir, write_atomic

MARKER = "stopped-low-battery.json"


def marker_path(spool_root: Path) -> Path:
    return spool_root / MARKER


def write_marker(spool_root: Path, battery: dict[str, Any] | None, low_percent: int) -> Path:
    """Durable: written after the last segment is sealed and before the process exits 3."""
    b = battery or {}
    body = {"stopped_at": time.time(), "percent": b.get("percent"),
            "millivolts": b.get("millivolts"), "charging": b.get("charging"),
            "low_battery_percent": low_percent}
    path = marker_path(spool_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(body, indent=1).encode())
    return path


def read_marker(spool_root: Path) -> dict[str, Any] | None:
    """The marker's content, or None when there is none. A marker that cannot be parsed
    (it never should: it is written atomically) still counts: ``{"unreadable": ...}``."""
    path = marker_path(spool_root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"unreadable": str(exc)}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return {"unreadable": str(exc)}
    return doc if isinstance(doc, dict) else {"unreadable": "not a JSON object"}


def clear_marker(spool_root: Path) -> bool:
    """Remove the marker (durably); True if there was one."""
    path = marker_path(spool_root)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
    return True


def resume_decision(battery: dict[str, Any], low_percent: int,
                    margin_percent: int) -> tuple[bool, str]:
    """Whether capture may start again after a low-battery stop, and why (one line)."""
    pct, charging = int(battery["percent"]), bool(battery["charging"])
    need = low_percent + margin_percent
    if charging:
        return True, f"charging ({pct} %)"
    if pct >= need:
        return True, f"{pct} %, at least the {need} % needed to resume without charging"
    return False, f"not charging, {pct} % (resumes when charging, or at {need} %)"
