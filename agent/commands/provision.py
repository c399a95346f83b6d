"""wearcap provision: give a rig its identity and make it record, verified, in minutes.

    wearcap provision --collector https://c.example/files/ --code K7QM-2WXD-9TGA \\
                      --device-id rig-0042 [--profile pi5-imx708] [--yes]

1. enroll with the collector using a one-time code (``wearcap collector code``): the device
   id is checked for collisions there, and the rig gets its token (stored 0600, owned by the
   service user) and its sequence floor;
2. pair the wrist bands: the two nearest by RSSI, left and right by which one the technician
   shakes (or ``--left/--right ADDR``);
3. write the device config (``/etc/wearcap/agent.toml``), validated before it replaces any;
4. store the sequence floor in the spool, so capture never waits for the network to know its
   next seq;
5. finish with a selftest.

Every flag has a prompt on a terminal and none off one (``--yes`` never prompts): provisioning
hundreds of rigs is a script. After an SD-card swap: revoke the old identity on the collector
(``wearcap collector revoke ID``), issue a code, and provision again with the same id
(``--force`` if a config survived); the rig's numbering carries on from the collector's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP = "enroll this rig with a one-time code, pair its bands, write its config, selftest"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collector", metavar="URL", help="the collector's upload URL "
                   "(https://HOST/files/)")
    p.add_argument("--code", help="one-time enrollment code (wearcap collector code)")
    p.add_argument("--device-id", metavar="ID", help="this rig's id, unique in the fleet")
    p.add_argument("--profile", help="device profile in device_configs/ (default: sim off a "
                   "Pi; required on a Pi)")
    p.add_argument("--config", metavar="F", help="device config to write (default "
                   "/etc/wearcap/agent.toml)")
    p.add_argument("--token-file", metavar="F", help="where the token goes (default: "
                   "'token' beside the config)")
    p.add_argument("--spool", metavar="D", help="spool directory (default: the profile's)")
    p.add_argument("--left", metavar="ADDR", help="left band's address (skips shaking)")
    p.add_argument("--right", metavar="ADDR", help="right band's address")
    p.add_argument("--bands", type=int, choices=(0, 1, 2), default=2,
                   help="how many wrist bands this rig wears (default 2)")
    p.add_argument("--scan-seconds", type=float, default=4.0, metavar="S")
    p.add_argument("--shake-seconds", type=float, default=4.0, metavar="S",
                   help="how long to watch for the shake (default 4)")
    p.add_argument("--simulate-shake", metavar="ADDR", help="simulated rig only: the "
                   "simulated wearer shakes this band when asked")
    p.add_argument("--selftest-seconds", type=float, default=5.0, metavar="S")
    p.add_argument("--no-selftest", action="store_true", help="skip the final selftest")
    p.add_argument("--force", action="store_true",
                   help="replace an existing device config (re-provisioning)")
    p.add_argument("--yes", action="store_true", help="never prompt (scripts)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


class _Steps:
    def __init__(self, quiet: bool) -> None:
        self.t0 = time.monotonic()
        self.quiet = quiet
        self.log: list[dict[str, Any]] = []

    def done(self, step: str, detail: str) -> None:
        t = time.monotonic() - self.t0
        self.log.append({"step": step, "at_s": round(t, 2), "detail": detail})
        if not self.quiet:
            print(f"[{t:6.1f} s] {step}: {detail}", flush=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def _ask(args: argparse.Namespace, name: str, prompt: str) -> str:
    from agent.errors import UsageError

    value = getattr(args, name)
    if value:
        return str(value)
    flag = "--" + name.replace("_", "-")
    if args.yes or not sys.stdin.isatty():
        raise UsageError(f"{flag} is required (no prompts without a terminal)")
    try:
        value = input(f"{prompt}: ").strip()
    except EOFError:
        value = ""
    if not value:
        raise UsageError(f"{flag} is required")
    return value


def files_url(url: str) -> str:
    base = url.rstrip("/")
    return (base if base.endswith("/files") else base + "/files") + "/"


def redeem(url: str, code: str, device_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """POST /enroll; the collector's refusal (reused, expired, revoked, taken) as a clear
    error naming what to do."""
    import httpx

    from agent.errors import WearcapError
    from agent.selftest import collector_base

    target = collector_base(url) + "/enroll"
    try:
        r = httpx.post(target, json={"code": code, "device_id": device_id}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise WearcapError(f"cannot reach the collector at {target}: {exc}; check the "
                           "network and --collector") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 201 and isinstance(body, dict) and body.get("token"):
        return body
    why = body.get("error") if isinstance(body, dict) else None
    raise WearcapError(f"the collector refused to enroll {device_id}: "
                       f"{why or f'HTTP {r.status_code}: {r.text[:200]}'}")


def write_token(path: Path, token: str) -> None:
    """0600, owned by the service user when there is one (and we may chown)."""
    import pwd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("wearcap")
        except KeyError:
            pass
        else:
            os.chown(tmp, user.pw_uid, user.pw_gid)
    os.replace(tmp, path)


def config_text(*, profile: str, device_id: str, url: str, token_file: Path,
                spool: str | None, bands: list[tuple[str, dict[str, Any]]]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# written by wearcap provision, {when}", f'profile = "{profile}"']
    if not bands:
        lines += ["wrist = []  # this rig wears no band"]
    lines += ["", "[device]", f'id = "{device_id}"', ""]
    if spool:
        lines += ["[spool]", f'path = "{spool}"', ""]
    lines += ["[sync]", f'url = "{url}"', f'token_file = "{token_file}"', ""]
    for name, b in bands:
        lines += ["[[wrist]]", f'name = "{name}"', f'address = "{b["address"]}"',
                  f'profile = "{b["profile"]}"', ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _pair(args: argparse.Namespace, base: Any, steps: _Steps) -> list[tuple[str, dict[str, Any]]]:
    """[(name, band)] for the config: scan, the nearest N, left/right by shaking."""
    import asyncio
    import contextlib
    import logging

    from agent import pairing
    from agent.commands.pair import _scan, detect
    from agent.errors import SourceError, UsageError

    if args.bands == 0:
        return []
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)
    rig: Any = contextlib.nullcontext()
    if base.sim.enabled:
        from agent.sim.rig import SimRig

        rig = SimRig(base)
    elif args.simulate_shake:
        raise UsageError("--simulate-shake works on the simulated rig only")
    rate = base.wrist[0].rate_hz if base.wrist else 200.0
    with rig as sim:
        try:
            found = asyncio.run(_scan(base.ble.adapter, args.scan_seconds))
        except Exception as exc:
            raise SourceError(f"cannot scan on {base.ble.adapter} (is Bluetooth up?): {exc}",
                              device=base.ble.adapter) from exc
        bands = detect(found)
        if args.left or args.right:
            by = {b["address"].upper(): b for b in bands}
            picked = []
            for name in ("left", "right")[:args.bands]:
                addr = str(getattr(args, name) or "").upper()
                if not addr:
                    raise UsageError(f"--{name} is needed too (or give neither and shake)")
                if addr not in by:
                    raise SourceError(f"no band {addr} in range (seen: "
                                      f"{', '.join(by) or 'none'}): is it on?", device=name)
                picked.append((name, by[addr]))
            steps.done("pair", ", ".join(f"{n} {b['address']}" for n, b in picked)
                       + " (given)")
            return picked
        if len(bands) < args.bands:
            raise SourceError(f"found {len(bands)} band(s) in {args.scan_seconds:g} s, need "
                              f"{args.bands}: switch them on, bring them close, and try "
                              "again", device=base.ble.adapter)
        near = bands[:args.bands]
        steps.done("scan", ", ".join(f"{b['address']} ({b['rssi']} dBm, {b['profile']})"
                                     for b in near))
        if args.bands == 1:
            steps.done("pair", f"left {near[0]['address']}")
            return [("left", near[0])]

        def prompt() -> None:
            steps.say(f">>> shake the band for the LEFT wrist now ({args.shake_seconds:g} s)")
            if args.simulate_shake:
                target = args.simulate_shake.upper()
                name = next((b.name for b in sim.bands if b.address == target), None)
                if name is None:
                    raise UsageError(f"--simulate-shake {target}: not a simulated band")
                sim.fault(name, f"shake {args.shake_seconds + 1:g}")

        left, right, energy = pairing.shake_to_assign(
            near, base.ble, rate_hz=rate, seconds=args.shake_seconds, prompt=prompt)
        steps.done("pair", f"left {left['address']} (moved: {energy[left['address']]:.0f}), "
                           f"right {right['address']} ({energy[right['address']]:.0f})")
        return [("left", left), ("right", right)]


def run(args: argparse.Namespace) -> int:
    from agent import config, selftest
    from agent.contract import DEVICE_ID_PATTERN, is_device_id
    from agent.errors import ConfigError, UsageError
    from agent.record.spool import Spool

    steps = _Steps(args.json)
    target = Path(args.config) if args.config else config.DEVICE_LOCAL
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists: this rig is already provisioned. To provision it "
                         "again (new identity or SD card), pass --force")
    profile = args.profile or ("sim" if not config.is_raspberry_pi() else "")
    if not profile:
        profile = _ask(args, "profile", "device profile (e.g. pi5-imx708)")
    base = config.load(config.find_profile(profile, "--profile"))
    url = files_url(_ask(args, "collector", "collector URL (https://HOST/files/)"))
    device_id = _ask(args, "device_id", "device id (unique in the fleet)")
    if not is_device_id(device_id):
        raise UsageError(f"--device-id {device_id!r} must match {DEVICE_ID_PATTERN}")
    code = _ask(args, "code", "enrollment code")
    token_file = Path(args.token_file) if args.token_file else target.parent / "token"
    for s in (args.shake_seconds, args.scan_seconds, args.selftest_seconds):
        if not 0 < s < 3600:
            raise UsageError("--scan-seconds, --shake-seconds and --selftest-seconds must be "
                             "positive")

    # Pair first: a band that is off is found before the one-time code is spent.
    bands = _pair(args, base, steps)

    got = redeem(url, code, device_id)
    write_token(token_file, str(got["token"]))
    next_seq = int(got.get("next_seq") or 0)
    steps.done("enroll", f"{device_id} enrolled at {url}; token in {token_file} (0600); "
                         f"sequence floor {next_seq}")

    text = config_text(profile=profile, device_id=device_id, url=url, token_file=token_file,
                       spool=args.spool, bands=bands)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    try:
        cfg = config.load(tmp)
    except ConfigError:
        tmp.unlink()
        raise
    os.replace(tmp, target)
    cfg = config.load(target)
    steps.done("config", f"wrote {target}")

    spool = cfg.spool_path
    nxt = Spool(spool, device_id).raise_floor(next_seq)
    steps.done("spool", f"{spool}: the next segment is {device_id} seq {nxt}")

    report = None
    if not args.no_selftest:
        report = selftest.run_all(cfg, spool, seconds=args.selftest_seconds)
        selftest.save(report, spool)
        failed = [c for c in report.checks if c.result == "fail"]
        steps.done("selftest", "passed" if report.ok else
                   "FAILED: " + "; ".join(f"{c.name}: {c.detail} -> {c.fix}" for c in failed))
    total = time.monotonic() - steps.t0
    ok = report is None or report.ok
    if args.json:
        print(json.dumps({"ok": ok, "device_id": device_id, "config": str(target),
                          "token_file": str(token_file), "next_seq": nxt,
                          "bands": {n: b["address"] for n, b in bands},
                          "selftest": report.to_dict() if report else None,
                          "steps": steps.log, "seconds": round(total, 1)}, indent=2))
    else:
        print(f"provisioned {device_id} in {total:.1f} s"
              + ("" if ok else "; the selftest failed: fix what it names, then run "
                 "wearcap selftest"), flush=True)
    return 0 if ok else 1
