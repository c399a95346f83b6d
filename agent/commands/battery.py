"""wearcap battery: read the head MCU's battery gauge once; decide a resume after a low stop.

Opens the MCU's port (capture must have released it), asks for a hello, accepts it, and
prints the battery report the MCU sends right after (agent.mcu.query). Errors are clear
lines, never a traceback: no MCU configured or present, the port busy (capture holds it),
no answer within ``--timeout``, a firmware of another protocol version.

``--charging`` is the resume timer's ExecCondition (systemd/wearcap-capture-resume.service):
exit 0 only when capture stopped for a low battery (the spool's marker exists, see
agent.mcu.lowbattery), capture is not running, and the gauge says charging or reads at
least ``mcu.low_battery_percent + mcu.resume_margin_percent``; exit 1 otherwise, with the
reason, errors included (systemd then skips the start and tries again at the next timer).
Without a marker it does not open the port at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import time
from pathlib import Path
from typing import Any

from agent.commands import positive_float

HELP = "read the head MCU's battery gauge once (--json); --charging: may capture resume?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own)")
    p.add_argument("--port", metavar="P", help="the MCU's port (overrides mcu.port): a path, "
                   "a udev symlink or usb:VID:PID")
    p.add_argument("--spool", metavar="D", help="spool directory (overrides spool.path)")
    p.add_argument("--timeout", metavar="S", type=positive_float, default=12.0,
                   help="how long to wait for the MCU's answer (default 12 s)")
    p.add_argument("--charging", action="store_true",
                   help="exit 0 only if capture stopped for a low battery and may resume now "
                        "(charging, or above the low level plus the margin); else exit 1")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def read_battery(spec: str, baud: int, timeout_s: float) -> dict[str, Any]:
    """One battery report from the MCU at ``spec``; SourceError with a clear message if not."""
    import serial

    from agent.errors import SourceError
    from agent.mcu.query import BatteryQuery
    from agent.mcu.serial_port import resolve_port

    try:
        path = resolve_port(spec)
    except ValueError as exc:
        raise SourceError(str(exc), device="mcu") from None
    if path is None:
        raise SourceError(f"no MCU at {spec} (not plugged in, or another port?)", device="mcu")
    try:
        ser = serial.Serial(path, baud, timeout=0, write_timeout=1.0, exclusive=True)
    except serial.SerialException as exc:
        if "exclusively lock" in str(exc) or "busy" in str(exc).lower():
            raise SourceError(f"{path} is busy: another process holds it (is the capture "
                              "service running? `wearcap status`)", device="mcu") from None
        raise SourceError(f"cannot open {path}: {exc}", device="mcu") from None
    q = BatteryQuery()
    try:
        ser.reset_input_buffer()  # what the MCU sent while nobody listened
        ser.write(q.opening())
        fd = ser.fileno()
        deadline = time.monotonic() + timeout_s
        asked = time.monotonic()
        while q.result is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    raise SourceError(f"{path} went away while reading", device="mcu")
                reply = q.feed(data)
                if reply:
                    ser.write(reply)
            elif q.hello is None and time.monotonic() - asked >= 2.0:
                ser.write(q.opening())  # a hello_request lost in a just-booted MCU
                asked = time.monotonic()
    except OSError as exc:
        raise SourceError(f"{path}: {exc}", device="mcu") from None
    finally:
        if q.hello is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                ser.write(q.closing())
                ser.flush()
        ser.close()
    b = q.result
    if b is None:
        if q.incompatible:
            raise SourceError(q.incompatible, device="mcu")
        what = ("a hello but no battery report" if q.hello is not None
                else "no hello (is it the MCU, at this baud rate?)")
        raise SourceError(f"{path}: {what} within {timeout_s:g} s", device="mcu")
    return {"percent": b.percent, "millivolts": b.millivolts, "charging": b.charging,
            "port": path, "firmware": q.hello.firmware if q.hello else ""}


def _port(args: argparse.Namespace, cfg: Any) -> str:
    from agent.errors import ConfigError

    if args.port:
        return str(args.port)
    where = cfg.sources[-1] if cfg.sources else "config"
    if not cfg.mcu.enabled:
        raise ConfigError(where, "mcu.enabled", "this rig has no head MCU (so no battery "
                          "gauge)", allowed="true, with mcu.port; or pass --port")
    if not cfg.mcu.port:
        raise ConfigError(where, "mcu.port", "no port configured (the simulated rig's MCU "
                          "exists only while `wearcap run` runs)",
                          allowed="a path, a symlink or usb:VID:PID; or pass --port")
    return str(cfg.mcu.port)


def run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.commands.status import capture_running
    from agent.errors import WearcapError
    from agent.mcu import lowbattery

    cfg = config.load_default(args.config)
    spool = Path(os.path.expanduser(args.spool)) if args.spool else cfg.spool_path
    marker = lowbattery.read_marker(spool)
    doc: dict[str, Any] = {"spool": str(spool), "stopped_low_battery": marker}
    if not args.charging:
        doc["battery"] = read_battery(_port(args, cfg), cfg.mcu.baud, args.timeout)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            b = doc["battery"]
            print(f"battery: {b['percent']} % ({b['millivolts']} mV), "
                  f"{'charging' if b['charging'] else 'not charging'} ({b['port']})")
            if marker is not None:
                print("capture: stopped for a low battery, waiting for charge "
                      f"({lowbattery.marker_path(spool)})")
        return 0
    resume, why = False, ""
    if marker is None:
        why = "no low-battery stop to resume from"
    elif capture_running(spool):
        why = "the capture service is running"
    else:
        try:
            doc["battery"] = read_battery(_port(args, cfg), cfg.mcu.baud, args.timeout)
        except WearcapError as exc:
            why = f"no reading: {exc}"
        else:
            resume, why = lowbattery.resume_decision(
                doc["battery"], cfg.mcu.low_battery_percent, cfg.mcu.resume_margin_percent)
    doc["resume"], doc["reason"] = resume, why
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'resume' if resume else 'wait'}: {why}")
    return 0 if resume else 1
