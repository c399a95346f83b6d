"""WristSource's writer side on a controlled timeline, no radio: batching, flushing at segment
rolls, at flush() and at stop (with what decoders hold back), a band that is configured but
never streams showing up as gaps, and every counted loss one gap, never counted twice.

The link is the fake of ``BleLink`` (tests/fakes/ble_link.py, held to the real API by
tests/test_ble_fake_canary.py); packets come from the pure band simulation and are pushed
the way the BLE callback pushes them."""

from __future__ import annotations

import itertools
import json
import re
import struct
from dataclasses import replace
from typing import Any

import pytest

from agent.config import BleSection, WristBand
from agent.sim.band_model import BandModel, BandParams
from agent.sources import GAP_TOPIC
from agent.wrist.ble import LinkEvent
from agent.wrist.imu_batch import batch_clock, decode_payload
from agent.wrist.source import WristSource
from tests.fakes.ble_link import FakeBleLink, FakeLinks

BAND = WristBand(name="left", address="00:AA:BB:CC:DD:01", profile="wearcap-open", rate_hz=200)
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000 * MS

    def __call__(self) -> int:
        return self.now


class Source(WristSource):
    """A WristSource on the fake link (tests/fakes/ble_link.py), made by its factory."""

    def __init__(self, band: WristBand, ble: BleSection, **kw: Any) -> None:
        self.links = FakeLinks()
        super().__init__(band, ble, link_factory=self.links, **kw)

    @property
    def fake(self) -> FakeBleLink:
        return self.links.last


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
    src.fake._fake_streaming(clock.now)
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
    pending = src.stream.pending_samples
    assert pending > 0  # the tail waits for more
    meta = src.segment_metadata()  # a roll: what is pending goes out at the next drain
    assert meta["streaming"] == "yes" and meta["batch_seconds"] == "0.5"
    rolled = src.drain()
    assert sum(p["n"] for p in imu(rolled)) == pending and src.stream.pending_samples == 0
    msgs += rolled
    stream(src, clock, model, 0.3, msgs)
    assert src.stream.pending_samples > 0
    src.stop()
    msgs += src.drain()
    assert src.stream.pending_samples == 0
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
    assert imu(msgs) == [] and src.stream.pending_samples > 0  # a 2 s batch is still filling
    src.fake._fake_lost(clock.now)
    out = src.drain()
    assert len(imu(out)) == 1 and src.stream.pending_samples == 0  # never a batch across a gap
    msgs += out
    clock.now += 1_000 * MS
    skipped = model.skip_until(clock.now)  # the band sampled on while the link was down
    model.connect(clock.now)
    src.fake._fake_streaming(clock.now)
    stream(src, clock, model, 0.5, msgs)
    src.stop()
    msgs += src.drain()
    lost = [g for g in gaps(msgs) if g["cause"] == "disconnect:link-lost"]
    assert len(lost) == 1 and lost[0]["lost"] == skipped > 0


# ---------------------------------------------------------------- losses, held chunks, flush

WIT = replace(BAND, profile="witmotion", rate_hz=100)


def make_band(band: WristBand, batch_s: float = 0.5, **kw: Any) -> tuple[Source, Clock]:
    clock = Clock()
    src = Source(band, replace(BleSection(), batch_seconds=batch_s), clock=clock, **kw)
    return src, clock


def connect_model(src: Source, clock: Clock, **params: object) -> BandModel:
    src.fake._fake_streaming(clock.now)
    p = BandParams(profile=src.band.profile, rate_hz=src.band.rate_hz, **params)  # type: ignore[arg-type]
    return BandModel(p, clock.now)


def indices(msgs: list) -> list[int]:
    return [int(i) for p in imu(msgs) for i in decode_payload(p)["index"]]


def lost_before(msgs: list) -> int:
    return sum(int(x) for p in imu(msgs) for x in p["lost_before"])


def test_witmotion_arrivals_alone_never_make_up_a_loss():
    """No counter on the band, and arrival times cannot tell a backlog from a loss: a
    congested link (20 % retransmissions, interference bursts) loses nothing, and nothing is
    claimed lost; every sample is written as it arrives, numbered in order."""
    src, clock = make_band(WIT)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, interval_ms=(50, 100), seed=3, retransmit_prob=0.2,
                          close_after_failures=2, outage_prob=0.01)
    msgs: list = []
    stream(src, clock, model, 60, msgs)
    held = src.stats["packets"] - src.stats["samples"]
    src.stop()
    msgs += src.drain()
    assert held == 0  # nothing waits in the decoder for a chunk close to miss
    assert [g for g in gaps(msgs) if not g["cause"].startswith("not-connected")] == []
    idx = indices(msgs)
    assert len(idx) == src.stats["samples"] == src.stats["packets"]
    assert idx == list(range(len(idx)))


