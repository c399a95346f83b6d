"""wearcap pair: scan for wrist bands, list them, pick the nearest, write it into the config."""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from agent.commands import finite_float

HELP = "scan for wrist bands, list them with RSSI and profile, pair the nearest (--write)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config (default: the device's own, "
                   "or the simulated rig off a Pi)")
    p.add_argument("--scan-seconds", type=finite_float, default=4.0, metavar="S",
                   help="how long to scan (default %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--write", action="store_true",
                   help="write the nearest band(s) into the config file (--config, else "
                        "/etc/wearcap/agent.toml)")


async def _scan(adapter: str, seconds: float) -> list[dict[str, Any]]:
    """Every device BlueZ knows on ``adapter`` after an active scan, with its properties."""
    from bleak import BleakScanner

    from agent.wrist.bluez_dbus import managed_objects

    async with BleakScanner(bluez={"adapter": adapter}):
        import asyncio

        await asyncio.sleep(seconds)
    objects = await managed_objects()
    out = []
    prefix = f"/org/bluez/{adapter}/dev_"
    for path, ifaces in objects.items():
        dev = ifaces.get("org.bluez.Device1")
        if not path.startswith(prefix) or dev is None or "/" in path[len(prefix):]:
            continue
        props = {k: v.value for k, v in dev.items()}
        out.append({"address": props.get("Address", ""), "name": props.get("Name"),
                    "rssi": props.get("RSSI"), "uuids": list(props.get("UUIDs", []))})
    return out


def detect(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bands among the devices, each with its profile, nearest (strongest RSSI) first."""
    from agent.wrist.profiles import known_profiles, load_profile

    profiles = [load_profile(n) for n in known_profiles()]
    bands = []
    for d in found:
        prof = next((p.name for p in profiles
                     if p.matches_advertisement(d["name"], d["uuids"])), None)
        if prof is not None:
            bands.append({**d, "profile": prof})
    bands.sort(key=lambda b: (-(b["rssi"] if b["rssi"] is not None else -999), b["address"]))
    return bands


_LINE = re.compile(r"""^(?P<indent>\s*)[A-Za-z_]+\s*=\s*(?:"[^"]*"|'[^']*'|[^#]*?)"""
                   r"(?P<comment>\s*#.*)?$")


def _replace_value(line: str, assignment: str) -> str:
    """``assignment`` in place of the line's, keeping its indentation and end comment."""
    m = _LINE.match(line)
    if m is None:
        return assignment
    return f"{m['indent']}{assignment}{m['comment'] or ''}"


def write_bands(path: Path, picks: list[dict[str, Any]], names: list[str]) -> None:
    """Set address and profile of the first ``len(picks)`` [[wrist]] tables of ``path`` (or
    append tables), keeping every other line as it was; the result is validated first."""
    from agent import config

    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    heads = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*wrist\s*\]\]", ln)]
    for k, pick in enumerate(picks):
        if k < len(heads):
            start = heads[k]
            end = next((j for j in range(start + 1, len(lines))
                        if re.match(r"\s*\[", lines[j])), len(lines))
            for key in ("address", "profile"):
                value = f'{key} = "{pick[key]}"'
                at = next((j for j in range(start + 1, end)
                           if re.match(rf"\s*{key}\s*=", lines[j])), None)
                if at is None:
                    lines.insert(start + 1, value)
                    end += 1
                    heads = [h + 1 if h > start else h for h in heads]
                else:
                    lines[at] = _replace_value(lines[at], value)
        else:
            lines += ["", "[[wrist]]", f'name = "{names[k]}"', f'address = "{pick["address"]}"',
                      f'profile = "{pick["profile"]}"']
    new = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pair-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(new)
        config.load(tmp)  # never write a config that does not load
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging

    from agent import config
    from agent.errors import SourceError, UsageError

    if not args.scan_seconds > 0:
        raise UsageError(f"--scan-seconds must be positive, got {args.scan_seconds}")
    cfg = config.load_default(args.config)
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)
    rig: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if cfg.sim.enabled and cfg.wrist:
        from agent.sim.rig import SimRig

        rig = SimRig(cfg)
    with rig:
        try:
            found = asyncio.run(_scan(cfg.ble.adapter, args.scan_seconds))
        except Exception as exc:
            raise SourceError(f"cannot scan on {cfg.ble.adapter} (is Bluetooth up and the "
                              f"adapter present?): {exc}", device=cfg.ble.adapter) from exc
    bands = detect(found)
    slots = max(1, len(cfg.wrist))
    picks = bands[:slots]
    target = Path(args.config) if args.config else config.DEVICE_LOCAL
    if args.json:
        print(json.dumps({"adapter": cfg.ble.adapter, "bands": bands,
                          "picked": [b["address"] for b in picks],
                          "written": str(target) if args.write and picks else None}, indent=2))
    else:
        for b in bands:
            mark = "*" if b in picks else " "
            rssi = "?" if b["rssi"] is None else f"{b['rssi']} dBm"
            print(f"{mark} {b['address']}  {rssi:>8}  {b['profile']:<13} {b['name'] or ''}")
    if not bands:
        raise SourceError(f"no wrist bands found in {args.scan_seconds:g} s: is the band on, "
                          "charged and near?", device=cfg.ble.adapter)
    if args.write:
        names = [w.name for w in cfg.wrist] or ["left"]
        names += ["right"] * (len(picks) - len(names))
        write_bands(target, picks, names)
        if not args.json:
            print(f"paired {', '.join(b['address'] for b in picks)} -> {target}")
    return 0
