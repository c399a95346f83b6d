"""The rig tells the collector about itself: sync posts a status document each cycle and
uploads the selftest reports kept in the spool (authenticated, never blocking uploads)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import run_cli
from sync_servers import DEVICE, collector, make_segments, tus_sink, write_config

from agent.collector.store import open_store


def test_sync_posts_status_and_uploads_selftest_reports(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 1, 10_000)
    with collector(tmp_path, device=DEVICE) as srv:
        token = tmp_path / "token"
        token.write_text(srv.token + "\n")
        cfg = write_config(tmp_path / "agent.toml", url=srv.url, spool=spool,
                           token_file=token)
        cfg.write_text(cfg.read_text().replace('profile = "sim"',
                                               'profile = "sim"\nwrist = []') +
                       '[camera]\nbackend = "none"\n')
        test = run_cli("selftest", "--config", str(cfg), "--json")
        assert test.returncode == 0, test.stdout + test.stderr
        saved = Path(json.loads(test.stdout)["saved"])
        res = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert res.returncode == 0, res.stderr
        assert not saved.exists() and (saved.parent / "sent" / saved.name).exists()
        # a device may report only for itself
        r = httpx.post(srv.url.replace("/files/", "/devices/other/status"), json={},
                       headers={"Authorization": f"Bearer {srv.token}"})
        assert r.status_code == 403
    store = open_store(tmp_path / "collector")
    try:
        (status,) = store.documents("status", DEVICE)
        assert status.body["sync"]["backlog_segments"] == 0
        assert status.body["device_id"] == DEVICE
        (report,) = store.documents("selftest", DEVICE)
        assert report.body["ok"] is True
        assert {c["name"] for c in report.body["checks"]} >= {"disk", "ntp", "collector"}
    finally:
        store.close()


def test_a_third_party_tus_server_is_not_asked_again(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 2, 5_000)
    (tmp_path / "token").write_text("t\n")
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token")
        res = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["verified"]) == 2
    assert "Traceback" not in res.stderr
