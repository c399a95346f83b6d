"""wearcap status: is it recording, and is it syncing? A live view on a terminal.

Read without opening a port or a device: the capture service's live status (a file it
rewrites every second under /run, agent.livestatus), the spool (``capture.lock``, ``.part``
files, sealed segments) and the sync service's ``<spool>/sync-status.json``.

Which spool: ``--spool`` if given, else the one the running capture service records into,
else the config's; the output always says which, and why.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from agent.selftest import rtt_text

HELP = "is it recording, and is it syncing? (a live view; --json for scripts)"
FRESH_SECONDS = 5.0
"""An active segment written to within this many seconds counts as recording."""
SYNC_STALE_SECONDS = 120.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own)")
    p.add_argument("--spool", metavar="D", help="spool directory (default: the one the "
                   "capture service records into, else the config's)")
    p.add_argument("--json", action="store_true", help="one machine-readable snapshot")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot and exit (the default when not on a terminal)")


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


def capture_running(spool: Path) -> bool:
    """A capture service holds this spool's lock (agent.record.spool.Spool.lock)."""
    return _lock_held(spool / "capture.lock")


def _files(d: Path, pattern: str) -> list[Path]:
    try:
        return sorted(d.glob(pattern))
    except OSError:
        return []


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _stopped(spool: Path, service_up: bool, stop: dict[str, Any] | None,
             marker: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why capture is not running, when it stopped on its own: a low battery (the spool's
    marker, agent.mcu.lowbattery: it lasts across reboots until capture records again), or
    a fault (the run directory's stop record, agent.stopreason: this boot)."""
    if service_up:
        return None
    if marker is not None:
        b = {k: marker.get(k) for k in ("percent", "millivolts", "stopped_at")}
        return {"kind": "low-battery", "reason": "battery low, waiting for charge",
                "summary": "stopped: battery low, waiting for charge", **b}
    if stop is not None and stop.get("kind") == "fault" and (
            not stop.get("spool") or Path(str(stop["spool"])).resolve() == spool.resolve()):
        return {"kind": "fault", "reason": stop.get("reason"),
                "exit_code": stop.get("exit_code"), "stopped_at": stop.get("stopped_at"),
                "age_s": stop.get("age_s"),
                "summary": f"stopped on a fault: {stop.get('reason')}"}
    return None


def collect(spool: Path, reserve_bytes: int, now: float | None = None, *,
            live: dict[str, Any] | None = None, spool_from: str = "--spool",
            stop: dict[str, Any] | None = None) -> dict[str, Any]:
    """One snapshot. ``live`` is the capture service's live status (agent.livestatus), if
    one was found; it counts only when it is fresh and about this spool. ``stop`` is the
    capture service's last stop record (agent.stopreason), if any."""
    from agent.mcu.lowbattery import read_marker

    now = time.time() if now is None else now
    parts = _files(spool / "active", "*.mcap.part")
    sealed = _files(spool / "sealed", "*.mcap")
    quarantined = [p for p in _files(spool / "quarantine", "*") if not p.name.endswith(".why")]
    mtimes = []
    for p in parts:
        with contextlib.suppress(OSError):
            mtimes.append(p.stat().st_mtime)
    newest_write = max(mtimes, default=None)
    service_up = _lock_held(spool / "capture.lock")
    live_here = bool(live and live.get("fresh")
                     and Path(str(live.get("spool", ""))).resolve() == spool.resolve())
    recording = bool(service_up and newest_write is not None
                     and now - newest_write < FRESH_SECONDS)
    if live_here and live is not None:
        recording = service_up and live.get("state") == "recording"
    try:
        free: int | None = shutil.disk_usage(spool).free
    except OSError:
        free = None
    sync: dict[str, Any] | None = None
    sync_age = None
    try:
        loaded = json.loads((spool / "sync-status.json").read_text())
        sync = loaded if isinstance(loaded, dict) else None
        sync_age = now - float(sync.get("updated", 0)) if isinstance(sync, dict) else None
    except (OSError, ValueError, AttributeError, TypeError):
        sync = None
    faults: list[str] = []
    notes: list[str] = []
    if live and live.get("fresh") and not live_here:
        notes.append(f"the capture service records into {live.get('spool')}, not this "
                     "spool (leave --spool out, or pass that one)")
    if free is not None and free < reserve_bytes:
        faults.append("disk below the reserve: recording stops until uploads free space")
    if service_up and not recording:
        faults.append("capture service is up but nothing was written in the last "
                      f"{FRESH_SECONDS:.0f} s")
    if live_here and live is not None and not (live.get("writer") or {}).get(
            "progressing", True):
        faults.append("the segment writer is stalled (no checkpoint for "
                      f"{live['writer'].get('since_checkpoint_s')} s): systemd's watchdog "
                      "will restart it")
    leftover = [p.name for p in parts] if not service_up else []
    if leftover:
        notes.append(f"{len(leftover)} leftover .part file(s) in active/ from a capture that "
                     "did not stop cleanly; the next `wearcap run` recovers them")
    if quarantined:
        faults.append(f"{len(quarantined)} file(s) in quarantine/")
    sync_fresh = sync_age is not None and sync_age < SYNC_STALE_SECONDS
    sync_error = sync.get("last_error") if sync else None
    if sync_error:
        faults.append(f"sync: {sync_error}")
    if sync is not None and not sync_fresh:
        faults.append(f"sync status is {sync_age:.0f} s old: is `wearcap sync` running?")
    streams = list((live or {}).get("streams") or []) if live_here else []
    for st in streams:
        if st.get("streaming") is False:
            faults.append(f"{stream_label(st)} absent for {st.get('absent_s', 0):.0f} s "
                          f"({st.get('absent_cause') or 'unknown cause'})")
    syncing = bool(sync and sync.get("uploading") and sync_fresh and not sync_error)
    stopped = _stopped(spool, service_up, stop, read_marker(spool))
    if stopped is not None and stopped["kind"] == "fault":
        faults.insert(0, stopped["summary"])
    return {
        "spool": str(spool),
        "spool_from": spool_from,
        "recording": recording,
        "capture_service": service_up,
        "live_status": (live or {}).get("path") if live_here else None,
        "state": (live or {}).get("state") if live_here else (
            "recording" if recording else ("up" if service_up else (
                "stopped-" + stopped["kind"] if stopped else "down"))),
        "stopped": stopped,
        "device_id": (live or {}).get("device_id") if live_here else None,
        "open_segment": (live or {}).get("segment") if live_here else None,
        "camera": (live or {}).get("camera") if live_here else None,
        "streams": streams,
        "disk_hours_left": ((live or {}).get("disk") or {}).get("hours_left")
        if live_here else None,
        "battery": (live or {}).get("battery") if live_here else None,
        "active": [{"file": p.name, "bytes": _size(p)} for p in parts],
        "leftover_parts": leftover,
        "sealed_segments": len(sealed),
        "sealed_bytes": sum(_size(p) for p in sealed),
        "last_sealed": sealed[-1].stem if sealed else None,
        "quarantined": len(quarantined),
        "disk_free_bytes": free,
        "reserve_bytes": reserve_bytes,
        "sync": sync,
        "sync_status_age_s": None if sync_age is None else round(sync_age, 1),
        "syncing": syncing,
        "faults": faults,
        "notes": notes,
    }


def stream_label(s: dict[str, Any]) -> str:
    """'head mcu' for the head MCU's stream, 'band NAME' for a wrist band's."""
    return "head mcu" if s.get("name") == "mcu" else f"band {s.get('name')}"


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _num(v: Any, fmt: str = "{:.1f}", none: str = "-") -> str:
    return none if not isinstance(v, (int, float)) else fmt.format(v)


def render(st: dict[str, Any]) -> Any:
    """The snapshot as rich renderables (one group; plain text off a terminal)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    lines: list[Any] = []
    rec = "[green]yes[/]" if st["recording"] else "[red]no[/]"
    svc = "up" if st["capture_service"] else "down"
    who = f", device {st['device_id']}" if st.get("device_id") else ""
    lines.append(Text.from_markup(f"recording: {rec}   (capture service {svc}{who})"))
    stopped = st.get("stopped")
    if stopped:
        colour = "yellow" if stopped["kind"] == "low-battery" else "red"
        lines.append(Text.from_markup(f"[{colour}]{stopped['summary'].split(':')[0]}:[/]")
                     + Text(stopped["summary"].split(":", 1)[1]))
    seg = st.get("open_segment")
    if seg:
        lines.append(Text(f"segment:   {seg['id']} open, {seg.get('frames', 0)} frames, "
                          f"{_mb(seg.get('bytes'))}, {seg.get('gaps', 0)} gap(s)"))
    elif st["active"]:
        what = "leftover (recovered at the next start)" if st["leftover_parts"] else "open"
        lines.append(Text(f"segment:   {', '.join(a['file'] for a in st['active'])} {what}"))
    cam = st.get("camera")
    if st["streams"] or cam:
        t = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("stream", "state", "rate", "drops/gaps", "clock bound", "note"):
            t.add_column(col, no_wrap=True)
        if cam:
            t.add_row("camera", "streaming" if cam.get("fps") else "waiting",
                      f"{_num(cam.get('fps'))} fps", str(cam.get("dropped") or 0), "-", "")
        for s in st["streams"]:
            ok = s.get("streaming")
            note = "" if ok else f"absent {s.get('absent_s', 0):.0f} s " \
                                 f"({s.get('absent_cause') or '?'})"
            if ok and s.get("rtt_ms_p50") is not None:
                note = f"ping round trip {rtt_text(s)}"
            t.add_row(stream_label(s), "[green]streaming[/]" if ok else
                      f"[red]{s.get('state', '?')}[/]", f"{_num(s.get('rate_hz'))} Hz",
                      str(s.get("gaps", 0)),
                      _num(s.get("clock_bound_us"), "{:.0f} us")
                      + ("" if s.get("clock_converged") else " (converging)"), note)
        lines.append(t)
    sync = st["sync"]
    if sync is None:
        lines.append(Text.from_markup(
            "syncing:   [yellow]unknown[/] (no sync status yet: is `wearcap sync` running?)"))
    else:
        if st["syncing"]:
            state = "[green]yes[/]"
        elif sync.get("last_error"):
            state = "[red]retrying[/]"
        else:
            state = "[yellow]no[/]"
        lines.append(Text.from_markup(
            f"syncing:   {state}   ({sync.get('reason', '')}; backlog "
            f"{sync.get('backlog_segments', '?')} segments, {_mb(sync.get('backlog_bytes'))}; "
            f"{sync.get('verified_segments', 0)} verified; status "
            f"{st['sync_status_age_s']} s old)"))
    hours = st.get("disk_hours_left")
    lines.append(Text(f"spool:     {st['spool']} ({st['spool_from']}): "
                      f"{st['sealed_segments']} sealed ({_mb(st['sealed_bytes'])}), last "
                      f"{st['last_sealed'] or '-'}, free {_mb(st['disk_free_bytes'])}"
                      + (f", {hours:g} h of recording left" if hours is not None else "")))
    bat = st.get("battery")
    if bat:
        lines.append(Text(f"battery:   {_num(bat.get('percent'), '{:.0f} %', '?')}"
                          + (" (charging)" if bat.get("charging") else "")))
    for note in st["notes"]:
        lines.append(Text.from_markup(f"[yellow]note:[/] {note}"))
    for fault in st["faults"]:
        lines.append(Text.from_markup("[red]fault:[/] ") + Text(fault))
    return Group(*lines)


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    from agent import config, livestatus

    cfg = config.load_default(args.config)
    live = livestatus.find_capture()
    if args.spool:
        spool, why = Path(os.path.expanduser(args.spool)), "--spool"
    elif live and live.get("fresh") and live.get("spool"):
        spool, why = Path(live["spool"]), "the running capture service's"
    else:
        spool, why = cfg.spool_path, f"spool.path of {cfg.sources[-1]}"
    from agent.stopreason import last_stop

    return collect(spool, cfg.spool.reserve_mb * 1024 * 1024, live=live, spool_from=why,
                   stop=last_stop())


def run(args: argparse.Namespace) -> int:
    from agent.termout import console

    st = snapshot(args)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    con = console()
    if args.once or not sys.stdout.isatty():
        con.print(render(st))
        return 0
    from rich.live import Live

    with Live(render(st), console=con, refresh_per_second=2, screen=False) as view:
        try:
            while True:
                time.sleep(1.0)
                view.update(render(snapshot(args)))
        except KeyboardInterrupt:
            pass
    return 0
