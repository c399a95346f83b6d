"""The whole simulated rig recording in this process, as `wearcap run` does (camera, two 200 Hz
wrist bands behind the private BlueZ, the 1 kHz head MCU on a pty, the capture service in a
thread named ``writer``), for the benches that measure the capture's own CPU.

    with recording(seconds=25, mcu=True, publisher=...) as rig:
        time.sleep(5); c0 = thread_cpu(); time.sleep(20); c1 = thread_cpu()
        names = rig.thread_names()
    # leaving the block stops the capture and joins the writer

``thread_cpu()`` reads every thread's user+system CPU seconds from /proc/self/task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            f = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / TICK
    return out


@dataclasses.dataclass
class Rig:
    service: Any
    sources: list[Any]
    writer: threading.Thread
    spool_root: Path
    publisher: Any

    @staticmethod
    def thread_names() -> dict[int | None, str]:
        return {t.native_id: t.name for t in threading.enumerate()}


@contextlib.contextmanager
def recording(seconds: float, *, mcu: bool = True, publisher: Any = None,
              notify: str | None = None,
              interval_ms: tuple[float, float] | None = None) -> Iterator[Rig]:
    """Record for at most ``seconds`` (the block may end it sooner) on the simulated rig.
    The live status is published as `wearcap run` does, into a directory on /dev/shm
    (``publisher``: another agent.livestatus.Publisher). ``notify``: every band's ``notify``
    key (auto: AcquireNotify where offered, except for a two-way band, which keeps
    StartNotify; acquire: AcquireNotify where offered; start: StartNotify), else the config's.
    ``interval_ms``: the simulated bands' connection interval range (``[sim] interval_ms``;
    equal ends fix it, and with it how many notifications carry the samples)."""
    from agent import config
    from agent.camera.open import open_camera
    from agent.capture import CaptureService, CaptureSettings
    from agent.commands.run import _mcu_sources, _sim_mcu, _sim_rig, _wearer, _wrist_sources
    from agent.record.spool import Spool

    cfg = config.load(REPO / "device_configs" / "sim.toml")
    if not mcu:
        cfg = dataclasses.replace(cfg, mcu=dataclasses.replace(cfg.mcu, enabled=False))
    if interval_ms is not None:
        cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim,
                                                               interval_ms=list(interval_ms)))
    if notify is not None:
        cfg = dataclasses.replace(cfg, wrist=[dataclasses.replace(w, notify=notify)
                                                  for w in cfg.wrist])
    spool = Spool(Path(tempfile.mkdtemp(prefix="wearcap-bench-")), cfg.device.id)
    settings = CaptureSettings(device_id=cfg.device.id, config_digest=cfg.digest(),
                               segment_seconds=cfg.segment.seconds,
                               chunk_seconds=cfg.segment.chunk_seconds,
                               chunk_bytes=cfg.segment.chunk_bytes, duration=seconds)
    from agent.livestatus import Publisher

    run_dir = Path(tempfile.mkdtemp(prefix="wearcap-bench-run-",
                                    dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    if publisher is None:
        publisher = Publisher(run_dir)
    stop = threading.Event()
    with _sim_rig(cfg), _sim_mcu(cfg) as sim_mcu:
        sources = _wrist_sources(cfg) + _mcu_sources(cfg, spool.root, sim_mcu)
        camera = open_camera(cfg.camera)
        if sim_mcu is not None:
            camera.exposure_hook = sim_mcu.on_exposure  # type: ignore[attr-defined]
        svc = CaptureService(settings, spool, camera, sources, stop=stop,
                             notify=lambda s: None, status=lambda s: None,
                             wearer=_wearer(cfg, sources, spool.root), publisher=publisher)
        writer = threading.Thread(target=svc.run, name="writer")
        writer.start()
        try:
            yield Rig(svc, sources, writer, spool.root, publisher)
        finally:
            stop.set()
            writer.join()
    import shutil

    shutil.rmtree(spool.root, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
