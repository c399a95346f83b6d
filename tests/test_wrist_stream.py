"""The band stream's flush/cut/roll/stop table (agent/wrist/flushing.py) and the sans-IO
stream driven directly, with no adapter, no ring and no clock."""

from __future__ import annotations

import itertools

from agent.config import WristBand
from agent.sim.band_model import BandModel, BandParams
from agent.sources import GAP_TOPIC
from agent.wrist.ble import LinkEvent
from agent.wrist.flushing import ACTIONS, EVENTS, TRANSITIONS, Flushing, Phase
from agent.wrist.imu_batch import decode_payload
from agent.wrist.stream import BandStream

MS = 1_000_000
BAND = WristBand(name="left", address="00:AA:BB:CC:DD:01", profile="wearcap-open", rate_hz=200)


def test_the_table_is_total_and_names_only_known_actions():
    for phase, event in itertools.product(Phase, EVENTS):
        assert (phase, event) in TRANSITIONS, (phase, event)
    assert set(TRANSITIONS) == set(itertools.product(Phase, EVENTS))
    for after, acts in TRANSITIONS.values():
        assert after in Phase and acts <= set(ACTIONS)


def test_every_phase_reaches_stopped_and_stays_there():
    for phase in Phase:
        f = Flushing()
        f.phase = phase
        f.fire("stop", 1)
        f.fire("drain", 2)
        assert f.phase is Phase.STOPPED
        for event in EVENTS:
            f.fire(event, 3)
            assert f.phase is Phase.STOPPED


def test_a_flush_then_its_roll_cuts_once_and_a_later_roll_cuts_again():
    f = Flushing()
    f.fire("open", 0)
    assert f.fire("flush", 10) == {"mark"} and f.mark_ns == 10
    assert f.fire("drain", 11) == {"cut", "emit"}
    assert f.take_mark() == 10 and f.take_mark() is None
    assert f.fire("roll", 12) == frozenset()  # the roll the flush was for
    assert f.fire("drain", 13) == frozenset()
    assert f.fire("roll", 14) == {"mark"}  # a roll of its own
    assert f.fire("drain", 15) == {"cut", "emit"} and f.take_mark() == 14
    f.fire("stop", 16)
    assert f.fire("drain", 17) == {"held", "tail", "cut", "emit"}
    assert "tail" not in f.fire("drain", 18)  # the tail is judged once


def test_the_stream_alone_turns_packets_and_events_into_batches_and_gaps():
    s = BandStream(BAND, batch_seconds=0.5)
    t = 1_000_000 * MS
    s.start(t)
    assert s.open_segment(t)["streaming"] == "no"
    model = BandModel(BandParams(profile="wearcap-open", seed=3), t)
    t += 100 * MS
    s.event(LinkEvent(t, "connected"))
    msgs = []
    for _ in range(40):
        t += 50 * MS
        for d in model.deliveries_until(t):
            s.feed(d.host_ns, d.packet)
        msgs += s.drain(t)
    for d in model.stop(t):  # the band sends what it holds at the stop command
        s.feed(d.host_ns, d.packet)
    s.stop(t)
    msgs += s.drain(t, link_ended=True)
    imu = [m.payload for m in msgs if m.topic.endswith("/imu")]
    gaps = [m.payload for m in msgs if m.topic == GAP_TOPIC]
    idx = [int(i) for p in imu for i in decode_payload(p)["index"]]
    assert idx == list(range(len(idx))) and len(idx) == s.stats["samples"] > 0
    assert [g["cause"] for g in gaps] == ["not-connected:connecting"]
    assert s.pending_samples == 0 and s.stats["messages"] == len(imu)
