"""WristSource's writer side on a controlled timeline, no radio: batching, flushing at segment
rolls and at stop, and a band that is configured but never streams showing up as gaps.

The link is a small stand-in for ``BleLink`` (same attributes WristSource reads); packets come
from the pure band simulation and are pushed the way the BLE callback pushes them."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from agent.config import BleSection, WristBand
from agent.sim.band_model import BandModel, BandParams
from agent.sources import GAP_TOPIC
from agent.wrist.ble import LinkEvent
from agent.wrist.imu_batch import decode_payload
from agent.wrist.source import WristSource

BAND = WristBand(name="left", address="00:AA:BB:CC:DD:01", profile="wearcap-open", rate_hz=200)
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000 * MS

    def __call__(self) -> int:
        return self.now


class FakeLink:
    def __init__(self) -> None:
        self.running = False
        self.lifecycle = SimpleNamespace(state=SimpleNamespace(value="scanning"), reconnects=0)
        self.last_error = ""

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False
        self.lifecycle.state.value = "stopped"


class Source(WristSource):
    def _make_link(self) -> FakeLink:  # type: ignore[override]
        self.fake = FakeLink()
        return self.fake


def make(batch_s: float = 0.5) -> tuple[Source, Clock]:
    clock = Clock()
    src = Source(BAND, replace(BleSection(), batch_seconds=batch_s), clock=clock)
    return src, clock


def stream(src: Source, clock: Clock, model: BandModel, seconds: float, msgs: list) -> None:
    """Deliver ``seconds`` of packets, draining every 50 ms like the writer."""
    end = clock.now + int(seconds * 1e9)
    while clock.now < end:
        clock.now += 50 * MS
        for d in model.deliveries_until(clock.now):
            src._on_packet(d.host_ns, d.packet)
        msgs += src.drain()


def imu(msgs: list) -> list[dict]:
    return [m.payload for m in msgs if m.topic.endswith("/imu")]


def gaps(msgs: list) -> list[dict]:
    return [m.payload for m in msgs if m.topic == GAP_TOPIC]


def connect(src: Source, clock: Clock) -> BandModel:
    src._on_event(LinkEvent(clock.now, "connected"))
    src.fake.lifecycle.state.value = "streaming"
    return BandModel(BandParams(profile="wearcap-open", seed=3), clock.now)


def test_samples_are_batched_and_flushed_at_a_roll_and_at_stop():
    src, clock = make(batch_s=0.5)
    src.start()
    src.segment_metadata()  # the first segment opens
    model = connect(src, clock)
    msgs: list = []
    stream(src, clock, model, 2.2, msgs)
    full = imu(msgs)
    assert len(full) >= 3
    for p in full:  # each batch written once it spans the batch length
        d = decode_payload(p)
        assert p["n"] >= 100 or d["host_ns"][-1] - d["host_ns"][0] >= 400 * MS
    pending = src._batch_n
    assert pending > 0  # the tail waits for more
    meta = src.segment_metadata()  # a roll: what is pending goes out at the next drain
    assert meta["streaming"] == "yes" and meta["batch_seconds"] == "0.5"
    rolled = src.drain()
    assert sum(p["n"] for p in imu(rolled)) == pending and src._batch_n == 0
    msgs += rolled
    stream(src, clock, model, 0.3, msgs)
    assert src._batch_n > 0
    src.stop()
    msgs += src.drain()
    assert src._batch_n == 0
    idx = [int(i) for p in imu(msgs) for i in decode_payload(p)["index"]]
    assert len(idx) == src.stats["samples"] and idx == list(range(idx[0], idx[0] + len(idx)))
    (start,) = gaps(msgs)  # only the time it took to connect
    assert start["cause"] == "not-connected:connecting"


def test_a_band_that_never_streams_is_a_gap_in_every_segment_and_in_status():
    src, clock = make()
    src.start()
    t0 = clock.now
    assert src.segment_metadata()["streaming"] == "no"  # first segment opens
    clock.now += 5_000 * MS
    assert src.drain() == []  # nothing yet: the gap is open
    src._on_event(LinkEvent(clock.now, "failed", "not-found"))
    assert src.drain() == []  # the writer's drain replays link events
    st = src.status()
    assert not st["streaming"] and st["absent_s"] == 5.0
    assert st["absent_cause"] == "not-connected:not-found"
    clock.now += 5_000 * MS
    roll = clock.now
    meta = src.segment_metadata()  # a roll while the band is still absent
    assert meta["streaming"] == "no" and meta["absent_since_ns"] == str(t0)
    (first,) = gaps(src.drain())
    assert (first["start_ns"], first["end_ns"]) == (t0, roll)
    assert first["cause"] == "not-connected:not-found (continues after the roll)"
    clock.now += 3_000 * MS
    src.stop()
    (last,) = gaps(src.drain())
    assert (last["start_ns"], last["end_ns"]) == (roll, clock.now)
    assert last["cause"] == "not-connected:not-found (not connected before stop)"
    assert last["lost"] == -1 and src.stats["gaps"] == 2


def test_a_lost_link_flushes_the_batch_and_the_gap_counts_the_samples_lost():
    src, clock = make(batch_s=2.0)
    src.start()
    src.segment_metadata()
    model = connect(src, clock)
    msgs: list = []
    stream(src, clock, model, 0.6, msgs)
    assert imu(msgs) == [] and src._batch_n > 0  # a 2 s batch is still filling
    src._on_event(LinkEvent(clock.now, "lost", "link-lost"))
    out = src.drain()
    assert len(imu(out)) == 1 and src._batch_n == 0  # never a batch across a gap
    msgs += out
    clock.now += 1_000 * MS
    skipped = model.skip_until(clock.now)  # the band sampled on while the link was down
    model.connect(clock.now)
    src._on_event(LinkEvent(clock.now, "connected"))
    stream(src, clock, model, 0.5, msgs)
    src.stop()
    msgs += src.drain()
    lost = [g for g in gaps(msgs) if g["cause"] == "disconnect:link-lost"]
    assert len(lost) == 1 and lost[0]["lost"] == skipped > 0
