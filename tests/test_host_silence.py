"""Host silence (docs/mcu-protocol.md): a capture killed with SIGKILL says nothing more, and
the MCU (simulated, on a pty, the real pyserial code on the other side) shows the fault by
itself; a capture stopped on purpose shows "stopped", says bye, and the MCU keeps that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.mcu import led
from agent.sim.mcu import SimMcu, SimMcuParams
from tests.conftest import REPO

FAULT = (led.FAST, led.RED)
RECORDING = (led.SOLID, led.GREEN)
STOPPED = (led.SOLID, led.WHITE)


def _capture(tmp_path: Path, port: str) -> subprocess.Popen[str]:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('profile = "sim"\nwrist = []\n[camera]\nwidth = 160\nheight = 120\n'
                   f'[spool]\nreserve_mb = 0\n[mcu]\nenabled = true\nport = "{port}"\n')
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg),
                             "--spool", str(tmp_path / "spool")], cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "WEARCAP_RUN_DIR": str(tmp_path / "run")})


def _wait(cond, seconds: float = 90.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_silent_host_is_shown_as_a_fault_by_the_mcu(tmp_path: Path, how: str) -> None:
    with SimMcu(SimMcuParams(directory=str(tmp_path))) as sim:
        proc = _capture(tmp_path, sim.path)
        try:
            assert _wait(lambda: any(h[1:] == RECORDING for h in sim.led_history))
            proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        # 3 s of silence, plus the simulated MCU's loop
        shown = _wait(lambda: sim.stats["host_silence_faults"] > 0, seconds=8.0)
        last = sim.led_history[-1][1:]
    if how == "kill -9":
        assert shown and last == FAULT
    else:
        # a clean stop shows "stopped" before its bye, and the MCU keeps it
        assert not shown and last == STOPPED