def test_an_open_profile_sequence_gap_is_one_gap_with_its_count():
    src, clock = make_band(BAND)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, 1.0, msgs)
    clock.now += 50 * MS
    ds = model.deliveries_until(clock.now)
    skipped = ds[len(ds) // 2]
    for d in ds:
        if d is not skipped:
            src._on_packet(d.host_ns, d.packet)
    msgs += src.drain()
    stream(src, clock, model, 1.0, msgs)
    src.stop()
    msgs += src.drain()
    (gap,) = [g for g in gaps(msgs) if not g["cause"].startswith("not-connected")]
    assert gap["cause"] == "lost:sequence" and gap["lost"] == skipped.n
    first = int(model.truth_ns(skipped.first_sample))
    last = int(model.truth_ns(skipped.first_sample + skipped.n - 1))
    # around what is missing, to within the bound the batches claim
    bound = max(batch_clock(m.payload)["error_bound_ns"] for m in msgs if m.topic.endswith("/imu"))
    assert gap["start_ns"] < first + bound and last < gap["end_ns"] + bound
    idx = indices(msgs)
    assert [b - a - 1 for a, b in itertools.pairwise(idx) if b != a + 1] == [skipped.n]


def test_a_ring_overflow_is_one_gap_counted_by_sequence_numbers():
    src, clock = make_band(BAND, max_packets=8)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=4)
    msgs: list = []
    stream(src, clock, model, 0.5, msgs)
    clock.now += 400 * MS  # the writer stalls: more packets than the ring holds
    ds = model.deliveries_until(clock.now)
    for d in ds:
        src._on_packet(d.host_ns, d.packet)
    assert len(ds) > 8
    msgs += src.drain()
    stream(src, clock, model, 0.5, msgs)
    deliver(src, model.stop(clock.now))  # the band sends what it holds at the stop
    src.stop()
    msgs += src.drain()
    (gap,) = [g for g in gaps(msgs) if not g["cause"].startswith("not-connected")]
    assert gap["cause"] == f"ring-overflow:{len(ds) - 8} packets"
    assert gap["lost"] == sum(d.n for d in ds[8:])  # the band's numbers, not an estimate


def witmotion_reconnect(roll_before_count: bool) -> tuple[list, int, Source]:
    """30 s of WitMotion, a lost link, 3 s away, 5 s more; optionally a roll (flush, drain,
    new segment) 0.5 s after the reconnection, before the decoder has counted the silence."""
    src, clock = make_band(WIT)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, interval_ms=(7.5, 7.5), seed=1)
    msgs: list = []
    stream(src, clock, model, 30, msgs)
    src.fake._fake_lost(clock.now)
    away = model.disconnect(clock.now)
    clock.now += 3_000 * MS
    away += model.skip_until(clock.now)
    model.connect(clock.now)
    src.fake._fake_streaming(clock.now)
    msgs += src.drain()
    stream(src, clock, model, 0.5, msgs)
    if roll_before_count:
        src.flush()
        msgs += src.drain()
        src.segment_metadata()
    stream(src, clock, model, 5.0, msgs)
    src.stop()
    msgs += src.drain()
    return msgs, away, src


def estimate(gap: dict) -> int:
    """The estimate a gap of a band with no counter gives in its cause."""
    m = re.search(r"\(about (\d+) samples taken meanwhile, estimated from the rate fit",
                  gap["cause"])
    assert m, gap["cause"]
    return int(m.group(1))


def test_witmotion_reconnection_gap_is_unknown_with_its_estimate_in_the_cause():
    """No counter, no clock: what the band took while away is an estimate, so the gap's
    ``lost`` is -1 (nothing is claimed counted) and its cause carries the estimate."""
    msgs, away, src = witmotion_reconnect(roll_before_count=False)
    (gap,) = [g for g in gaps(msgs) if not g["cause"].startswith("not-connected")]
    assert gap["cause"].startswith("disconnect:link-lost (about ")
    assert gap["lost"] == -1 and src.stats["samples_lost"] == 0
    assert abs(estimate(gap) - away) <= 1  # the rate fit's estimate, to within one sample
    assert lost_before(msgs) == estimate(gap)  # the numbering jumps by it, once
    idx = indices(msgs)
    assert [b - a - 1 for a, b in itertools.pairwise(idx) if b != a + 1] == [estimate(gap)]


