"""wearcap selftest: passes on a working simulated rig, and fails usefully (with the fix)
when the collector is down, the disk is nearly full or a band is off."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from sync_servers import collector

from agent import selftest


def _config(path: Path, *, spool: Path, url: str, token: Path, rig: bool,
            extra: str = "") -> Path:
    body = ['profile = "sim"', '[camera]\nwidth = 640\nheight = 360',
            f'[spool]\npath = "{spool}"\nreserve_mb = 0',
            f'[sync]\nurl = "{url}"\ntoken_file = "{token}"']
    if not rig:  # the checks that need no camera or band
        body[1] = '[camera]\nbackend = "none"'
        body.insert(1, 'wrist = []\n[mcu]\nenabled = false')
    path.write_text("\n".join(body) + "\n" + extra)
    return path


def _checks(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert "Traceback" not in res.stderr, res.stderr
    return {c["name"]: c for c in json.loads(res.stdout)["checks"]}


def test_selftest_passes_on_the_simulated_rig(tmp_path: Path) -> None:
    with collector(tmp_path, device="sim-0001") as srv:
        token = tmp_path / "token"
        token.write_text(srv.token + "\n")
        cfg = _config(tmp_path / "agent.toml", spool=tmp_path / "spool", url=srv.url,
                      token=token, rig=True)
        res = run_cli("selftest", "--config", str(cfg), "--seconds", "4", "--json",
                      timeout=180)
    checks = _checks(res)
    assert res.returncode == 0, res.stdout
    assert checks["camera"]["result"] == "pass", checks["camera"]
    for band in ("band left", "band right"):
        assert checks[band]["result"] in ("pass", "warn"), checks[band]  # warn: converging
        assert abs(checks[band]["figures"]["rate_hz"] - 200) < 20
    assert checks["disk"]["result"] == "pass" and checks["disk"]["figures"]["hours_left"] > 1
    assert checks["collector"]["result"] == "pass"
    assert checks["collector"]["figures"]["status"] == 200
    assert checks["mcu"]["result"] == "pass", checks["mcu"]  # the simulated head MCU
    assert checks["mcu"]["figures"]["pongs"] > 0
    saved = Path(json.loads(res.stdout)["saved"])
    assert saved.parent == tmp_path / "spool" / "selftest"
    assert json.loads(saved.read_text())["ok"] is True


def test_selftest_with_the_collector_down_or_the_token_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-token\n")
    cfg = _config(tmp_path / "a.toml", spool=tmp_path / "spool",
                  url="http://127.0.0.1:9/files/", token=token, rig=False)
    res = run_cli("selftest", "--config", str(cfg), "--json")
    assert res.returncode == 1
    c = _checks(res)["collector"]
    assert c["result"] == "fail" and "unreachable" in c["detail"]
    assert "check the network" in c["fix"]
    text = run_cli("selftest", "--config", str(cfg))
    assert text.returncode == 1 and "FAIL (collector)" in text.stdout
    with collector(tmp_path, device="sim-0001") as srv:
        cfg = _config(tmp_path / "b.toml", spool=tmp_path / "spool", url=srv.url,
                      token=token, rig=False)
        res = run_cli("selftest", "--config", str(cfg), "--json")
    c = _checks(res)["collector"]
    assert res.returncode == 1 and c["result"] == "fail"
    assert "refuses this rig's token" in c["detail"] and "wearcap provision" in c["fix"]


@contextlib.contextmanager
def small_disk(path: Path, mb: int) -> Iterator[Path]:
    """A real small filesystem (tmpfs) to fill up."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root") if os.environ.get(
            "CI") != "true" else pytest.fail("CI must run as root to mount a small tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_selftest_on_a_nearly_full_disk(tmp_path: Path) -> None:
    with small_disk(tmp_path / "sd", 64) as sd:
        (sd / "filler").write_bytes(b"\0" * (60 << 20))
        cfg = _config(tmp_path / "a.toml", spool=sd / "spool", url="http://127.0.0.1:9/files/",
                      token=tmp_path / "none", rig=False)
        res = run_cli("selftest", "--config", str(cfg), "--json")
        c = _checks(res)["disk"]
    assert res.returncode == 1
    assert c["result"] == "fail" and "nearly full" in c["detail"]
    assert "wearcap sync --once" in c["fix"]
    assert c["figures"]["hours_left"] < selftest.HOURS_MIN


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(p.name), cmd))
    return out


def test_selftest_reads_the_running_capture_and_names_a_band_that_is_off(
        tmp_path: Path) -> None:
    cfg = _config(tmp_path / "agent.toml", spool=tmp_path / "spool",
                  url="http://127.0.0.1:9/files/", token=tmp_path / "none", rig=True)
    run_dir = Path(os.environ["WEARCAP_RUN_DIR"])
    rec = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                live = json.loads((run_dir / "capture.json").read_text())
                bands = [s for s in live["streams"] if s.get("name") in ("left", "right")]
                if len(bands) == 2 and all(s.get("streaming") and s.get("rate_hz", 0) > 150
                                           for s in bands):
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the capture service did not start streaming")
        (right,) = [pid for pid, cmd in _children(rec.pid) if "WCAP-right" in cmd]
        os.kill(right, signal.SIGKILL)  # the right band is switched off

        def right_samples() -> int:
            doc = json.loads((run_dir / "capture.json").read_text())
            return int(next(s for s in doc["streams"] if s["name"] == "right")["samples"])

        before = right_samples()
        while time.monotonic() < deadline:  # until it has stopped delivering
            time.sleep(1.5)
            now = right_samples()
            if now == before:
                break
            before = now
        res = run_cli("selftest", "--config", str(cfg), "--json")
    finally:
        os.killpg(rec.pid, signal.SIGTERM)
        rec.wait(60)
    report = json.loads(res.stdout)
    assert report["source"] == "live"  # it did not open the camera and bands again
    checks = _checks(res)
    assert res.returncode == 1
    assert checks["band right"]["result"] == "fail", checks["band right"]
    assert "not streaming" in checks["band right"]["detail"]
    assert "switch the right band on" in checks["band right"]["fix"]
    assert checks["band left"]["result"] in ("pass", "warn"), checks["band left"]
    assert checks["camera"]["result"] == "pass", checks["camera"]
