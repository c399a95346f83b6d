"""IMU batch channel: msgpack round trip gives back the counts and every time."""

from __future__ import annotations

import msgpack
import numpy as np

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder
from agent.wrist.imu_batch import (
    LEGACY_ENCODING,
    decode_counts,
    decode_payload,
    encode_counts,
    fold,
    imu_channel,
    imu_message,
    make_fit,
    observe,
    unfold,
)
from agent.wrist.timing import place


def test_counts_codec_round_trips_extremes_at_every_order():
    a = np.array([[-32768, 32767, 0], [32767, -32768, 1], [0, 0, -1], [5, -7, 32767]],
                 np.int16)
    for order in ((1, 1, 1), (2, 2, 2), (1, 2, 1), None):
        data, used = encode_counts(a, order)
        assert len(data) == a.size * 2 and used == list(order or used)
        assert decode_counts(data, 4, used).tolist() == a.tolist()
    rng = np.random.default_rng(4)
    r = rng.integers(-32768, 32768, (500, 3)).astype(np.int16)
    data, used = encode_counts(r)
    assert decode_counts(data, 500, used).tolist() == r.tolist()


def test_order_follows_the_signal_and_small_values_leave_a_zero_high_plane():
    t = np.arange(400)
    smooth = np.stack([1000 * np.sin(t / 20), 40 * t, np.zeros(400)], axis=1)
    jumpy = np.random.default_rng(1).integers(-3000, 3000, (400, 3))
    _, o_smooth = encode_counts(smooth.astype(np.int16))
    _, o_jumpy = encode_counts(jumpy.astype(np.int16))
    assert o_smooth[:2] == [2, 2] and o_jumpy == [1, 1, 1]
    data, _ = encode_counts(np.cumsum(np.tile([[1], [-1]], (200, 3)), axis=0).astype(np.int16))
    assert set(data[1200:]) == {0}  # zigzag: +-1 steps have no high byte


def test_batches_in_the_earlier_encoding_still_decode():
    a = np.array([[100, -200, 3], [101, -190, -4], [99, -180, 5]], np.int16)
    cols = a.T.copy()
    d = cols.copy()
    d[:, 1:] = cols[:, 1:] - cols[:, :-1]
    le = d.astype("<i2").reshape(-1).view(np.uint8)
    legacy = le[0::2].tobytes() + le[1::2].tobytes()
    assert decode_counts(legacy, 3, encoding=LEGACY_ENCODING).tolist() == a.tolist()
    assert fold([2.0, 2.0]) == 2.0 and fold([1, 2]) == [1, 2] and unfold(3.0, 2) == [3.0, 3.0]


def test_message_round_trip_through_msgpack():
    for profile in ("wearcap-open", "witmotion"):
        m = BandModel(BandParams(profile=profile, rate_hz=100, seed=3), 0, record=True)
        dec, fit = make_decoder(profile, rate_hz=100), make_fit(profile, 100)
        chunks = []
        for d in m.deliveries_until(2_000_000_000):
            chunks.extend(dec.feed(d.packet, d.host_ns))
        chunks.extend(dec.flush())
        for c in chunks:
            observe(fit, c)
        times = [place(fit, c) for c in chunks]
        msg = imu_message("left", chunks, fit, profile, times=times)
        assert msg.topic == imu_channel("left", profile).topic == "/wrist/left/imu"
        back = decode_payload(msgpack.unpackb(msgpack.packb(msg.payload)))
        n = sum(c.n for c in chunks)
        assert back["acc"].shape == (n, 3) and back["index"].tolist() == list(range(n))
        assert m.recorded is not None
        for k in (0, n // 2, n - 1):
            assert back["acc"][k].tolist() == m.recorded[k][0].tolist()
            assert back["gyro"][k].tolist() == m.recorded[k][1].tolist()
        assert isinstance(msg.payload["acc_scale"], float)  # one scale for the whole batch
        assert back["chunks"]["acc_scale"] == [c.acc_scale for c in chunks]
        want = [t.t0_ns for t in times]
        starts = np.cumsum([0] + [c.n for c in chunks[:-1]])
        assert back["host_ns"][starts].tolist() == want
        assert np.all(np.diff(back["host_ns"]) > 0)  # monotonic in sample order
        clock = msg.payload["clock"]
        assert clock["error_bound_ns"] == max(t.bound_ns for t in times)
        assert set(clock["bound"]) == {"fit_ns", "latency_ns", "quantisation_ns", "slew_ns"}
        assert back["chunks"]["arrival_ns"] == [c.arrival_ns for c in chunks]
        if profile == "wearcap-open":
            assert back["device_ns"][starts].tolist() == [c.device_t0_ns for c in chunks]
