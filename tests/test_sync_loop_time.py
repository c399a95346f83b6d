"""The sync loop in controlled time: its clock, monotonic clock and sleep are injected, so
hours of service pass in a second against a real collector, and every wait it chose is seen."""

from __future__ import annotations

from pathlib import Path

from sync_servers import DEVICE, make_segments, write_config
from test_collector_support import ServerThread

from agent import config
from agent.sync.service import SyncService


class FakeTime:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


def test_loop_uploads_then_evicts_after_keep_hours_in_controlled_time(tmp_path: Path) -> None:
    srv = ServerThread(tmp_path / "collector").start()
    try:
        token = srv.enroll(DEVICE)
        spool = tmp_path / "spool"
        paths = make_segments(spool, DEVICE, 3, 40_000)
        (tmp_path / "token").write_text(token)
        cfg = config.load(write_config(tmp_path / "agent.toml", url=f"{srv.url}/files/",
                                       spool=spool, token_file=tmp_path / "token",
                                       keep_hours=2.0, rescan_seconds=60.0))
        t = FakeTime(1_800_000_000.0)
        svc = SyncService(cfg, spool=spool, token=token, clock=t, monotonic=t,
                          sleep=t.sleep, watch=False)
        start = t.now

        def stop_after_three_hours() -> None:
            if t.now - start > 3 * 3600:
                svc.stop()

        t.on_sleep = stop_after_three_hours
        summary = svc.run()
    finally:
        srv.stop()
    assert sorted(summary.verified) == sorted(p.stem for p in paths)
    # idle: it waited one rescan interval at a time, never a busy loop, never real time
    assert t.sleeps and all(s == 60.0 for s in t.sleeps), set(t.sleeps)
    assert 3 * 3600 / 60 <= len(t.sleeps) <= 3 * 3600 / 60 + 2
    # evicted two hours (of controlled time) after verification, not before
    assert sorted(summary.evicted) == sorted(p.stem for p in paths)
    assert not any(p.exists() for p in paths)
    from agent.sync.state import State

    state = State(spool / "sync.sqlite3")
    try:
        for p in paths:
            seg = state.get(p.stem)
            assert seg is not None and seg.state == "evicted"
            assert seg.verified_at is not None and seg.evicted_at is not None
            assert 2 * 3600 <= seg.evicted_at - seg.verified_at <= 2 * 3600 + 60
    finally:
        state.close()
