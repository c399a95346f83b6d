"""The wearer's discard end to end: a press (the durable request in the spool), a kill -9 of
the sync service between the press and the deletion on the collector, and the restarted
service finishing the job. Real `wearcap collector` and `wearcap sync` child processes.

Two kill points, each a real SIGKILL of the sync process:
- after the tombstones are durable on the device, before the request reaches the collector;
- after the collector purged, before the device recorded the answer (the request is sent
  again; the collector's side is idempotent).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, run_cli
from sync_servers import DEVICE, collector, collector_objects, make_segments, write_config
from test_collector_support import TusClient

from agent.mcu.controls import Action
from agent.mcu.wearer import Wearer


@pytest.fixture
def col(tmp_path):
    with collector(tmp_path) as c:
        (tmp_path / "token").write_text(c.token + "\n")
        yield c


def cfg_for(tmp_path, url):
    return write_config(tmp_path / "agent.toml", url=url, spool=tmp_path / "spool",
                        token_file=tmp_path / "token", keep_hours=24.0, chunk_bytes=65536,
                        backoff_base=0.05, backoff_cap=0.5)


def sync_killed_at(cfg, hook: str) -> int:
    """``wearcap sync --once`` in a child that SIGKILLs itself when ``hook`` is reached."""
    target = "send" if hook == "before-send" else "_done"
    code = textwrap.dedent(f"""
        import os, signal, sys
        import agent.sync.discards as d
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(d.Reporter, {target!r}, staticmethod(die))
        from agent.cli import main
        sys.exit(main(["sync", "--config", {str(cfg)!r}, "--once"]))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    return p.returncode


def sid(q: int) -> str:
    return f"{DEVICE}-{q:08d}"


def states(spool) -> dict[str, str]:
    db = sqlite3.connect(spool / "sync.sqlite3")
    try:
        return dict(db.execute("SELECT id, state FROM segments"))
    finally:
        db.close()


@pytest.mark.parametrize("kill_at", ["before-send", "after-send"])
def test_discard_across_kill9_between_press_and_deletion(tmp_path, col, kill_at):
    spool = tmp_path / "spool"
    cfg = cfg_for(tmp_path, col.url)
    make_segments(spool, DEVICE, 4, 100_000)  # 0..3: uploaded and verified
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(collector_objects(col.root)) == [sid(q) for q in range(4)]
    make_segments(spool, DEVICE, 2, 100_000, start=4)  # 4, 5: not uploaded yet
    # the press: the last minutes overlap segments 2, 3 (on the collector) and 4 (not sent)
    spans = [(sid(q), q * 100, q * 100 + 99) for q in range(6)]
    req = Wearer(None, spool).request_discard(
        Action("discard-requested", 1000, {"from_ns": 250, "to_ns": 450, "minutes": 5}),
        spans)
    assert json.loads(req.read_text())["segments"] == [sid(2), sid(3), sid(4)]

    assert sync_killed_at(cfg, kill_at) == -9
    after_kill = json.loads(req.read_text())
    assert after_kill["state"] == "done-local"  # durable on the device, not confirmed
    held = sorted(collector_objects(col.root))
    if kill_at == "before-send":
        assert sid(2) in held and sid(3) in held  # the collector has not heard of it yet
    else:
        assert sid(2) not in held and sid(3) not in held  # purged; the answer was lost

    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["discarded"] == [sid(2), sid(3), sid(4)]
    assert sid(5) in out["verified"] and sid(4) not in out["verified"]
    assert sorted(collector_objects(col.root)) == [sid(0), sid(1), sid(5)]
    done = json.loads(req.read_text())
    assert done["state"] == "done" and [d["seq"] for d in done["collector"]] == [2, 3, 4]
    st = states(spool)
    assert [st[sid(q)] for q in range(6)] == ["verified", "verified", "discarded",
                                              "discarded", "discarded", "verified"]
    rep = json.loads(run_cli("collector", "report", "--data", str(col.root), "--json",
                             "--device", DEVICE).stdout)[0]
    assert rep["discarded"] == [[2, 4]] and rep["missing"] == [] and rep["complete"]
    # the collector never takes those numbers again
    c = TusClient(col.url.rsplit("/files", 1)[0], col.token)
    assert c.create(DEVICE, 3, b"x" * 10).status_code == 410
    c.close()
    # the request is not sent a third time
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["discarded"] == []
    print(f"discard across kill -9 {kill_at}: 1 trial; 3 discarded, 0 of them left on the "
          f"collector; 3 kept, 0 of them lost; the seq refused again (410)")
