"""The device's systemd units: they verify, and their exposure stays within budget.

Budget: ``systemd-analyze security`` overall exposure <= 2.5 for both units (10 = no
hardening). Both units as install.sh installs them (``@PREFIX@`` filled in)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

UNITS = ("wearcap-capture.service", "wearcap-sync.service",
         "wearcap-capture-resume.service")
TIMERS = ("wearcap-capture-resume.timer",)
EXPOSURE_BUDGET = 2.5

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
    reason="systemd-analyze is not installed (./install.sh --dev installs it)")


def _installed(tmp_path: Path) -> Path:
    """The units with @PREFIX@ replaced, beside an executable ExecStart, as on a rig."""
    prefix = tmp_path / "wearcap"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    exe = prefix / ".venv" / "bin" / "wearcap"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    out = tmp_path / "units"
    out.mkdir()
    for name in UNITS + TIMERS:
        text = (REPO / "systemd" / name).read_text()
        assert "@PREFIX@" in text or name in TIMERS
        (out / name).write_text(text.replace("@PREFIX@", str(prefix)))
    return out


@needs_systemd
def test_units_verify(tmp_path: Path) -> None:
    units = _installed(tmp_path)
    res = subprocess.run(["systemd-analyze", "verify",
                          *[str(units / u) for u in UNITS + TIMERS]],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wearcap" not in res.stderr, res.stderr  # no warning about our units


@needs_systemd
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_within_budget(tmp_path: Path, unit: str) -> None:
    units = _installed(tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(units / unit)], capture_output=True, text=True, timeout=120,
                         check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    exposure = float(m.group(1))
    print(f"{unit}: exposure {exposure} (budget {EXPOSURE_BUDGET})")
    assert exposure <= EXPOSURE_BUDGET, res.stdout


def test_units_allow_exactly_the_rigs_devices() -> None:
    capture = (REPO / "systemd" / "wearcap-capture.service").read_text()
    allowed = re.findall(r"^DeviceAllow=(\S+) rw$", capture, re.M)
    # libcamera: /dev/video* and /dev/v4l-subdev* (video4linux), /dev/media*, /dev/dma_heap/*;
    # the MCU: USB CDC-ACM or the Pi's UART.
    assert sorted(allowed) == sorted(["char-video4linux", "char-media", "char-dma_heap",
                                      "char-ttyACM", "char-ttyAMA"])
    assert "DevicePolicy=closed" in capture
    sync = (REPO / "systemd" / "wearcap-sync.service").read_text()
    assert "PrivateDevices=yes" in sync and "DeviceAllow" not in sync
    for text in (capture, sync):
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/wearcap", "PrivateTmp=yes", "ProtectHome=yes",
                     "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                     "ProtectKernelLogs=yes", "CapabilityBoundingSet=\n",
                     "SystemCallFilter=@system-service", "StartLimitIntervalSec=",
                     "StartLimitBurst=", "RestrictAddressFamilies=AF_UNIX"):
            assert line in text, line
    assert "AF_INET" not in capture  # the capture service never speaks IP


def test_a_low_battery_stop_is_not_restarted_but_resumed_on_charging() -> None:
    """Capture's exit 3 is a clean stop systemd does not restart; the resume timer starts
    the oneshot every minute, which runs only while capture's marker exists and starts
    capture only when ``wearcap battery --charging`` says so; install.sh installs and
    enables the timer."""
    from agent.commands.run import EXIT_LOW_BATTERY
    from agent.mcu.lowbattery import MARKER

    systemd = REPO / "systemd"
    capture = (systemd / "wearcap-capture.service").read_text()
    assert f"RestartPreventExitStatus={EXIT_LOW_BATTERY}\n" in capture
    assert f"SuccessExitStatus={EXIT_LOW_BATTERY}\n" in capture
    resume = (systemd / "wearcap-capture-resume.service").read_text()
    assert f"ConditionPathExists=/var/lib/wearcap/spool/{MARKER}\n" in resume
    assert "ExecCondition=@PREFIX@/.venv/bin/wearcap battery --charging\n" in resume
    assert "ExecStart=+/usr/bin/systemctl --no-block start wearcap-capture.service\n" in resume
    assert "Type=oneshot" in resume and "User=wearcap" in resume
    assert sorted(re.findall(r"^DeviceAllow=(\S+) rw$", resume, re.M)) == [
        "char-ttyACM", "char-ttyAMA"]
    timer = (systemd / "wearcap-capture-resume.timer").read_text()
    assert "OnCalendar=minutely" in timer and "WantedBy=timers.target" in timer
    install = (REPO / "install.sh").read_text()
    assert "systemd/*.timer" in install and "wearcap-capture-resume.timer" in install