def test_witmotion_silence_estimate_comes_before_a_roll():
    """Nothing is held back: the first notification after the reconnection carries the
    silence's count (an estimate from the rate fit), so a roll 0.5 s later finds nothing
    left to count and the gap is written once."""
    msgs, away, src = witmotion_reconnect(roll_before_count=True)
    (gap,) = [g for g in gaps(msgs) if not g["cause"].startswith("not-connected")]
    assert gap["cause"].startswith("disconnect:link-lost (about ") and gap["lost"] == -1
    assert abs(estimate(gap) - away) <= 1 and src.stats["samples_lost"] == 0
    assert lost_before(msgs) == estimate(gap)


def test_flush_writes_the_pending_batch_once_and_the_roll_after_it_adds_nothing():
    src, clock = make_band(BAND, batch_s=2.0)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, 0.7, msgs)
    pending = src.stream.pending_samples
    assert imu(msgs) == [] and pending > 0
    src.flush()
    src.flush()  # twice before the drain: the same
    out = src.drain()
    assert [p["n"] for p in imu(out)] == [pending] and src.stream.pending_samples == 0
    src.flush()  # again with nothing new: nothing
    assert src.drain() == []
    src.segment_metadata()  # the roll right after the flush: no second, empty cut
    assert src.drain() == []
    msgs += out
    stream(src, clock, model, 0.3, msgs)
    src.flush()
    out = src.drain()
    assert len(imu(out)) == 1  # what came since
    msgs += out
    src.stop()
    msgs += src.drain()
    idx = indices(msgs)
    assert len(idx) == src.stats["samples"] and idx == list(range(idx[0], idx[0] + len(idx)))


def test_flush_cuts_an_open_gap_and_the_roll_after_it_does_not_cut_again():
    src, clock = make_band(BAND)
    src.start()
    t0 = clock.now
    src.segment_metadata()
    clock.now += 4_000 * MS
    t_flush = clock.now
    src.flush()
    (part,) = gaps(src.drain())
    assert (part["start_ns"], part["end_ns"]) == (t0, t_flush)
    assert part["cause"] == "not-connected:connecting (continues after the roll)"
    src.flush()  # same instant: nothing more
    assert src.drain() == []
    clock.now += 10 * MS
    src.segment_metadata()  # the roll the flush was for
    assert src.drain() == []
    clock.now += 1_000 * MS
    src.stop()
    (rest,) = gaps(src.drain())
    assert (rest["start_ns"], rest["end_ns"]) == (t_flush, clock.now)
    assert src.stats["gaps"] == 2


def test_a_movesense_packet_lost_is_one_gap_counted_from_its_timestamps():
    src, clock = make_band(replace(BAND, profile="movesense", rate_hz=104))
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=5)
    msgs: list = []
    stream(src, clock, model, 2.0, msgs)
    clock.now += 100 * MS
    ds = model.deliveries_until(clock.now)
    for d in ds[1:]:  # the first of these never arrives
        src._on_packet(d.host_ns, d.packet)
    stream(src, clock, model, 1.0, msgs)
    deliver(src, model.stop(clock.now))
    src.stop()
    msgs += src.drain()
    (gap,) = [g for g in gaps(msgs) if not g["cause"].startswith(("not-connected", "stop:"))]
    assert gap["cause"] == "lost:timestamp" and gap["lost"] == ds[0].n
    assert lost_before(msgs) == gap["lost"]


# ---------------------------------------------------------------- what the band says; stop

POLAR = replace(BAND, profile="polar-pmd", rate_hz=52)


def deliver(src: Source, ds: list) -> None:
    for d in ds:
        src._on_packet(d.host_ns, d.packet)


def no_gyro(model: BandModel) -> None:
    """The band sends no GYRO frames (it refused the stream)."""
    orig = model.deliveries_until

    def only_acc(host_ns: int) -> list:
        return [d for d in orig(host_ns) if d.packet[0] & 0x3F != 5]

    model.deliveries_until = only_acc  # type: ignore[method-assign]


