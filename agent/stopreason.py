"""Why the capture service last stopped on its own: a small file beside its live status.

    record_stop(spool, kind, reason, exit_code)   # `wearcap run`, as it exits on a fault
    clear_stop()                                  # `wearcap run`, as it starts
    last_stop() -> dict | None                    # `wearcap status`

The wearer sees a fault on the LED (agent.mcu.wearer.Wearer.show_fault) and a low battery as
its own pattern; the technician's ``wearcap status`` reads the same thing here. The file
lives in the run directory (agent.livestatus.run_dir: a tmpfs under /run), not the spool:
a full disk, the commonest fault, must not stop it being written, and a stop reason is
about this boot. ``kind`` is ``fault`` or ``low-battery``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent import livestatus

STOP_FILE = "capture-stopped.json"


def record_stop(spool: Path, kind: str, reason: str, exit_code: int) -> Path | None:
    path = livestatus.run_dir() / STOP_FILE
    body = {"kind": kind, "reason": reason, "exit_code": exit_code, "spool": str(spool),
            "stopped_at": time.time(), "pid": os.getpid()}
    try:
        livestatus.write_atomic(path, json.dumps(body, indent=1).encode())
    except OSError:
        return None  # the LED still shows it; status is not worth failing the exit for
    return path


def clear_stop() -> None:
    for d in livestatus.candidates():
        with contextlib.suppress(OSError):
            (d / STOP_FILE).unlink()


def last_stop() -> dict[str, Any] | None:
    """The newest stop record found (with ``path`` and ``age_s``), or None."""
    best: dict[str, Any] | None = None
    for d in livestatus.candidates():
        try:
            doc = json.loads((d / STOP_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        doc["path"] = str(d / STOP_FILE)
        doc["age_s"] = round(time.time() - float(doc.get("stopped_at", 0) or 0), 1)
        if best is None or doc["age_s"] < best["age_s"]:
            best = doc
    return best
