"""Movesense GSP IMU6 and WitMotion 55 61 packets: layouts, round trips, wrap, gaps."""

from __future__ import annotations

import struct

import numpy as np

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder, movesense, witmotion
from agent.wrist.profiles import load_profile


def test_movesense_layout_and_round_trip():
    acc = np.array([[2048, -3, 100], [2050, -1, 99]], np.int16)
    gyro = np.array([[10, -20, 0], [11, -19, 1]], np.int16)
    pkt = movesense.MovesenseEncoder().encode(123456, acc, gyro)
    assert len(pkt) == 6 + 2 * 24 and pkt[:2] == b"\x02\x63"
    assert struct.unpack_from("<I", pkt, 2)[0] == 123456
    f = struct.unpack_from("<12f", pkt, 6)
    assert abs(f[0] - 2048 * movesense.ACC_SCALE) < 1e-4  # m/s^2, acc block first
    assert abs(f[6] - 10 * 0.070) < 1e-5  # deg/s, then the gyro block
    (c,) = make_decoder("movesense", rate_hz=104).feed(pkt, 9)
    assert c.acc.tolist() == acc.tolist() and c.gyro is not None
    assert c.gyro.tolist() == gyro.tolist() and c.raw_time == 123456
    assert load_profile("movesense").start_commands(208) == [b"\x01\x63Meas/IMU6/208"]


def test_movesense_uint32_ms_wrap_keeps_device_time_monotonic():
    wrap_ns = (1 << 32) * 1_000_000
    model = BandModel(BandParams(profile="movesense", rate_hz=104, rate_error=0.07,
                                 offset_ns=wrap_ns - 3_000_000_000, seed=4), 0)
    dec = make_decoder("movesense", rate_hz=104)
    last = None
    raws = []
    for d in model.deliveries_until(8_000_000_000):
        for c in dec.feed(d.packet, d.host_ns):
            assert last is None or c.device_t0_ns > last
            last = c.device_t0_ns
            raws.append(c.raw_time)
            true = int(model.device_ns(c.index))
            if c.index > 200:  # after the timestamp line has settled
                assert abs(c.device_t0_ns - true) < 300_000
                assert abs(c.period_ns - model.device_period_ns) < 2_000
    assert min(raws) < 10_000 and max(raws) > 2**32 - 10_000  # it did wrap
    assert last is not None and last > wrap_ns and dec.malformed == 0


def test_movesense_gap_counts_lost_samples():
    model = BandModel(BandParams(profile="movesense", rate_hz=52, loss_prob=0.1, seed=8), 0)
    dec = make_decoder("movesense", rate_hz=52)
    lost = 0
    for d in model.deliveries_until(20_000_000_000):
        for c in dec.feed(d.packet, d.host_ns):
            lost += c.lost_before
    assert model.dropped_packets > 0
    assert lost == model.dropped_packets * model.spp


def test_witmotion_layout_and_round_trip():
    pkt = witmotion.encode([2048, -1, 5], [16, -16, 0], [100, 200, -300])
    assert len(pkt) == 20 and pkt[:2] == b"\x55\x61"
    assert pkt[2:4] == (2048).to_bytes(2, "little")
    dec = make_decoder("witmotion", rate_hz=200)
    assert isinstance(dec, witmotion.WitMotionDecoder)
    (c,) = dec.feed(pkt, 5)  # nothing is held back
    assert dec.flush() == []
    assert c.device_t0_ns is None and c.seq is None and c.period_ns is None
    assert c.acc.tolist() == [[2048, -1, 5]] and c.gyro.tolist() == [[16, -16, 0]]
    assert abs(c.acc_scale * 2048 - 9.80665) < 1e-9
    # two packets in one notification, then a register reply that is ignored
    two = dec.feed(pkt + pkt, 6)
    assert [x.index for x in two] == [1, 2] and [x.lost_before for x in two] == [0, 0]
    assert dec.feed(b"\x55\x71" + bytes(18), 7) == [] and dec.ignored == 1
    assert load_profile("witmotion").rate_commands(50)[1] == bytes.fromhex("ffaa030800")


def test_witmotion_stream_one_notification_at_a_time():
    model = BandModel(BandParams(profile="witmotion", rate_hz=100, seed=1), 0, record=True)
    dec = make_decoder("witmotion", rate_hz=100)
    n = 0
    chunks = [c for d in model.deliveries_until(3_000_000_000)
              for c in dec.feed(d.packet, d.host_ns)]
    held = dec.flush()
    assert chunks and not held  # nothing waits in the decoder
    for c in chunks + held:
        assert model.recorded is not None
        assert c.acc[0].tolist() == model.recorded[c.index][0].tolist()
        n += 1
    assert n > 250 and dec.malformed == 0
