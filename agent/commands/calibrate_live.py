"""wearcap calibrate's own short recording: the head MCU and one band, and the taps asked for.

    head, band = record(cfg, band, Prompter(), taps=12, min_taps=6, tap_timeout=15,
                        timeout=60, settle=60)     # stored-format IMU payloads of each

It opens the MCU and the band as the capture service would (agent.mcu.source.McuSource,
agent.wrist.source.WristSource), waits until both stream and the MCU's two-way mapping has
converged, lets the band stream for ``settle`` s, then asks for one tap at a time, then
streams as long again (the band's clock is refitted over all of it, agent.mcu.tap_refit).
Each tap the head IMU feels is confirmed on the LED (a white flash) and the haptic; the next
is asked for once it is. Nothing is written to the spool. On the simulated rig (``[sim]
enabled``) the rig taps for the technician a human reaction time after each prompt, on both
devices at the same true instant (agent.sim.rig.tap_rig).
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Config, WristBand
    from agent.mcu.source import McuSource
    from agent.sources import Source

CONFIRM_BATCH_S = 0.1
"""The MCU's IMU batches while calibrating: short, so a tap is confirmed at once."""
GAP_AFTER_TAP_S = 0.8
"""Quiet time after a confirmed tap before the next is asked for (taps stay apart)."""


class Prompter:
    """What the technician reads: one line per step (no cursor tricks: fine in a log)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def say(self, text: str) -> None:
        print(text, file=sys.stderr if self.quiet else sys.stdout, flush=True)


def _wait_streaming(sources: dict[str, Source], mcu: McuSource, deadline: float) -> None:
    from agent.errors import SourceError

    while True:
        for s in sources.values():
            s.drain()
        st = {n: s.status() for n, s in sources.items()}
        band_ok = all(v.get("streaming") for n, v in st.items() if n != "mcu")
        mcu_ok = bool(st["mcu"].get("streaming")) and bool(mcu.fit.converged)
        if band_ok and mcu_ok:
            return
        if time.monotonic() > deadline:
            for n, v in st.items():
                if n == "mcu" and not mcu_ok:
                    why = v.get("absent_cause") or v.get("last_error") or (
                        "its clock mapping has not converged" if v.get("streaming") else
                        "no hello")
                    raise SourceError(f"the head MCU is not ready: {why}", device="mcu")
                if n != "mcu" and not v.get("streaming"):
                    why = v.get("absent_cause") or v.get("last_error") or v.get("state")
                    raise SourceError(f"the band is not streaming: {why} (is it on, charged "
                                      "and near, and the capture service stopped?)", device=n)
        time.sleep(0.05)


class _HeadWatch:
    """Tap onsets of the head IMU as its batches come in (agent.mcu.tap)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.seen: list[int] = []

    def add(self, payload: dict[str, Any]) -> None:
        self.payloads.append(payload)

    def new_onsets(self, since_ns: int) -> list[int]:
        from agent.mcu import tap

        recent = tap.stream(self.payloads[-40:])  # the last seconds at 0.1 s batches
        found = [t for t in tap.onsets(recent.host_ns, recent.acc, recent.acc_scale)
                 if t >= since_ns and all(abs(t - s) > 300_000_000 for s in self.seen)]
        self.seen += found
        return found


