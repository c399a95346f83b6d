"""The LED's fault row is driven: a camera that fails and a disk that is full set the wearer's
fault state, and the head MCU (simulated, on a real pty, through the real pyserial code) is
told to show it before capture exits. Assertions are on the commands the MCU received."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.capture import CaptureService, CaptureSettings
from agent.errors import DiskFullError, SourceError
from agent.mcu import led
from agent.mcu.source import McuSource
from agent.mcu.wearer import Wearer
from agent.record.spool import Spool
from agent.sim.mcu import SimMcu, SimMcuParams
from tests.h264_frames import EncoderCamera
from tests.test_selftest import small_disk

FAULT = (led.FAST, led.RED)
RECORDING = (led.SOLID, led.GREEN)


class FailingCamera(EncoderCamera):
    """Delivers ``fail_after`` frames, then fails as a camera whose sensor went away."""

    def __init__(self, fail_after: int) -> None:
        super().__init__(10_000, paced=True, gop=30)
        self.fail_after = fail_after

    def poll(self, max_frames: int = 64):
        if self.produced >= self.fail_after:
            raise SourceError("camera: no frame from the sensor (cable?)", device="camera")
        return super().poll(max_frames)


def _capture(spool: Spool, camera, sim: SimMcu):
    src = McuSource(sim.path)
    wearer = Wearer(src, spool.root)
    src.on_button = wearer.on_button
    st = CaptureSettings(device_id="dev", config_digest="c" * 64, segment_seconds=2.0,
                         drain_seconds=0.02)
    return CaptureService(st, spool, camera, [src], stop=threading.Event(), wearer=wearer,
                          notify=lambda s: None, status=lambda s: None), wearer


def _patterns(sim: SimMcu) -> list[tuple[int, int]]:
    time.sleep(0.3)  # the last command is read by the simulated MCU's thread
    return [(p, rgb) for _, p, rgb in sim.led_history]


def test_a_camera_failure_shows_the_fault_on_the_led(tmp_path: Path) -> None:
    with SimMcu(SimMcuParams(directory=str(tmp_path))) as sim:
        svc, wearer = _capture(Spool(tmp_path / "spool", "dev"), FailingCamera(60), sim)
        with pytest.raises(SourceError, match="no frame from the sensor"):
            svc.run()
        seen = _patterns(sim)
    assert RECORDING in seen  # it was recording first ...
    assert seen[-1] == FAULT  # ... and the last thing the MCU was told is the fault
    assert wearer.fault and "no frame from the sensor" in wearer.fault_reason
    assert svc.result.sealed  # what was recorded before the failure is sealed


def test_a_full_disk_at_start_shows_the_fault_on_the_led(tmp_path: Path) -> None:
    with small_disk(tmp_path / "sd", 8) as sd, \
            SimMcu(SimMcuParams(directory=str(tmp_path))) as sim:
        (sd / "filler").write_bytes(b"\0" * (7 << 20))
        spool = Spool(sd / "spool", "dev", reserve_mb=4)  # a real tmpfs below its reserve
        svc, wearer = _capture(spool, FailingCamera(10_000), sim)
        with pytest.raises(DiskFullError, match="disk full"):
            svc.run()
        seen = _patterns(sim)
    assert seen and seen[-1] == FAULT and RECORDING not in seen
    assert wearer.fault and "disk full" in wearer.fault_reason
    assert not svc.result.sealed


def test_the_fault_row_wins_over_every_other_state() -> None:
    every = led.RigState(fault=True, discarding=True, low_battery=True, paused=True,
                         recording=True, syncing=True)
    assert led.led(every) == FAULT
    assert led.led(led.RigState()) == RECORDING
