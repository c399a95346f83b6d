"""Retention on the collector: verified segments older than --retention-days are purged
through the discard path (a 'retention' tombstone each, shown as expired, not missing; the
seq is never accepted again), cached exports older than --export-retention-days too."""

from __future__ import annotations

import logging
import os

import pytest
from conftest import run_cli
from test_collector_support import ServerThread, TusClient

from agent.collector import auth
from agent.record.spool import Spool
from tests.recordings import Take

DAY = 86400.0
DEV = "dev"


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", expire_seconds=3600, retention_seconds=30 * DAY,
                     export_retention_seconds=2 * DAY).start()
    yield s
    s.stop()


def objects(srv) -> list[str]:
    return sorted(p.stem for p in (srv.data / "objects").rglob("*.mcap"))


def test_old_verified_segments_expire_as_tombstones_not_losses(srv, caplog):
    c = srv.client(srv.enroll(DEV))
    for q in (0, 1):
        c.upload(DEV, q, os.urandom(10_000))
    srv.clock.now += 20 * DAY
    c.upload(DEV, 2, os.urandom(10_000))
    assert srv.collector.sweep_retention() == (0, 0)  # nothing is 30 days old yet
    srv.clock.now += 11 * DAY  # 0, 1: 31 days; 2: 11 days
    with caplog.at_level(logging.WARNING, "agent.collector"):
        # (the server's own sweeper may run at the same moment: judge the result, not who)
        srv.collector.sweep_retention()
    assert objects(srv) == ["dev-00000002"]
    assert any("retention: purged" in m for m in caplog.messages)
    assert any("purged dev-00000000 (seq 0, retention" in m for m in caplog.messages)
    reader = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    rep = reader.get(f"/data/devices/{DEV}").json()
    assert rep["expired"] == [[0, 1]] and rep["expired_count"] == 2
    assert rep["missing"] == [] and rep["discarded"] == [] and rep["complete"]
    assert {t["reason"] for t in rep["tombstones"]} == {"retention"}
    assert c.create(DEV, 0, b"x" * 10).status_code == 410  # never accepted again
    assert srv.collector.sweep_retention() == (0, 0)  # nothing twice
    reader.close()
    c.close()


def test_cached_exports_expire_on_their_own_clock(srv, tmp_path):
    segs = Take(seconds=2, segment_s=2).write(Spool(tmp_path / "spool", DEV))
    c = srv.client(srv.enroll(DEV))
    for s in segs:
        c.upload(DEV, s.seq, s.path.read_bytes())
    reader = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    (t,) = reader.get(f"/data/devices/{DEV}/takes").json()
    assert reader.get(t["mcap"]).status_code == 200
    e = srv.collector.store.export(DEV, t["take"], "mcap")
    assert e is not None and (srv.data / "objects" / e.object_key).is_file()
    srv.clock.now += 3 * DAY
    srv.collector.sweep_retention()  # the segment stays, the export goes
    assert not (srv.data / "objects" / e.object_key).exists()
    assert srv.collector.store.export(DEV, t["take"], "mcap") is None
    assert objects(srv) == [segs[0].id]
    assert reader.get(t["mcap"]).status_code == 200  # made again on request
    reader.close()
    c.close()


def test_retention_flags_refuse_bad_values(tmp_path):
    for bad in ("nan", "-1", "inf", "week"):
        r = run_cli("collector", "--data", str(tmp_path), "--retention-days", bad,
                    "--listen", "127.0.0.1:0")
        assert r.returncode == 2 and "retention-days" in r.stderr, (bad, r.stderr)
        assert "Traceback" not in r.stderr
    r = run_cli("collector", "--data", str(tmp_path), "--listen", "127.0.0.1:0",
                env={"WEARCAP_COLLECTOR_RETENTION_DAYS": "nan"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