def record(cfg: Config, band: WristBand, prompt: Prompter, *, taps: int, min_taps: int,
           tap_timeout: float, timeout: float, settle: float, tail: float | None = None,
           rng: random.Random | None = None,
           on_sim: Callable[[Any, Any], None] | None = None) -> tuple[list[dict[str, Any]],
                                                                       list[dict[str, Any]]]:
    """``settle`` s of the band's stream before the first tap and ``tail`` (default: as
    long) after the last: the band's clock is refitted over the whole recording
    (agent.mcu.tap_refit), and a one-way fit is tightest under its window's centre.
    ``on_sim(rig, mcu)``: told the simulated rig's devices once they run (tests)."""
    from agent import livestatus
    from agent.errors import SourceError, UsageError
    from agent.mcu import led
    from agent.mcu.records import IMU_TOPIC
    from agent.mcu.source import McuSource
    from agent.wrist.source import WristSource

    live = livestatus.find_capture()
    if live is not None and live.get("fresh"):
        raise UsageError("the capture service is running and holds the band and the MCU; "
                         "stop it first (systemctl stop wearcap-capture)")
    rng = rng or random.Random()
    band_topic = f"/wrist/{band.name}/imu"
    head = _HeadWatch()
    band_p: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wearcap-cal-")))
        rig = sim_mcu = None
        if cfg.sim.enabled:
            from agent.commands.run import _sim_mcu
            from agent.sim.rig import SimRig

            prompt.say("simulated rig: starting its bands and head MCU ...")
            rig = stack.enter_context(SimRig(cfg))
            sim_mcu = stack.enter_context(_sim_mcu(cfg))
            if on_sim is not None:
                on_sim(rig, sim_mcu)
        port = cfg.mcu.port or (sim_mcu.path if sim_mcu is not None else "")
        if not port:
            raise SourceError("no MCU port: set [mcu] port (a path, a udev symlink or "
                              "usb:VID:PID)", device="mcu")
        mcu = McuSource(port, cfg.mcu.baud, ping_hz=max(cfg.mcu.ping_hz, 20.0),
                        batch_seconds=CONFIRM_BATCH_S, battery_file=str(tmp / "battery.json"))
        wrist = WristSource(band, cfg.ble)
        sources: dict[str, Source] = {"mcu": mcu, band.name: wrist}
        for s in sources.values():
            s.start()
            stack.callback(s.stop)

        def pump() -> None:
            for s in sources.values():
                for m in s.drain():
                    if m.topic == IMU_TOPIC:
                        head.add(m.payload)
                    elif m.topic == band_topic:
                        band_p.append(m.payload)

        prompt.say(f"waiting for the head MCU and band {band.name} "
                   f"({band.address or 'simulated'}) to stream ...")
        _wait_streaming(sources, mcu, time.monotonic() + timeout)
        prompt.say(f"both streaming; {settle:g} s for the band's clock mapping to settle "
                   "(the band may move; no tapping yet) ...")
        end = time.monotonic() + settle
        while time.monotonic() < end:
            pump()
            time.sleep(0.05)
        got = 0
        for i in range(taps):
            prompt.say(f"tap {i + 1}/{taps}: tap band {band.name} once, firmly, against "
                       "the head mount")
            asked = time.monotonic_ns()
            if rig is not None:
                from agent.sim.rig import tap_rig

                tap_rig(rig, sim_mcu, band.name, asked + int(rng.uniform(0.25, 0.7) * 1e9))
            deadline = time.monotonic() + tap_timeout
            felt: list[int] = []
            while not felt and time.monotonic() < deadline:
                time.sleep(0.05)
                pump()
                felt = head.new_onsets(asked - 200_000_000)
            if not felt:
                if got >= min_taps:
                    prompt.say(f"  no tap felt in {tap_timeout:g} s; going on with {got}")
                    break
                raise SourceError(f"timeout: no tap felt by the head IMU in {tap_timeout:g} s "
                                  f"(tap {i + 1} of {taps}, {got} felt so far, {min_taps} "
                                  "needed); tap the band firmly against the head mount",
                                  device="mcu")
            got = i + 1
            mcu.set_led(led.FAST, led.WHITE)
            mcu.haptic(1, 60)
            prompt.say(f"  felt ({got} so far)")
            end = time.monotonic() + GAP_AFTER_TAP_S
            while time.monotonic() < end:
                pump()
                time.sleep(0.05)
            mcu.set_led(led.SOLID, led.GREEN)
        after = settle if tail is None else tail
        prompt.say(f"taps done; {after:g} s more of the band's stream (no tapping): its "
                   "clock is refitted over the whole recording, tightest in the middle ...")
        end = time.monotonic() + after + cfg.ble.batch_seconds + 1.5
        while time.monotonic() < end:
            pump()
            time.sleep(0.05)
        for s in sources.values():
            s.flush()
        pump()
    return head.payloads, band_p
