"""What the capture service proves to systemd and shows in its live status.

The watchdog rule: ``WATCHDOG=1`` is sent from the writer loop itself, and only while the
writer makes progress. With a segment open, progress is a checkpoint (a chunk closed and
fsync'd) within the last few chunk periods. With no segment open there is nothing to write
(not started, paused): the loop turning is all there is to prove. An absent band or a camera
that delivers nothing still checkpoints (empty chunks, gaps), so neither is a stall; a writer
blocked in a write, an fsync or a driver call is, and systemd restarts it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.capture import CaptureService

STALL_CHUNKS = 3.0
"""A segment open with no checkpoint for this many chunk periods (at least two watchdog
periods) is a stalled writer."""


def stall_seconds(chunk_seconds: float, watchdog_seconds: float) -> float:
    return max(STALL_CHUNKS * chunk_seconds, 2.0 * watchdog_seconds)


def progressing(segment_open: bool, since_checkpoint_ns: int, chunk_seconds: float,
                watchdog_seconds: float) -> bool:
    """True when the writer loop may ping the watchdog (see the module docstring)."""
    if not segment_open:
        return True
    return since_checkpoint_ns <= stall_seconds(chunk_seconds, watchdog_seconds) * 1e9


@dataclass
class LiveFigures:
    """Counters the live status derives rates from (between two publications)."""

    frames: int = 0
    at_ns: int = 0
    fps: float | None = None
    bytes_sealed: int = 0
    last_line: str = ""
    started_ns: int = 0


def _battery(path: Any) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _stream(src: Any) -> dict[str, Any]:
    try:
        st = dict(src.status())
    except Exception as exc:  # a status that cannot be read is not worth a recording
        return {"name": getattr(src, "name", "?"), "error": str(exc)}
    st.setdefault("name", getattr(src, "name", "?"))
    return st


def live_status(svc: CaptureService, now: int) -> dict[str, Any]:
    """One snapshot of the capture service (agent.livestatus writes it under /run)."""
    lf = svc._live
    if not lf.started_ns:
        lf.started_ns, lf.at_ns, lf.frames = now, now, svc.result.frames
    elif now - lf.at_ns >= 0.5e9:
        lf.fps = round((svc.result.frames - lf.frames) * 1e9 / (now - lf.at_ns), 2)
        lf.frames, lf.at_ns = svc.result.frames, now
    seg = svc._seg
    spool = svc.spool
    segment: dict[str, Any] | None = None
    if seg is not None:
        try:
            size = os.fstat(svc._fh.fileno()).st_size if svc._fh is not None else None
        except (OSError, ValueError):
            size = None
        segment = {"id": seg.id, "seq": seg.header.seq, "frames": seg.frames, "gaps": seg.gaps,
                   "bytes": size, "part": str(spool.part_path(seg.header.seq))}
    try:
        free: int | None = shutil.disk_usage(spool.root).free
    except OSError:
        free = None
    sealed_bytes = sum(s.size for s in svc.result.sealed)
    written = sealed_bytes + int((segment or {}).get("bytes") or 0)
    elapsed = (now - lf.started_ns) / 1e9 if svc.result.first_frame_ns else 0.0
    rate = written / elapsed if elapsed > 5 and written else None
    hours_left = None
    if free is not None and rate:
        hours_left = round(max(0, free - spool.reserve_bytes) / rate / 3600, 1)
    streams = [_stream(s) for s in svc.sources]
    for st in streams:
        bound = st.get("clock_bound_ns")
        if isinstance(bound, (int, float)):
            st["clock_bound_us"] = round(bound / 1e3, 1)
    since_ckpt = (now - svc._last_ckpt) / 1e9
    if svc._stopping:
        state = "stopping"
    elif not svc._ready:
        state = "starting"
    elif getattr(svc, "_paused_ns", None) is not None:
        state = "paused"  # by the wearer: nothing reaches the writer, segments roll on time
    elif seg is None:
        state = "idle"
    else:
        state = "recording"
    sync = _battery(spool.root / "sync-status.json")
    cam = None
    if svc.camera is not None:
        stats: dict[str, Any] = {}
        try:
            stats = dict(svc.camera.stats())
        except Exception:  # see _stream
            stats = {}
        cam = {"fps": lf.fps, "frames": svc.result.frames,
               "dropped": stats.get("ring_dropped_frames"), **stats}
    absent = [f"{st['name']} absent" for st in streams if st.get("streaming") is False]
    summary = (f"{state} {segment['id'] if segment else ''}".strip()
               + (f", {lf.fps:.1f} fps" if cam and lf.fps is not None else "")
               + (f", {', '.join(absent)}" if absent else ""))
    return {
        "service": "capture", "pid": os.getpid(), "updated": time.time(),
        "device_id": svc.s.device_id, "spool": str(spool.root), "state": state,
        "summary": summary,
        "segment": segment,
        "last_sealed": svc.result.sealed[-1].id if svc.result.sealed else None,
        "sealed_this_run": len(svc.result.sealed),
        "camera": cam,
        "streams": streams,
        "writer": {"since_checkpoint_s": round(since_ckpt, 2),
                   "stall_after_s": stall_seconds(svc.s.chunk_seconds, svc.s.watchdog_seconds),
                   "progressing": progressing(seg is not None, now - svc._last_ckpt,
                                              svc.s.chunk_seconds, svc.s.watchdog_seconds)},
        "disk": {"free_bytes": free, "reserve_bytes": spool.reserve_bytes,
                 "write_bytes_per_s": None if rate is None else round(rate),
                 "hours_left": hours_left},
        "battery": _battery(spool.root / "battery.json"),
        "sync": sync,
    }
