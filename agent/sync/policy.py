"""When to upload: a pure decision over an observed situation, plus thin injectable probes.

``decide(situation, rules)`` holds every opportunistic rule; the probes below only observe
(network name, battery state, whether capture is writing) and each takes what it reads as
an argument, so tests hand them text instead of patching the machine.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Rules:
    allowed_networks: tuple[str, ...] = ()
    """SSIDs or interface names; empty = any network."""
    only_while_charging: bool = False
    charging_unknown_allows: bool = True
    """With only_while_charging: whether an unknown battery state (no gauge) counts as charging."""
    pause_while_recording: bool = False


@dataclass(frozen=True, slots=True)
class Situation:
    collector_reachable: bool
    networks: tuple[str, ...] = ()
    """What the rig is on now: SSID and/or default-route interface."""
    charging: bool | None = None
    """None = unknown (no battery gauge, or no status file)."""
    recording: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    upload: bool
    reason: str


def decide(s: Situation, rules: Rules) -> Decision:
    """Whether to upload now, and why (the reason is shown in status and --once output)."""
    if rules.allowed_networks and not set(s.networks) & set(rules.allowed_networks):
        on = ", ".join(s.networks) or "no known network"
        return Decision(False, f"not on an allowed network (on {on})")
    if rules.only_while_charging:
        if s.charging is False:
            return Decision(False, "not charging")
        if s.charging is None and not rules.charging_unknown_allows:
            return Decision(False, "battery state unknown")
    if rules.pause_while_recording and s.recording:
        return Decision(False, "paused while recording")
    if not s.collector_reachable:
        return Decision(False, "collector unreachable")
    return Decision(True, "ok")


# ---------------------------------------------------------------- probes


Runner = Callable[[Sequence[str]], str]


def _run(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=2,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def ssid(run: Runner = _run) -> str | None:
    """The Wi-Fi network name (``iwgetid -r``), or None."""
    name = run(["iwgetid", "-r"]).strip()
    return name or None


def wireless_interfaces(proc_net_wireless: str) -> list[str]:
    """Interfaces listed in /proc/net/wireless (associated radios)."""
    out = []
    for line in proc_net_wireless.splitlines()[2:]:
        name, sep, _ = line.partition(":")
        if sep and name.strip():
            out.append(name.strip())
    return out


def default_route_interface(proc_net_route: str) -> str | None:
    """The interface of the default IPv4 route, from /proc/net/route text."""
    for line in proc_net_route.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 2 and cols[1] == "00000000":
            return cols[0]
    return None


def networks(run: Runner = _run, read: Callable[[str], str] | None = None) -> tuple[str, ...]:
    """Names that identify the current network: SSID, default-route interface."""
    reader = read or _read
    found: list[str] = []
    name = ssid(run)
    if name:
        found.append(name)
    iface = default_route_interface(reader("/proc/net/route"))
    if iface:
        found.append(iface)
    return tuple(found)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def charging(text: str | None) -> bool | None:
    """Battery state from the status file the capture service/MCU writes.

    Accepts JSON ``{"charging": true}`` or ``{"state": "charging"|"discharging"|"full"}``, or
    a bare word. Absent or unreadable = None (unknown).
    """
    if not text:
        return None
    text = text.strip()
    value: object = text
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("charging"), bool):
            return bool(data["charging"])
        value = data.get("state")
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in ("charging", "full", "ac", "true", "1"):
        return True
    if word in ("discharging", "battery", "false", "0"):
        return False
    return None


def recording(active_dir: Path) -> bool:
    """Capture is writing: a ``.part`` exists in ``active/``."""
    try:
        return any(p.name.endswith(".mcap.part") for p in active_dir.iterdir())
    except OSError:
        return False


# ---------------------------------------------------------------- bandwidth


class TokenBucket:
    """Caps a byte stream at ``rate`` bytes/s with a burst of ``burst`` bytes."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def take(self, n: int) -> float:
        """Wait until ``n`` bytes may pass; return the seconds waited."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        return wait