def test_polar_stopped_mid_frame_writes_every_sample_it_delivered():
    """The band's ACC frame arrived, its GYRO frame never did (stopped between them): the
    ACC samples are written at stop, not held for a partner that will not come."""
    src, clock = make_band(POLAR)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=5)
    msgs: list = []
    stream(src, clock, model, 3.0, msgs)
    clock.now += 400 * MS
    last = [d for d in model.deliveries_until(clock.now)]
    acc_only = [d for d in last if d.packet[0] & 0x3F == 2]
    assert acc_only
    deliver(src, [d for d in last if d.packet[0] & 0x3F == 2 or d is not last[-1]])
    src.stop()
    msgs += src.drain()
    sent = {d.first_sample + i for d in acc_only for i in range(d.n)}
    idx = set(indices(msgs))
    assert sent <= idx and len(idx) == src.stats["samples"]
    assert src.stream.decoder.flush() == []  # nothing left behind


def test_a_refused_gyro_is_absent_with_the_bands_reason_never_filled():
    src, clock = make_band(POLAR)
    src.start()
    src.segment_metadata()
    src._on_event(LinkEvent(clock.now, "refused", "gyro:not supported (band status 3 to start)"))
    model = connect_model(src, clock, seed=6)
    no_gyro(model)
    msgs: list = []
    stream(src, clock, model, 3.0, msgs)
    written_before_stop = sum(p["n"] for p in imu(msgs))
    src.stop()
    msgs += src.drain()
    batches = imu(msgs)
    assert batches and all(p["gyro"] is None for p in batches)
    assert all(p["absent"] == {"gyro": "not supported (band status 3 to start)"}
               for p in batches)
    assert all((decode_payload(p)["acc"] != -32768).all() for p in batches)
    # nothing waits 2 s for a partner: every batch but the last was written while streaming
    assert written_before_stop >= 52 * 2
    assert sum(p["n"] for p in batches) == src.stats["samples"]
    meta = src.segment_metadata()
    assert json.loads(meta["refused_streams"]) == {"gyro": "not supported (band status 3 to "
                                                   "start)"}


def test_polar_without_gyro_frames_loses_nothing_at_stop():
    """Old behaviour: ACC samples waited up to 2 s for GYRO and the stop returned none."""
    src, clock = make_band(POLAR)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=7)
    no_gyro(model)
    msgs: list = []
    stream(src, clock, model, 4.0, msgs)
    deliver(src, [d for d in model.stop(clock.now) if d.packet[0] & 0x3F == 2])
    src.stop()
    msgs += src.drain()
    idx = indices(msgs)
    assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert idx[-1] == model._next_sample - 1  # the last sample the band took is written


def test_the_bands_info_sets_its_own_scales():
    from agent.wrist.decode.open_profile import Info

    src, clock = make_band(BAND)
    src.start()
    src.segment_metadata()
    info = Info(200, 8, 1000, 8 * 9.80665 / 32768, 1000 * 0.017453292519943295 / 32768)
    src._on_event(LinkEvent(clock.now, "info", data=info.encode()))
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, 1.0, msgs)
    src.stop()
    msgs += src.drain()
    for p in imu(msgs):
        assert p["acc_scale"] == pytest.approx(info.acc_scale, rel=1e-6)
        assert p["gyro_scale"] == pytest.approx(info.gyro_scale, rel=1e-6)
    meta = json.loads(src.segment_metadata()["band_info"])
    assert meta["acc_fs_g"] == 8 and meta["gyro_fs_dps"] == 1000


def test_an_unreadable_info_is_said_so_and_the_defaults_stay():
    src, clock = make_band(BAND)
    src.start()
    src._on_event(LinkEvent(clock.now, "info", data=b"\x01\x02"))
    src.drain()
    meta = json.loads(src.segment_metadata()["band_info"])
    assert "16 bytes" in meta["error"] or "need" in meta["error"]


def test_a_clean_stop_runs_every_stream_to_the_recordings_end_or_says_why():
    src, clock = make_band(BAND)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, 1.0, msgs)
    clock.now += 7 * MS
    deliver(src, model.stop(clock.now))  # the band sends its partial frame at the stop
    src.stop()
    src.end_at(clock.now + 400 * MS)  # the camera ran on while the bands were stopping
    msgs += src.drain()
    tail = [g for g in gaps(msgs) if g["cause"].startswith("stop:")]
    assert len(tail) == 1 and tail[0]["lost"] == 0
    assert tail[0]["end_ns"] == clock.now + 400 * MS
    assert indices(msgs)[-1] == model._next_sample - 1


