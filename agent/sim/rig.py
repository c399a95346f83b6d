"""SimRig: the simulated wrist bands of the simulated rig, behind a private user-space BlueZ.

    with SimRig(cfg) as rig:            # bus + BlueZoo + one band program per [[wrist]]
                                        # (and per [sim] neighbour_rssi_dbm entry)
        ...                             # bleak in this process talks to the private bus
        rig.fault("left", "drop")       # scripted faults, see agent.sim.peripheral
        rig.stats("left")               # what the band delivered

Start-up takes well under a second on a laptop-class machine. Everything is torn down on
exit, even after an exception: each child runs in its own process group and dies with us.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.config import Config
from agent.errors import SourceError
from agent.sim.bluez import BUS_ENV, CENTRAL_ADDRESS, PrivateBluez, spawn, terminate

TRUTH_ENV = "WEARCAP_SIM_TRUTH"
"""When set, a file the rig writes at stop: each band's sampling ground truth (its true
start, phase and period on the host clock), so a recording's timestamps can be checked."""


DEFAULT_RSSI_DBM = -50
"""A band on the wearer's wrist, seen from the head mount, when [sim] band_rssi_dbm is silent."""


def sim_address(index: int) -> str:
    """The default address of simulated band ``index`` (0-based)."""
    return f"00:AA:BB:CC:DD:{index + 1:02X}"


@dataclass(slots=True)
class SimBand:
    name: str
    address: str
    adapter: str
    profile: str
    control: str
    rate_hz: float = 100.0
    rssi: int = -50
    """What the rig's adapter sees of this band (agent.sim.radio)."""
    proc: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)


