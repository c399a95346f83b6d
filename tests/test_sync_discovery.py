"""Discovery of sealed segments: watchdog events, the periodic rescan, and what is ignored;
the service loop's clean stop."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sync_servers import DEVICE, make_segments, tus_sink, write_config

from agent import config
from agent.sync.service import SyncService
from agent.sync.state import State
from agent.sync.watcher import Found, Watcher, parse, scan


def test_names_and_scan_order(tmp_path):
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    for name in ["sim-0001-00000010.mcap", "sim-0001-00000002.mcap", "a-b-c-00000001.mcap",
                 "sim-0001-2.mcap", "sim-0001-00000003.mcap.tmp", "notes.txt",
                 ".sim-0001-00000004.mcap", "sim-0001-00000005.mcap.part"]:
        (sealed / name).write_bytes(b"x")
    (sealed / "sim-0001-00000009.mcap").mkdir()
    found = scan(sealed)
    assert [(f.device, f.seq) for f in found] == [("a-b-c", 1), ("sim-0001", 2),
                                                   ("sim-0001", 10)]
    assert parse(sealed / "missing-00000001.mcap") is None
    assert scan(tmp_path / "nope") == []


def test_watcher_sees_a_segment_sealed_by_rename(tmp_path):
    sealed, active = tmp_path / "sealed", tmp_path / "active"
    active.mkdir()
    seen: list[Found] = []
    w = Watcher(sealed, seen.append)
    w.start()
    try:
        part = active / "sim-0001-00000001.mcap.part"
        part.write_bytes(b"segment")
        os.rename(part, sealed / "sim-0001-00000001.mcap")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        w.stop()
    assert [f.id for f in seen][:1] == ["sim-0001-00000001"]


def _serve(tmp_path, url, **kw):
    cfg = config.load(write_config(tmp_path / "agent.toml", url=url, spool=tmp_path / "spool",
                                   token_file=tmp_path / "token", **kw))
    return cfg


def _wait_verified(db_path, ids, timeout=30.0):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = State(db_path)
        try:
            done = {s.id for s in st.in_states("verified", "evicted")}
        finally:
            st.close()
        if ids <= done:
            return done
        time.sleep(0.05)
    return done


@pytest.mark.parametrize("watch", [True, False], ids=["watchdog", "rescan"])
def test_service_discovers_new_segments(tmp_path, watch):
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 1, 10_000)
    with tus_sink(tmp_path) as sink:
        # with watchdog: a rescan that never comes during the test; without: every second
        cfg = _serve(tmp_path, sink.url, rescan_seconds=3600.0 if watch else 1.0)
        svc = SyncService(cfg, spool=spool, token="t", watch=watch)
        t = threading.Thread(target=svc.run, daemon=True)
        t.start()
        try:
            assert _wait_verified(spool / "sync.sqlite3", {f"{DEVICE}-00000000"})
            (spool / "active" / f"{DEVICE}-00000002.mcap.part").write_bytes(b"in progress")
            make_segments(spool, DEVICE, 1, 20_000, start=1)
            done = _wait_verified(spool / "sync.sqlite3", {f"{DEVICE}-00000001"})
            assert f"{DEVICE}-00000001" in done
            assert f"{DEVICE}-00000002" not in done  # the .part is never touched
        finally:
            svc.stop()
            t.join(timeout=20)
        assert not t.is_alive()
    assert (spool / "active" / f"{DEVICE}-00000002.mcap.part").exists()
