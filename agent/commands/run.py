"""wearcap run: the capture service (records the rig into sealed segments in the spool)."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.commands import finite_float

if TYPE_CHECKING:
    from agent.config import Config
    from agent.sources import Source

HELP = "record the camera and sensors into sealed segments (the capture service)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="config file (default: the device config, "
                   "or the simulated rig on a machine that is not a Pi)")
    p.add_argument("--duration", metavar="S", type=finite_float,
                   help="stop cleanly after S seconds (default: run until SIGINT/SIGTERM)")
    p.add_argument("--spool", metavar="D", help="spool directory (overrides spool.path)")


def _wrist_sources(cfg: Config) -> list[Source]:
    """The wrist-band (and MCU) sources of this rig: one WristSource per configured band."""
    from agent.wrist.source import WristSource

    return [WristSource(w, cfg.ble) for w in cfg.wrist]


EXIT_LOW_BATTERY = 3
"""Exit status after a low-battery stop: systemd/wearcap-capture.service does not restart on
it (RestartPreventExitStatus), so the rig is not restarted into the same brown-out."""


def _wearer(cfg: Config, sources: list[Source], spool_root: Path) -> Any:
    """The wearer's controls, when there is an MCU (the button, the LED, the battery)."""
    from agent.mcu.source import McuSource

    mcu = next((s for s in sources if isinstance(s, McuSource)), None)
    if mcu is None:
        return None
    from agent.mcu.controls import ControlSettings
    from agent.mcu.wearer import Wearer, WearerSettings

    m = cfg.mcu
    w = Wearer(mcu, spool_root, WearerSettings(
        controls=ControlSettings(long_press_s=m.long_press_s, discard_press_s=m.discard_press_s,
                                 cancel_s=m.discard_cancel_s, discard_minutes=m.discard_minutes),
        low_battery_percent=m.low_battery_percent))
    mcu.on_button = w.on_button
    return w


def _mcu_sources(cfg: Config, spool_root: Path, sim_mcu: Any = None) -> list[Source]:
    """The head MCU's source, when configured (on the simulated rig: its pty)."""
    if not cfg.mcu.enabled:
        return []
    from agent.mcu.source import McuSource

    port = cfg.mcu.port or (sim_mcu.path if sim_mcu is not None else "")
    if not port:
        from agent.errors import ConfigError

        raise ConfigError(cfg.sources[-1] if cfg.sources else "config", "mcu.port",
                          "mcu.enabled needs a port", allowed="a path, a symlink or usb:VID:PID")
    battery = cfg.sync.battery_file or str(spool_root / "battery.json")
    return [McuSource(port, cfg.mcu.baud, ping_hz=cfg.mcu.ping_hz,
                      batch_seconds=cfg.mcu.batch_seconds, battery_file=battery)]


def _notify(root: Path) -> Any:
    """systemd's notify, and on READY (recording) the end of a low-battery stop: its marker
    goes, so the resume timer stops looking at the gauge (agent.mcu.lowbattery)."""
    from agent import sdnotify
    from agent.mcu.lowbattery import clear_marker

    def notify(state: str) -> Any:
        if state.startswith("READY=1") and clear_marker(root):
            print("recording again after a low-battery stop", flush=True)
        return sdnotify.notify(state)

    return notify


def _sim_mcu(cfg: Config) -> AbstractContextManager[Any]:
    """The simulated head MCU on a pty, when the simulated rig has one (mcu.port empty)."""
    if cfg.sim.enabled and cfg.mcu.enabled and not cfg.mcu.port:
        from agent.sim.mcu import SimMcu, params_from_config

        return SimMcu(params_from_config(cfg))
    return contextlib.nullcontext()


def _sim_rig(cfg: Config) -> AbstractContextManager[Any]:
    """What the simulated rig needs around a recording (private BlueZ, simulated devices).
    Simulated wrist bands run behind a private BlueZ; nothing is needed for the camera alone."""
    if cfg.sim.enabled and cfg.wrist:
        from agent.sim.rig import SimRig

        return SimRig(cfg)
    return contextlib.nullcontext()


def run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.capture import CaptureService, CaptureSettings
    from agent.errors import UsageError
    from agent.record.spool import Spool

    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise UsageError(f"--duration must be a positive, finite number of seconds, got "
                         f"{args.duration:g} (leave it out to record until stopped)")
    cfg = config.load_default(args.config)
    root = Path(args.spool).expanduser() if args.spool else cfg.spool_path
    spool = Spool(root, cfg.device.id, reserve_mb=cfg.spool.reserve_mb,
                  max_gb=cfg.spool.max_gb)
    settings = CaptureSettings(
        device_id=cfg.device.id, config_digest=cfg.digest(),
        segment_seconds=cfg.segment.seconds, chunk_seconds=cfg.segment.chunk_seconds,
        chunk_bytes=cfg.segment.chunk_bytes, duration=args.duration,
        pause_motion=cfg.mcu.pause_motion)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    from agent import stopreason

    stopreason.clear_stop()
    wearer: Any = None
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _sim_rig(cfg) as rig, _sim_mcu(cfg) as sim_mcu:
            if cfg.sim.taps:
                from agent.sim.rig import script_taps

                script_taps(cfg, rig, sim_mcu)
            sources = _wrist_sources(cfg) + _mcu_sources(cfg, root, sim_mcu)
            camera = None
            if cfg.camera.backend != "none":
                from agent.camera.open import open_camera
                from agent.timeline import monotonic_ns

                camera = open_camera(cfg.camera, monotonic_ns)
                if sim_mcu is not None and hasattr(camera, "exposure_hook"):
                    camera.exposure_hook = sim_mcu.on_exposure  # the sensor's true exposures
            from agent.livestatus import Publisher

            wearer = _wearer(cfg, sources, root)
            service = CaptureService(settings, spool, camera, sources, stop=stop,
                                     wearer=wearer, publisher=Publisher(),
                                     notify=_notify(root))
            result = service.run()
            if result.stopped_for == "low-battery":
                from agent.mcu.lowbattery import write_marker

                write_marker(root, getattr(wearer.source, "battery", None),
                             cfg.mcu.low_battery_percent)
    except Exception as exc:
        # what stopped recording, for `wearcap status` (the LED shows it already)
        from agent.errors import WearcapError

        why = str(getattr(wearer, "fault_reason", "") or exc) or type(exc).__name__
        code = exc.exit_code if isinstance(exc, WearcapError) else 1
        stopreason.record_stop(root, "fault", why, code)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    size = sum(s.size for s in result.sealed)
    print(f"recorded {result.frames} frames into {len(result.sealed)} sealed segment(s), "
          f"{size / 1e6:.1f} MB, {result.gaps} gap(s) -> {spool.sealed}", flush=True)
    if result.paused_frames or result.events:
        print(f"wearer: {', '.join(result.events) or 'no events'}; "
              f"{result.paused_frames} frame(s) withheld while paused", flush=True)
    if result.stopped_for == "low-battery":
        pct = (getattr(wearer.source, "battery", None) or {}).get("percent")
        stopreason.record_stop(root, "low-battery", f"battery low ({pct} %), waiting for "
                               "charge", EXIT_LOW_BATTERY)
        print("stopped: battery low (the open segment was sealed); charge the rig: it "
              "resumes when charging (wearcap-capture-resume.timer)", flush=True)
        return EXIT_LOW_BATTERY
    return 0