def test_a_partial_frame_the_band_keeps_at_stop_is_a_gap():
    src, clock = make_band(BAND)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3, interval_ms=(50, 50))
    msgs: list = []
    stream(src, clock, model, 1.0, msgs)
    clock.now += 40 * MS
    deliver(src, model.stop(clock.now, send_partial=False)[:-1])  # the last one never came
    src.stop()
    msgs += src.drain()
    (tail,) = [g for g in gaps(msgs) if g["cause"].startswith("stop:")]
    assert tail["lost"] == -1 and "may have taken some" in tail["cause"]
    assert "did not reply to the stop command" in tail["cause"]  # why the count is unknown
    assert tail["end_ns"] == clock.now


def stop_with_reply(reply: bool, extra: int = 0, send: int | None = None,
                    band: WristBand = BAND, seconds: float = 1.0,
                    silent_ms: int = 7) -> tuple[list, BandModel, Source]:
    """1 s of a band, then the stop: it sends what it holds (the first ``send`` of those
    packets reach the host) and, with ``reply``, replies with next_seq = the seq after its
    last sample + ``extra`` (samples it says it sent that never came)."""
    src, clock = make_band(band)
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, seconds, msgs)
    clock.now += silent_ms * MS  # what the band sent meanwhile comes with the stop
    at_stop = model.stop(clock.now)
    src.fake._fake_at_stop = [(d.host_ns, d.packet) for d in at_stop[:send]]
    if reply:
        src.fake._fake_stop_reply = struct.pack("<I", model._next_sample + extra)
    src.stop()
    msgs += src.drain()
    return msgs, model, src


def stop_gaps(msgs: list) -> list[dict]:
    return [g for g in gaps(msgs) if g["cause"].startswith("stop:")]


def test_one_sample_in_flight_at_stop_is_counted_exactly_by_the_stop_reply():
    """The band says it sent one sample more than arrived: inside the two samples that a
    judgement from time alone lets pass, yet a gap counts exactly that one."""
    msgs, model, _src = stop_with_reply(reply=True, extra=1)
    (tail,) = stop_gaps(msgs)
    assert tail["lost"] == 1 and "next_seq" in tail["cause"]
    assert indices(msgs)[-1] + 1 + tail["lost"] == model._next_sample + 1


def test_a_packet_in_flight_at_stop_is_counted_exactly_and_nothing_else_is_claimed():
    msgs, model, _src = stop_with_reply(reply=True, send=-1)  # the last packet never came
    (tail,) = stop_gaps(msgs)
    assert indices(msgs)[-1] + 1 + tail["lost"] == model._next_sample
    assert tail["lost"] >= 1 and tail["start_ns"] < tail["end_ns"]


def test_a_stop_reply_saying_everything_arrived_leaves_no_stop_gap():
    msgs, model, _src = stop_with_reply(reply=True)
    assert stop_gaps(msgs) == []
    assert indices(msgs)[-1] + 1 == model._next_sample


def test_without_a_stop_reply_the_stop_gap_says_why_its_count_is_unknown():
    msgs, _model, _src = stop_with_reply(reply=False, send=0, silent_ms=100)
    (tail,) = stop_gaps(msgs)
    assert tail["lost"] == -1 and "did not reply to the stop command" in tail["cause"]


def test_a_band_whose_stop_reply_has_no_count_says_so_in_the_stop_gap():
    msgs, _model, _src = stop_with_reply(reply=False, send=0, band=POLAR, seconds=3.0,
                                          silent_ms=700)
    tails = stop_gaps(msgs)
    assert tails and tails[0]["lost"] == -1
    assert "a polar-pmd band does not say at stop how many samples it sent" in tails[0]["cause"]


def test_a_bands_configured_latency_reaches_its_clock():
    src, clock = make_band(replace(BAND, latency_ms=2.5, latency_uncertainty_ms=0.2))
    src.start()
    src.segment_metadata()
    model = connect_model(src, clock, seed=3)
    msgs: list = []
    stream(src, clock, model, 1.0, msgs)
    src.stop()
    msgs += src.drain()
    assert imu(msgs) and all(batch_clock(p)["latency"] == "config" for p in imu(msgs))
