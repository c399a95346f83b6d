"""What the wearer touches and sees, wired to the capture loop: button, LED, battery.

    w = Wearer(source, spool_root, settings)       # source: the McuSource (or None)
    McuSource(on_button=w.on_button)               # edges, already on the host timeline
    for action in w.poll(now_ns): ...              # the capture loop applies them

``poll`` runs on the writer's thread (like the sources' ``drain``): it feeds queued button
edges and the time into the state machine (agent.mcu.controls), adds ``low-battery`` when the
gauge reads at or below ``low_battery_percent`` while not charging, and keeps the LED on
agent.mcu.led's table (a command only when it changes, and again every ``led_refresh_s``, so
a replugged or rebooted MCU shows the right state). A discard being armed also pulses the
haptic.

Discard requests are durable: ``request_discard`` writes ``<spool>/discard/<when>.json``
(agent.durable.write_atomic) naming the window and the sealed
segments that overlap it; the sync service carries it out (see docs/design-notes.md).
Capture never touches the network.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.durable import write_atomic
from agent.mcu.controls import Action, Controls, ControlSettings
from agent.mcu.led import RigState, led
from agent.record.discard import DISCARD_DIR

log = logging.getLogger("wearcap.wearer")

SYNC_STATUS = "sync-status.json"
"""Written by the sync service in the spool (agent.sync.service.STATUS_FILE)."""



@dataclass(frozen=True)
class WearerSettings:
    controls: ControlSettings = ControlSettings()
    low_battery_percent: int = 5
    """At or below this (not charging), capture seals and stops; 0 never."""
    led_refresh_s: float = 5.0


class Wearer:
    def __init__(self, source: Any, spool_root: Path | None,
                 settings: WearerSettings | None = None) -> None:
        self.source = source
        self.spool_root = spool_root
        self.s = settings or WearerSettings()
        self.controls = Controls(self.s.controls)
        self._edges: list[tuple[bool, int]] = []
        self._led: tuple[int, int] | None = None
        self._led_at = 0
        self.fault = False
        self.fault_reason = ""
        self.syncing = False
        self._sync_read_at = 0
        self._low_sent = False
        self.requests: list[Path] = []
        self.stopped = False

    def on_button(self, down: bool, host_ns: int) -> None:
        self._edges.append((down, host_ns))

    @property
    def paused(self) -> bool:
        return self.controls.paused

    def poll(self, now_ns: int) -> list[Action]:
        out: list[Action] = []
        edges, self._edges = self._edges, []
        for down, t in edges:
            out += self.controls.edge(down, t)
        out += self.controls.tick(now_ns)
        if self._low_battery() and not self._low_sent:
            self._low_sent = True
            b = self.source.battery
            out.append(Action("low-battery", now_ns, {"percent": b["percent"],
                                                      "millivolts": b["millivolts"]}))
        if any(a.kind == "discard-armed" for a in out) and self.source is not None:
            self.source.haptic(2, 150)
        self._update_led(now_ns)
        return out

    def show_fault(self, reason: str, *, wait_s: float = 3.0) -> bool:
        """Recording stopped on a fault (disk full, camera failed): the LED shows the fault
        row now, not at the next refresh, and the MCU keeps it after this process exits (it
        holds the last pattern, docs/mcu-protocol.md). If the link is not up yet (a fault
        at start), waits up to ``wait_s`` for the MCU's hello. True if the command went out."""
        self.fault, self.fault_reason = True, reason
        src = self.source
        if src is None:
            return False
        deadline = time.monotonic() + wait_s
        while not src.status().get("streaming") and time.monotonic() < deadline:
            src.drain()  # the hello is decoded on this thread
            time.sleep(0.05)
        want = led(self.state())
        self._led, self._led_at = want, time.monotonic_ns()
        src.set_led(*want)
        log.error("fault shown on the LED: %s", reason)
        return bool(src.status().get("streaming"))

    def show_stopped(self) -> bool:
        """Capture stops on purpose (SIGTERM, the end of ``--duration``, a low battery): the
        LED leaves "recording" now, before the MCU is told ``bye`` and keeps the pattern. A
        low battery or a fault already shown keeps its row (agent.mcu.led). True if the
        command went out."""
        self.stopped = True
        src = self.source
        if src is None or not src.status().get("streaming"):
            return False
        want = led(self.state())
        self._led, self._led_at = want, time.monotonic_ns()
        src.set_led(*want)
        return True

    def _low_battery(self) -> bool:
        b = getattr(self.source, "battery", None)
        return bool(b and self.s.low_battery_percent > 0 and not b["charging"]
                    and b["percent"] <= self.s.low_battery_percent)

    def state(self) -> RigState:
        live = not self.stopped  # a stopped rig is not discarding, paused nor recording
        return RigState(fault=self.fault, discarding=live and self.controls.discarding,
                        low_battery=self._low_battery(), paused=live and self.paused,
                        recording=live, syncing=live and self.syncing, stopped=self.stopped)

    def _read_sync(self, now_ns: int) -> None:
        """Syncing: the sync service's status file (agent.sync.service) says it is uploading
        a backlog, and was written within the last minute."""
        if self.spool_root is None or now_ns - self._sync_read_at < 5e9:
            return
        self._sync_read_at = now_ns
        try:
            st = json.loads((self.spool_root / SYNC_STATUS).read_text())
            fresh = time.time() - float(st.get("updated", 0)) < 60
            self.syncing = bool(fresh and st.get("uploading") and st.get("backlog_segments"))
        except (OSError, ValueError, TypeError, AttributeError):
            self.syncing = False

    def _update_led(self, now_ns: int) -> None:
        if self.source is None:
            return
        self._read_sync(now_ns)
        want = led(self.state())
        if want != self._led or now_ns - self._led_at >= self.s.led_refresh_s * 1e9:
            self._led, self._led_at = want, now_ns
            self.source.set_led(*want)

    def request_discard(self, action: Action, sealed: Iterable[tuple[str, int, int]]) -> Path:
        """Write the durable request: the window and every sealed segment (id, first ns,
        last ns) that overlaps it."""
        assert self.spool_root is not None
        lo, hi = int(action.detail["from_ns"]), int(action.detail["to_ns"])
        ids = [sid for sid, a, b in sealed if a <= hi and b >= lo]
        d = self.spool_root / DISCARD_DIR
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{action.host_ns}.json"
        body = json.dumps({"requested_ns": action.host_ns, "from_ns": lo, "to_ns": hi,
                           "minutes": action.detail.get("minutes"), "segments": ids,
                           "state": "pending"}, indent=1)
        write_atomic(path, body.encode())
        self.requests.append(path)
        log.warning("discard requested: %d segment(s) overlapping the last %s min: %s",
                    len(ids), action.detail.get("minutes"), ", ".join(ids) or "none")
        return path
