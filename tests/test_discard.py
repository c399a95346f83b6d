"""Discard requests carried out on the device: whole segments become tombstones that keep
their sequence and SHA-256; a crash between the tombstone and the deletion is finished on
the next run; the spool never reuses the sequence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from agent.digest import sha256_file
from agent.mcu.controls import Action
from agent.mcu.wearer import Wearer
from agent.record.discard import carry_out, pending, tombstones
from agent.record.spool import Spool


def make_spool(tmp_path, n=3):
    spool = Spool(tmp_path / "spool", "dev")
    spans = []
    for i in range(n):
        seq = spool.next_seq()
        fh = spool.open_part(seq)
        fh.write(b"segment %d" % i)
        fh.flush()
        sealed = spool.seal(seq, fh, sha256_file(spool.active / f"dev-{seq:08d}.mcap.part"),
                            fh.tell())
        spans.append((sealed.id, i * 100, i * 100 + 99))
    return spool, spans


def test_request_then_tombstones_keep_sequence_and_sha(tmp_path):
    spool, spans = make_spool(tmp_path)
    shas = {p.stem: sha256_file(p) for p in spool.sealed.glob("*.mcap")}
    w = Wearer(None, spool.root)
    req = w.request_discard(Action("discard-requested", 500, {"from_ns": 150, "to_ns": 250,
                                                              "minutes": 5}), spans)
    assert json.loads(req.read_text())["segments"] == ["dev-00000001", "dev-00000002"]
    assert pending(spool.root) == [req]
    written = carry_out(spool.root, now_ns=600)
    assert [t["id"] for t in written] == ["dev-00000001", "dev-00000002"]
    assert sorted(p.stem for p in spool.sealed.glob("*.mcap")) == ["dev-00000000"]
    t = tombstones(spool.root)
    assert t["dev-00000001"]["sha256"] == shas["dev-00000001"]
    assert t["dev-00000002"]["sequence"] == 2
    assert json.loads(req.read_text())["state"] == "done-local" and not pending(spool.root)
    assert carry_out(spool.root, now_ns=700) == []  # nothing twice
    assert spool.next_seq() == 3  # a discarded sequence is never reissued


def test_kill_between_tombstone_and_deletion_is_finished_next_run(tmp_path):
    spool, spans = make_spool(tmp_path)
    Wearer(None, spool.root).request_discard(
        Action("discard-requested", 500, {"from_ns": 0, "to_ns": 250}), spans)
    # a child that dies by SIGKILL right after the first tombstone is durable
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from agent.record import discard
        discard.carry_out(Path({str(spool.root)!r}), now_ns=1,
                          on_tombstone=lambda t: os.kill(os.getpid(), signal.SIGKILL))
    """)
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=os.getcwd())
    assert r.returncode == -signal.SIGKILL
    assert len(tombstones(spool.root)) == 1 and len(pending(spool.root)) == 1
    carry_out(spool.root, now_ns=2)
    assert not list(spool.sealed.glob("*.mcap"))
    assert sorted(tombstones(spool.root)) == ["dev-00000000", "dev-00000001", "dev-00000002"]
    assert not pending(spool.root)


def test_the_sync_service_carries_out_a_request_and_never_uploads_the_segment(tmp_path):
    from sync_servers import DEVICE, make_segments, write_config

    from agent import config
    from agent.sync.service import SyncService

    spool_dir = tmp_path / "spool"
    make_segments(spool_dir, DEVICE, 3, 5_000)
    ids = sorted(p.stem for p in (spool_dir / "sealed").glob("*.mcap"))
    cfg = config.load(write_config(tmp_path / "agent.toml", url="http://127.0.0.1:9/files/",
                                   spool=spool_dir, token_file=tmp_path / "token"))
    svc = SyncService(cfg, spool=spool_dir, token="t", once=True)
    assert svc.rescan() == 3  # known to sync, waiting for upload
    Wearer(None, spool_dir).request_discard(
        Action("discard-requested", 500, {"from_ns": 0, "to_ns": 10}),
        [(ids[1], 0, 10), (ids[2], 20, 30)])
    svc.rescan()  # discovery carries out pending discards first
    assert sorted(p.stem for p in (spool_dir / "sealed").glob("*.mcap")) == [ids[0], ids[2]]
    seg = svc.state.get(ids[1])
    assert seg is not None and seg.state == "discarded"  # never to be uploaded
    assert "discarded by the wearer" in (seg.last_error or "")
    assert ids[1] in tombstones(spool_dir) and not pending(spool_dir)