class SimRig:
    """Private bus + BlueZoo + one peripheral program per configured band."""

    def __init__(self, cfg: Config, *, band_args: dict[str, list[str]] | None = None,
                 profile: str | None = None, ready_timeout: float = 20.0) -> None:
        """``band_args``: extra peripheral flags per band name (e.g. ``["--drop-every",
        "60"]``); ``profile`` overrides every band's profile (e.g. ``"counter"``)."""
        self.cfg = cfg
        self.band_args = band_args or {}
        self.ready_timeout = ready_timeout
        central = int(cfg.ble.adapter.removeprefix("hci"))
        sim = cfg.sim
        n = len(cfg.wrist) + len(sim.neighbour_rssi_dbm)
        if central > n:
            raise SourceError(f"the simulated rig numbers adapters hci0..hci{n}; "
                              f"ble.adapter {cfg.ble.adapter} is outside", device="sim")
        slots = [i for i in range(n + 1) if i != central]
        self.bands = [
            SimBand(name=w.name, address=(w.address or sim_address(i)).upper(),
                    adapter=f"hci{slots[i]}", profile=profile or w.profile, control="",
                    rate_hz=w.rate_hz,
                    rssi=round(sim.band_rssi_dbm[i]) if i < len(sim.band_rssi_dbm)
                    else DEFAULT_RSSI_DBM)
            for i, w in enumerate(cfg.wrist)
        ]
        taken = {b.address for b in self.bands}
        free = (a for a in (sim_address(i) for i in range(n * 2 + 1)) if a not in taken)
        first = cfg.wrist[0] if cfg.wrist else None
        for k, dbm in enumerate(sim.neighbour_rssi_dbm):
            i = len(cfg.wrist) + k
            self.bands.append(SimBand(
                name=f"neighbour{k + 1}", address=next(free), adapter=f"hci{slots[i]}",
                profile=profile or (first.profile if first else "open"), control="",
                rate_hz=first.rate_hz if first else 100.0, rssi=round(dbm)))
        addresses = [""] * (n + 1)
        addresses[central] = CENTRAL_ADDRESS
        for b in self.bands:
            addresses[int(b.adapter[3:])] = b.address
        self.bluez = PrivateBluez(addresses, rssi={b.address: b.rssi for b in self.bands})
        self._saved_env: str | None = None
        self._exported = False

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> SimRig:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.bluez.start()
        sim = self.cfg.sim
        for i, b in enumerate(self.bands):
            prefix = _name_prefix(b.profile)
            b.control = str(self.bluez.dir / f"{b.name}.sock")
            b.argv = [sys.executable, "-m", "agent.sim.peripheral", "--adapter", b.adapter,
                      "--central", self.cfg.ble.adapter, "--profile", b.profile,
                      "--name", f"{prefix}{b.name}", "--rate", f"{b.rate_hz:g}",
                      "--seed", str(sim.seed + i), "--drift-ppm", f"{sim.drift_ppm:g}",
                      "--interval-ms", *(f"{x:g}" for x in sim.interval_ms),
                      "--control", b.control, *_latency_args(sim.band_latency_ms, i),
                      *self.band_args.get(b.name, [])]
            log = (self.bluez.dir / f"{b.name}.log").open("wb")
            b.proc = spawn(b.argv, self.bluez.env, stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + self.ready_timeout
        for b in self.bands:
            self._wait_ready(b, deadline)
        self._saved_env = os.environ.get(BUS_ENV)
        os.environ[BUS_ENV] = self.bluez.address
        self._exported = True

    def _wait_ready(self, b: SimBand, deadline: float) -> None:
        assert b.proc is not None and b.proc.stdout is not None
        out = b.proc.stdout
        while True:
            left = deadline - time.monotonic()
            if b.proc.poll() is not None or left <= 0:
                log = (self.bluez.dir / f"{b.name}.log").read_text(errors="replace")[-2000:]
                raise SourceError(f"simulated band did not start: {log.strip()}",
                                  device=b.name)
            ready, _, _ = select.select([out], [], [], min(left, 0.2))
            if ready:
                line = out.readline().decode(errors="replace")
                if line.startswith("ready"):
                    return

    def stop(self) -> None:
        truth_file = os.environ.get(TRUTH_ENV)
        if truth_file:
            self._save_truth(Path(truth_file))
        for b in self.bands:
            if b.proc is not None:
                terminate(b.proc)
                if b.proc.stdout is not None:
                    b.proc.stdout.close()
                b.proc = None
        self.bluez.stop()
        if self._exported:
            if self._saved_env is None:
                os.environ.pop(BUS_ENV, None)
            else:
                os.environ[BUS_ENV] = self._saved_env
            self._exported = False

    def _save_truth(self, path: Path) -> None:
        """Each band's sampling ground truth, for `wearcap demo`'s timestamp error."""
        truth: dict[str, Any] = {}
        for b in self.bands:
            if b.proc is None or b.proc.poll() is not None:
                continue
            try:
                truth[b.name] = self.stats(b.name).get("truth")
            except (OSError, ValueError, SourceError):
                continue
        with contextlib.suppress(OSError):
            path.write_text(json.dumps(truth))

    # ------------------------------------------------------------ control

    @property
    def address(self) -> str:
        """D-Bus address of the private system bus."""
        return self.bluez.address

    def band(self, name: str) -> SimBand:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)

    def set_rssi(self, name: str, dbm: int) -> None:
        """Move a band: the rig sees it at ``dbm`` from the next scan on."""
        b = self.band(name)
        b.rssi = int(dbm)
        self.bluez.set_rssi({b.address: b.rssi})

    def fault(self, name: str, command: str, timeout: float = 10.0) -> dict[str, Any]:
        """Send one control command to a band (drop, abort N, vanish S, firmware,
        malformed N, stats) and return its JSON answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.band(name).control)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply: dict[str, Any] = json.loads(buf or b"{}")
        if not reply.get("ok"):
            raise SourceError(f"band refused {command!r}: {reply.get('error')}", device=name)
        return reply

    def stats(self, name: str) -> dict[str, Any]:
        return self.fault(name, "stats")

    def tap(self, name: str, host_ns: int) -> None:
        """Band ``name`` is tapped against the head mount at true host time ``host_ns``
        (give the simulated MCU the same instant: ``tap_rig``)."""
        self.fault(name, f"tap {int(host_ns)}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.bluez.procs] + [b.proc.pid for b in self.bands if b.proc]


def _latency_args(latencies: list[float], i: int) -> list[str]:
    return ["--latency-ms", f"{latencies[i]:g}"] if i < len(latencies) else []


def tap_rig(rig: SimRig, mcu: Any, band: str, host_ns: int) -> None:
    """One tap of band ``band`` against the head mount at true host time ``host_ns``: the
    band's accelerometer and the head MCU's IMU (``agent.sim.mcu.SimMcu``) both feel it."""
    rig.tap(band, host_ns)
    if mcu is not None:
        mcu.tap(host_ns)


def script_taps(cfg: Config, rig: SimRig | None, mcu: Any) -> None:
    """The taps of ``[sim] taps`` ("BAND:AT_S", seconds from now), on both devices."""
    if rig is None or not cfg.sim.taps:
        return
    now = time.monotonic_ns()
    for item in cfg.sim.taps:
        band, _, at = str(item).rpartition(":")
        try:
            tap_rig(rig, mcu, band, now + int(float(at) * 1e9))
        except (KeyError, ValueError) as exc:
            raise SourceError(f"[sim] taps: cannot tap {item!r} ({exc}); give "
                              "\"BAND:SECONDS\" with a [[wrist]] band's name",
                              device="sim") from None


def _name_prefix(profile: str) -> str:
    try:
        from agent.wrist.profiles import load_profile

        prefixes = load_profile(profile).name_prefixes
        return prefixes[0] if prefixes else "band-"
    except Exception:
        return "band-"
