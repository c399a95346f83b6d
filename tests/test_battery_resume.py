"""A low-battery stop and its resume on charging, end to end against the simulated MCU on a
real pty through the real pyserial code: `wearcap run` seals and exits 3 leaving its marker,
`wearcap battery --charging` (the resume timer's ExecCondition) says wait while the gauge
says discharging and resume once it says charging, the next `wearcap run` clears the
marker; `wearcap status` says why capture is not running; `wearcap battery`'s errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import serial

from agent.commands.battery import read_battery
from agent.errors import SourceError
from agent.mcu import led
from agent.mcu.lowbattery import MARKER, resume_decision
from agent.record.spool import Spool
from agent.sim.mcu import SimMcu, SimMcuParams
from tests.conftest import run_cli

LOW_BATTERY_LED = led.led(led.RigState(low_battery=True, recording=True))


def _config(tmp_path: Path, port: str, *, mcu: bool = True) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('profile = "sim"\nwrist = []\n[camera]\nwidth = 160\nheight = 120\n'
                   f"[spool]\nreserve_mb = 0\npath = \"{tmp_path / 'spool'}\"\n"
                   f'[mcu]\nenabled = {"true" if mcu else "false"}\nport = "{port}"\n'
                   "low_battery_percent = 5\nresume_margin_percent = 5\n")
    return cfg


def _cli(*args: str, run_dir: Path, timeout: float = 120):
    return run_cli(*args, env={"WEARCAP_RUN_DIR": str(run_dir)}, timeout=timeout)


def test_a_low_battery_stop_waits_for_charge_and_resumes(tmp_path: Path) -> None:
    rund = tmp_path / "run"
    with SimMcu(SimMcuParams(directory=str(tmp_path), battery_percent=3.0)) as sim:
        cfg = str(_config(tmp_path, sim.path))
        spool = tmp_path / "spool"
        r = _cli("run", "--config", cfg, "--duration", "60", run_dir=rund)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "stopped: battery low" in r.stdout
        marker = json.loads((spool / MARKER).read_text())
        assert marker["percent"] == 3 and marker["charging"] is False
        assert list((spool / "sealed").glob("*.mcap"))  # the open segment was sealed

        st = json.loads(_cli("status", "--json", "--spool", str(spool), run_dir=rund).stdout)
        assert st["state"] == "stopped-low-battery" and not st["recording"]
        assert st["stopped"]["summary"] == "stopped: battery low, waiting for charge"
        text = _cli("status", "--once", "--spool", str(spool), run_dir=rund).stdout
        assert "stopped: battery low, waiting for charge" in text

        r = _cli("battery", "--config", cfg, "--charging", "--json", run_dir=rund)
        assert r.returncode == 1, r.stdout + r.stderr  # discharging at 3 %: wait
        doc = json.loads(r.stdout)
        assert doc["resume"] is False and "not charging, 3 %" in doc["reason"]
        assert doc["battery"]["percent"] == 3
        # the query reads the gauge only: the MCU still shows the low-battery pattern
        assert sim.led_history and sim.led_history[-1][1:] == LOW_BATTERY_LED

        sim.set_battery(3.0, charging=True)
        r = _cli("battery", "--config", cfg, "--charging", run_dir=rund)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("resume: charging (3 %)")

        r = _cli("run", "--config", cfg, "--duration", "4", run_dir=rund)
        assert r.returncode == 0, r.stdout + r.stderr  # charging: it records
        assert "recording again after a low-battery stop" in r.stdout
        assert not (spool / MARKER).exists()
        r = _cli("battery", "--config", cfg, "--charging", run_dir=rund)
        assert r.returncode == 1 and "no low-battery stop" in r.stdout
        st = json.loads(_cli("status", "--json", "--spool", str(spool), run_dir=rund).stdout)
        assert st["stopped"] is None and st["state"] == "down"


def test_the_resume_check_never_opens_the_port_of_a_running_capture(tmp_path: Path) -> None:
    with SimMcu(SimMcuParams(directory=str(tmp_path), charging=True)) as sim:
        cfg = str(_config(tmp_path, sim.path))
        spool = Spool(tmp_path / "spool", "dev")
        (spool.root / MARKER).write_text("{}")
        spool.lock()  # as a running capture service holds it
        try:
            r = _cli("battery", "--config", cfg, "--charging", run_dir=tmp_path / "run")
        finally:
            spool.unlock()
    assert r.returncode == 1 and "capture service is running" in r.stdout
    assert sim.stats["accepts"] == 0  # nobody talked to the MCU


def test_battery_reads_the_gauge_once(tmp_path: Path) -> None:
    with SimMcu(SimMcuParams(directory=str(tmp_path), battery_percent=64.0,
                             charging=True)) as sim:
        cfg = str(_config(tmp_path, sim.path))
        r = _cli("battery", "--config", cfg, "--json", run_dir=tmp_path / "run")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["battery"]["percent"] == 64 and doc["battery"]["charging"] is True
        assert doc["battery"]["firmware"] == "sim-1.0" and doc["stopped_low_battery"] is None
        sim.set_battery(20.0, charging=False)
        b = read_battery(sim.path, 921_600, 10.0)  # a second open of the same port
        assert (b["percent"], b["charging"]) == (20, False)
        r = _cli("battery", "--config", cfg, run_dir=tmp_path / "run")
        assert r.stdout.startswith("battery: 20 % (")
        assert "not charging" in r.stdout


def test_battery_errors_are_clear(tmp_path: Path) -> None:
    rund = tmp_path / "run"
    with SimMcu(SimMcuParams(directory=str(tmp_path))) as sim:
        held = serial.Serial(sim.path, 921_600, timeout=0, exclusive=True)
        try:  # capture holds the port
            r = _cli("battery", "--port", sim.path, "--config",
                     str(_config(tmp_path, sim.path)), run_dir=rund)
        finally:
            held.close()
    assert r.returncode == 1 and "is busy" in r.stderr and "Traceback" not in r.stderr
    master, slave = os.openpty()  # a port where nothing answers
    try:
        with pytest.raises(SourceError, match=r"no hello .* within 0.5 s"):
            read_battery(os.ttyname(slave), 921_600, 0.5)
    finally:
        os.close(master)
        os.close(slave)
    r = _cli("battery", "--port", str(tmp_path / "nothing"), "--config",
             str(_config(tmp_path, "")), run_dir=rund)
    assert r.returncode == 1 and "no MCU at" in r.stderr
    r = _cli("battery", "--config", str(_config(tmp_path, "", mcu=False)), run_dir=rund)
    assert r.returncode == 2 and "mcu.enabled" in r.stderr and "no head MCU" in r.stderr
    # as the timer's condition an error is "not now" (exit 1), never a failed unit
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    (spool / MARKER).write_text("{}")
    r = _cli("battery", "--charging", "--port", str(tmp_path / "nothing"), "--config",
             str(_config(tmp_path, "")), run_dir=rund)
    assert r.returncode == 1 and "no reading: mcu: no MCU at" in r.stdout


def test_resume_decision() -> None:
    assert resume_decision({"percent": 3, "charging": True}, 5, 5)[0]
    assert not resume_decision({"percent": 9, "charging": False}, 5, 5)[0]
    ok, why = resume_decision({"percent": 10, "charging": False}, 5, 5)
    assert ok and "10 %" in why


def test_status_shows_the_fault_that_stopped_capture(tmp_path: Path) -> None:
    """A disk below its reserve at start: `wearcap run` exits 1 (the LED shows the fault,
    tests/test_wearer_fault.py) and `wearcap status` says why capture is not running, until
    the next run starts."""
    rund = tmp_path / "run"
    with SimMcu(SimMcuParams(directory=str(tmp_path))) as sim:
        cfg = _config(tmp_path, sim.path)
        cfg.write_text(cfg.read_text().replace("reserve_mb = 0", "reserve_mb = 100000000"))
        r = _cli("run", "--config", str(cfg), "--duration", "5", run_dir=rund)
    assert r.returncode == 1 and "disk full" in r.stderr
    spool = str(tmp_path / "spool")
    st = json.loads(_cli("status", "--json", "--spool", spool, run_dir=rund).stdout)
    assert st["state"] == "stopped-fault" and st["stopped"]["exit_code"] == 1
    assert "disk full" in st["stopped"]["reason"]
    assert st["faults"][0].startswith("stopped on a fault: ")
    text = _cli("status", "--once", "--spool", spool, run_dir=rund).stdout
    assert "stopped on a fault: " in text and "disk full" in text
    other = json.loads(_cli("status", "--json", "--spool", str(tmp_path / "elsewhere"),
                            run_dir=rund).stdout)
    assert other["stopped"] is None  # another spool's capture did not stop on it
