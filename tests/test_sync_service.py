"""The `wearcap sync` service: systemd notifications, clean stop on SIGTERM, the status file
the capture side reads, --spool, and the opportunistic rules end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO, run_cli
from sync_servers import DEVICE, make_segments, tus_sink, write_config

from agent import config
from agent.sync.service import SyncService


def test_service_notifies_systemd_and_stops_cleanly_on_sigterm(tmp_path):
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 2, 50_000)
    (tmp_path / "token").write_text("t\n")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token")
        child = subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config", str(cfg)],
                                 cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            got: set[str] = set()
            while not {"READY=1", "WATCHDOG=1"} <= got:
                got.add(sock.recv(256).decode())
            deadline = time.monotonic() + 30
            while any((spool / "sealed").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            sock.close()
    assert child.returncode == 0, err
    assert "verified 2 segment(s)" in out
    status = json.loads((spool / "sync-status.json").read_text())
    assert status["backlog_segments"] == 0 and status["verified_segments"] == 2
    assert status["collector_reachable"] is True and status["last_error"] is None
    assert not list(spool.glob(".*.tmp"))  # the status file is replaced atomically


def test_spool_option_overrides_the_config(tmp_path):
    other = tmp_path / "other-spool"
    make_segments(other, DEVICE, 1, 1000)
    (tmp_path / "token").write_text("t\n")
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=tmp_path / "unused",
                           token_file=tmp_path / "token")
        r = run_cli("sync", "--config", str(cfg), "--once", "--spool", str(other), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] == [f"{DEVICE}-00000000"]
    assert (other / "sync-status.json").exists() and not (tmp_path / "unused").exists()


def test_pause_while_recording_and_not_charging_block_uploads(tmp_path):
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 1, 1000)
    (tmp_path / "token").write_text("t\n")
    (spool / "active" / f"{DEVICE}-00000001.mcap.part").write_bytes(b"recording")
    (spool / "battery.json").write_text('{"charging": false}')
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token", pause_while_recording=True)
        r = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert r.returncode == 1
        assert json.loads(r.stdout)["reason"] == "paused while recording"
        os.remove(spool / "active" / f"{DEVICE}-00000001.mcap.part")
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token", pause_while_recording=True,
                           only_while_charging=True)
        r = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert r.returncode == 1
        assert json.loads(r.stdout)["reason"] == "not charging"
        (spool / "battery.json").write_text('{"state": "charging"}')
        r = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert r.returncode == 0, r.stderr
    assert (spool / "active").exists()


def test_bandwidth_cap_puts_a_token_bucket_on_the_chunk_stream(tmp_path):
    (tmp_path / "token").write_text("t")
    cfg = config.load(write_config(tmp_path / "a.toml", url="http://127.0.0.1:9/files/",
                                   spool=tmp_path / "spool", token_file=tmp_path / "token",
                                   bandwidth_kbps=800))
    svc = SyncService(cfg, spool=tmp_path / "spool", token="t", once=True)
    assert svc.uploader.bucket is not None and svc.uploader.bucket.rate == 100_000
    svc.state.close()
    svc.client.close()


def test_allowed_networks_use_the_injected_probe(tmp_path):
    from agent.sync.service import Probes

    make_segments(tmp_path / "spool", DEVICE, 1, 1000)
    with tus_sink(tmp_path) as sink:
        cfg = config.load(write_config(tmp_path / "a.toml", url=sink.url,
                                       spool=tmp_path / "spool", token_file=tmp_path / "t",
                                       allowed_networks=["lab-wifi"]))
        away = SyncService(cfg, spool=tmp_path / "spool", token="t", once=True,
                           probes=Probes(networks=lambda: ("cafe", "wlan0"))).run()
        assert not away.ok and "allowed network" in away.reason
        home = SyncService(cfg, spool=tmp_path / "spool", token="t", once=True,
                           probes=Probes(networks=lambda: ("lab-wifi",))).run()
        assert home.ok
