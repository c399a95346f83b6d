from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

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
    assert st["syncing"] is True
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
