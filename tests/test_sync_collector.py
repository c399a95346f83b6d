"""Upload to the wearcap collector (a child `wearcap collector` on loopback): verified, exactly
once, across a kill -9 of the sync service, a lost state database, and refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli
from faultproxy import FaultProxy
from sync_servers import (
    DEVICE,
    collector,
    collector_objects,
    collector_uploads,
    make_segments,
    sha256_file,
    write_config,
)

CHUNK = 256 * 1024


@pytest.fixture
def col(tmp_path):
    with collector(tmp_path) as c:
        (tmp_path / "token").write_text(c.token + "\n")
        yield c


def cfg_for(tmp_path, url, **kw):
    kw.setdefault("chunk_bytes", CHUNK)
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    return write_config(tmp_path / "agent.toml", url=url, spool=tmp_path / "spool",
                        token_file=tmp_path / "token", **kw)


def test_once_uploads_backlog_verified_then_evicts(tmp_path, col):
    paths = make_segments(tmp_path / "spool", DEVICE, 4, 600_000)
    want = {p.stem: sha256_file(p) for p in paths}
    cfg = cfg_for(tmp_path, col.url)
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["verified"] == sorted(want)  # oldest first
    assert collector_objects(col.root) == want
    assert [u["state"] for u in collector_uploads(col.root)].count("verified") == 4
    assert not any(p.exists() for p in paths)  # evicted only after verification
    status = json.loads((tmp_path / "spool" / "sync-status.json").read_text())
    assert status["backlog_segments"] == 0 and status["verified_segments"] == 4
    assert status["collector_reachable"] is True


def test_lost_state_database_does_not_make_a_second_copy(tmp_path, col):
    paths = make_segments(tmp_path / "spool", DEVICE, 2, 300_000)
    cfg = cfg_for(tmp_path, col.url, keep_hours=24.0)
    assert run_cli("sync", "--config", str(cfg), "--once").returncode == 0
    os.remove(tmp_path / "spool" / "sync.sqlite3")
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0, r.stderr
    assert len(collector_uploads(col.root)) == 2
    assert all(p.exists() for p in paths)  # kept: verified less than 24 h ago


def test_kill_9_mid_upload_resumes_with_one_verified_copy(tmp_path, col):
    (path,) = make_segments(tmp_path / "spool", DEVICE, 1, 3_000_000, start=7)
    want = sha256_file(path)
    with FaultProxy(col.port) as proxy:
        proxy.rate = 1_000_000
        cfg = cfg_for(tmp_path, proxy.url + "/files/")
        child = subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config", str(cfg)],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while proxy.bytes_up < 1_200_000 and time.monotonic() < deadline:
                assert child.poll() is None, child.stderr.read()
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
        assert path.exists()
        before = proxy.bytes_up
        proxy.rate = None
        r = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert r.returncode == 0, r.stderr
        resent = proxy.bytes_up - before
    assert 0 < before < 3_000_000
    # the second run sends the rest plus at most the chunk in flight when killed (+ headers)
    assert resent <= 3_000_000 - before + 2 * CHUNK + 10_000
    ups = collector_uploads(col.root)
    assert [(u["segment_id"], u["state"]) for u in ups] == [(path.stem, "verified")]
    assert collector_objects(col.root) == {path.stem: want}
    print(f"killed after {before} bytes up; the resumed run sent {resent}")


def test_wrong_namespace_is_rejected_and_reported(tmp_path, col):
    make_segments(tmp_path / "spool", "sim-0002", 1, 1000)
    cfg = cfg_for(tmp_path, col.url, device="sim-0002")  # token belongs to sim-0001
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["left"][0]["state"] == "rejected"
    assert "403" in out["left"][0]["last_error"]
    assert (tmp_path / "spool" / "sealed" / "sim-0002-00000000.mcap").exists()


def test_bad_token_exits_1_at_once(tmp_path, col):
    make_segments(tmp_path / "spool", DEVICE, 1, 1000)
    (tmp_path / "token").write_text("wc_not-a-real-token\n")
    cfg = cfg_for(tmp_path, col.url, backoff_cap=300.0)
    r = run_cli("sync", "--config", str(cfg), "--once", timeout=60)
    assert r.returncode == 1
    assert "token" in r.stderr and "401" in r.stderr


def test_missing_token_file_is_a_config_error(tmp_path):
    cfg = cfg_for(tmp_path, "http://127.0.0.1:9/files/")
    os.environ.pop("NOTIFY_SOCKET", None)
    r = run_cli("sync", "--config", str(cfg), "--once")
    assert r.returncode == 2
    assert "sync.token_file" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_collector_exits_1_with_the_reason(tmp_path):
    make_segments(tmp_path / "spool", DEVICE, 1, 1000)
    (tmp_path / "token").write_text("t\n")
    cfg = cfg_for(tmp_path, "http://127.0.0.1:9/files/", connect_timeout=1.0)
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "collector unreachable"
    assert "collector unreachable" in r.stderr
