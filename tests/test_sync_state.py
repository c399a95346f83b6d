"""The sync state database (SQLite on disk) and retention: only verified data is evicted."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sync import retention
from agent.sync.state import STATES, TRANSITIONS, IllegalTransition, State


@pytest.fixture
def state(tmp_path):
    s = State(tmp_path / "sync.sqlite3")
    yield s
    s.close()


def test_durability_is_wal_with_full_sync(state):
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_lifecycle_happy_path_survives_reopen(tmp_path):
    s = State(tmp_path / "db")
    assert s.add("sim-0001-00000001", 1, "/x", 10)
    assert not s.add("sim-0001-00000001", 1, "/x", 10)  # known already
    s.transition("sim-0001-00000001", "uploading", upload_url="http://h/files/a")
    s.update("sim-0001-00000001", upload_offset=5)
    s.close()
    s = State(tmp_path / "db")
    seg = s.get("sim-0001-00000001")
    assert (seg.state, seg.upload_url, seg.upload_offset) == ("uploading", "http://h/files/a", 5)
    assert s.transition(seg.id, "verified").verified_at is not None
    assert s.transition(seg.id, "evicted").evicted_at is not None
    s.close()


@pytest.mark.parametrize(("src", "dst"), [
    (a, b) for a, b in itertools.product(STATES, STATES) if b not in TRANSITIONS[a]])
def test_every_transition_outside_the_table_is_rejected(state, src, dst):
    state.add("d-00000001", 1, "/x", 1)
    state.db.execute("UPDATE segments SET state = ?", (src,))  # put it there directly
    with pytest.raises(IllegalTransition):
        state.transition("d-00000001", dst)
    assert state.get("d-00000001").state == src


def test_nothing_but_verified_reaches_evicted():
    sources = [s for s, dsts in TRANSITIONS.items() if "evicted" in dsts]
    assert sources == ["verified"]


def test_due_is_oldest_first_and_honours_next_attempt(state):
    for seq in (5, 2, 9):
        state.add(f"d-{seq:08d}", seq, f"/{seq}", 1)
    state.update("d-00000002", next_attempt=100.0)
    assert [s.seq for s in state.due(50.0)] == [5, 9]
    assert [s.seq for s in state.due(100.0)] == [2, 5, 9]


def test_update_cannot_change_state(state):
    state.add("d-00000001", 1, "/x", 1)
    with pytest.raises(ValueError):
        state.update("d-00000001", state="verified")
    with pytest.raises(ValueError):
        state.transition("d-00000001", "nonsense")


# ---------------------------------------------------------------- retention

def test_plan_age_and_space_pressure():
    c = [retention.Candidate("a", 100, 0.0), retention.Candidate("b", 100, 3000.0),
         retention.Candidate("c", 100, 7000.0)]
    # keep 1 h, plenty of space: only the one verified over an hour ago
    assert retention.plan(c, now=7200.0, keep_hours=1.0, free_bytes=10**9,
                          reserve_bytes=0) == ["a", "b"]
    assert retention.plan(c, now=3500.0, keep_hours=1.0, free_bytes=10**9,
                          reserve_bytes=0) == []
    # space pressure: oldest first until the reserve is met
    assert retention.plan(c, now=3500.0, keep_hours=1.0, free_bytes=50,
                          reserve_bytes=200) == ["a", "b"]
    assert retention.plan(c, now=3500.0, keep_hours=1.0, free_bytes=0,
                          reserve_bytes=10**9) == ["a", "b", "c"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(STATES), min_size=1, max_size=12),
       st.integers(0, 10**6), st.floats(0, 10))
def test_retention_never_evicts_unverified(tmp_path_factory, states, free, keep):
    tmp = tmp_path_factory.mktemp("ret")
    sealed = tmp / "sealed"
    sealed.mkdir()
    s = State(tmp / "db")
    for i, st_ in enumerate(states):
        p = sealed / f"d-{i:08d}.mcap"
        p.write_bytes(b"x" * 100)
        s.add(p.stem, i, str(p), 100)
        s.db.execute("UPDATE segments SET state = ?, verified_at = 0 WHERE id = ?",
                     (st_, p.stem))
    evicted = retention.run(s, spool=tmp, keep_hours=keep, reserve_bytes=10**9, now=1e9,
                            disk_free=lambda _p: free)
    for i, st_ in enumerate(states):
        p = sealed / f"d-{i:08d}.mcap"
        if st_ == "verified":
            assert p.stem in evicted and not p.exists()
            assert s.get(p.stem).state == "evicted"
        else:
            assert p.exists() and p.stem not in evicted
    s.close()


def test_evict_refuses_an_unverified_segment(state, tmp_path):
    p = tmp_path / "d-00000001.mcap"
    p.write_bytes(b"keep me")
    state.add(p.stem, 1, str(p), 7)
    state.transition(p.stem, "uploading", upload_url="http://x/files/1")
    with pytest.raises(ValueError):
        retention.evict(state, state.get(p.stem))
    assert p.read_bytes() == b"keep me"


def test_retry_rejected_forgets_the_upload_url(state):
    state.add("d-00000001", 1, "/x", 1)
    state.transition("d-00000001", "uploading", upload_url="http://h/files/1", upload_offset=1)
    state.transition("d-00000001", "rejected", last_error="HTTP 413")
    assert state.retry_rejected() == 1
    seg = state.get("d-00000001")
    assert (seg.state, seg.upload_url, seg.upload_offset) == ("sealed", None, 0)
