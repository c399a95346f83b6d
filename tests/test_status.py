from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from agent.commands.status import collect
from tests.conftest import run_cli


def _spool(tmp_path: Path) -> Path:
    for d in ("active", "sealed", "quarantine"):
        (tmp_path / d).mkdir(parents=True)
    return tmp_path


def test_idle_spool_is_not_recording(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool / "sealed" / "rig-00000001.mcap").write_bytes(b"x" * 10)
    st = collect(spool, reserve_bytes=0)
    assert st["recording"] is False
    assert st["sealed_segments"] == 1
    assert st["last_sealed"] == "rig-00000001"
    assert st["sync"] is None


def test_recording_needs_the_lock_and_a_fresh_part(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    part = spool / "active" / "rig-00000002.mcap.part"
    part.write_bytes(b"y")
    fd = os.open(spool / "capture.lock", os.O_RDWR | os.O_CREAT)
    try:
        assert collect(spool, 0)["recording"] is False  # lock not held yet
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert collect(spool, 0)["recording"] is True
        old = time.time() - 60
        os.utime(part, (old, old))
        st = collect(spool, 0)
        assert st["recording"] is False
        assert any("nothing was written" in f for f in st["faults"])
    finally:
        os.close(fd)


def test_sync_status_and_faults_are_reported(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool / "quarantine" / "bad.mcap.part").write_bytes(b"z")
    (spool / "sync-status.json").write_text(json.dumps(
        {"uploading": True, "reason": "collector reachable", "backlog_segments": 3,
         "backlog_bytes": 1000, "last_error": "HTTP 503", "updated": time.time()}))
    st = collect(spool, reserve_bytes=1 << 62)
    assert st["syncing"] is False  # never "syncing: yes" beside a sync fault
    assert st["quarantined"] == 1
    joined = " ".join(st["faults"])
    assert "reserve" in joined and "quarantine" in joined and "HTTP 503" in joined


def test_status_cli_json(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    res = run_cli("status", "--spool", str(spool), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["spool"] == str(spool)
    assert data["recording"] is False


def _live_doc(spool: Path, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "service": "capture", "pid": os.getpid(), "updated": time.time(),
        "device_id": "rig-1", "spool": str(spool), "state": "recording",
        "segment": {"id": "rig-1-00000004", "seq": 4, "frames": 90, "gaps": 0,
                    "bytes": 123456},
        "camera": {"fps": 30.0, "frames": 900, "dropped": 0},
        "streams": [
            {"name": "left", "state": "streaming", "streaming": True, "rate_hz": 200.1,
             "gaps": 0, "clock_converged": True, "clock_bound_us": 310.0},
            {"name": "right", "state": "connecting", "streaming": False, "absent_s": 12.0,
             "absent_cause": "not found in scan", "rate_hz": 0.0, "gaps": 1}],
        "writer": {"since_checkpoint_s": 0.3, "progressing": True},
        "disk": {"free_bytes": 10**10, "hours_left": 5.5},
        "battery": {"percent": 71, "charging": False},
    }
    doc.update(over)
    return doc


def test_status_reads_the_running_capture_services_spool_and_says_so(tmp_path: Path) -> None:
    """`run --spool ./spool` records: status must read that spool, not the config's."""
    spool = _spool(tmp_path / "here")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    part = spool / "active" / "rig-1-00000004.mcap.part"

    def status(*args: str) -> Any:
        # a running service rewrites both every second: a loaded machine's slow CLI start
        # must not make them look stale
        (run_dir / "capture.json").write_text(json.dumps(_live_doc(spool)))
        part.write_bytes(b"x")
        return run_cli("status", *args, env=env)

    fd = os.open(spool / "capture.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    env = {"WEARCAP_RUN_DIR": str(run_dir)}
    try:
        res = status("--json")
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        assert st["spool"] == str(spool) and "capture service" in st["spool_from"]
        assert st["recording"] is True and st["open_segment"]["id"] == "rig-1-00000004"
        assert [s["name"] for s in st["streams"]] == ["left", "right"]
        assert any("band right absent" in f and "not found in scan" in f
                   for f in st["faults"])
        text = status().stdout
        assert f"{spool} (the running capture service's)" in text
        assert "rig-1-00000004 open" in text and "band left" in text and "310 us" in text
        assert "5.5 h of recording left" in text and "71 %" in text
        other = _spool(tmp_path / "other")
        res = status("--json", "--spool", str(other))
        st = json.loads(res.stdout)
        assert st["spool"] == str(other) and st["spool_from"] == "--spool"
        assert any(f"records into {spool}" in n for n in st["notes"])
    finally:
        os.close(fd)


def test_a_stale_live_status_is_not_trusted(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    live = {**_live_doc(spool, updated=time.time() - 600), "fresh": False}
    st = collect(spool, 0, live=live)
    assert st["recording"] is False and st["open_segment"] is None and st["streams"] == []


def test_status_names_a_leftover_part_and_a_stalled_writer(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool / "active" / "rig-1-00000009.mcap.part").write_bytes(b"half")
    st = collect(spool, 0)
    assert st["leftover_parts"] == ["rig-1-00000009.mcap.part"]
    assert any("leftover .part" in n and "recovers them" in n for n in st["notes"])
    fd = os.open(spool / "capture.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        live = {**_live_doc(spool, writer={"since_checkpoint_s": 40.0, "progressing": False}),
                "fresh": True}
        st = collect(spool, 0, live=live)
        assert st["leftover_parts"] == []
        assert any("writer is stalled" in f for f in st["faults"])
    finally:
        os.close(fd)


def test_status_with_a_sync_fault_says_retrying_not_yes(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool / "sync-status.json").write_text(json.dumps(
        {"uploading": True, "reason": "collector reachable", "backlog_segments": 2,
         "backlog_bytes": 10, "last_error": "HTTP 409: a device cannot overwrite",
         "updated": time.time()}))
    res = run_cli("status", "--spool", str(spool))
    assert res.returncode == 0, res.stderr
    assert "syncing:   retrying" in res.stdout and "syncing:   yes" not in res.stdout
    assert "fault: sync: HTTP 409" in res.stdout


def test_status_on_a_terminal_is_a_live_view_until_ctrl_c(tmp_path: Path) -> None:
    import pty
    import signal
    import subprocess
    import sys

    spool = _spool(tmp_path / "here")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    live = run_dir / "capture.json"
    live.write_text(json.dumps(_live_doc(spool)))
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "status"], stdin=sub, stdout=sub,
                            stderr=sub, cwd=Path(__file__).resolve().parent.parent,
                            # a runner started in the background may ignore SIGINT, and a child
                            # inherits that: Ctrl-C must reach the view as on a terminal
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "WEARCAP_RUN_DIR": str(run_dir),
                                 "COLUMNS": "120", "LINES": "40"})
    os.close(sub)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while b"rig-1-00000004 open" not in out and time.monotonic() < deadline:
            out += os.read(main, 65536)
        # the view follows the file: a new segment shows up without restarting
        live.write_text(json.dumps(_live_doc(spool, segment={
            "id": "rig-1-00000005", "seq": 5, "frames": 3, "gaps": 0, "bytes": 10})))
        while b"rig-1-00000005 open" not in out and time.monotonic() < deadline:
            out += os.read(main, 65536)
        proc.send_signal(signal.SIGINT)
        # keep reading: the view's last redraw must not block on a full terminal
        import select
        stop_by = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < stop_by:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    out += os.read(main, 65536)
                except OSError:
                    break
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    assert b"rig-1-00000005 open" in out and b"Traceback" not in out
