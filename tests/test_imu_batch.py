"""IMU batch channel: msgpack round trip gives back the counts and every time."""

from __future__ import annotations

import msgpack
import numpy as np

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder
from agent.wrist.imu_batch import (
    decode_counts,
    decode_payload,
    encode_counts,
    host_times,
    imu_channel,
    imu_message,
    make_fit,
    observe,
)


def test_counts_codec_round_trips_extremes():
    a = np.array([[-32768, 32767, 0], [32767, -32768, 1], [0, 0, -1]], np.int16)
    assert decode_counts(encode_counts(a), 3).tolist() == a.tolist()


def test_message_round_trip_through_msgpack():
    for profile in ("wearcap-open", "witmotion"):
        m = BandModel(BandParams(profile=profile, rate_hz=100, seed=3), 0, record=True)
        dec, fit = make_decoder(profile, rate_hz=100), make_fit(profile, 100)
        chunks = []
        for d in m.deliveries_until(2_000_000_000):
            chunks.extend(dec.feed(d.packet, d.host_ns))
        chunks.extend(dec.flush())  # WitMotion holds 2 s back to find lost notifications
        for c in chunks:
            observe(fit, c)
        msg = imu_message("left", chunks, fit, profile)
        assert msg.topic == imu_channel("left", profile).topic == "/wrist/left/imu"
        back = decode_payload(msgpack.unpackb(msgpack.packb(msg.payload)))
        n = sum(c.n for c in chunks)
        assert back["acc"].shape == (n, 3) and back["index"].tolist() == list(range(n))
        assert m.recorded is not None
        for k in (0, n // 2, n - 1):
            assert back["acc"][k].tolist() == m.recorded[k][0].tolist()
            assert back["gyro"][k].tolist() == m.recorded[k][1].tolist()
        want = [host_times(fit, c)[0] for c in chunks]
        starts = np.cumsum([0] + [c.n for c in chunks[:-1]])
        assert back["host_ns"][starts].tolist() == want
        assert back["chunks"]["arrival_ns"] == [c.arrival_ns for c in chunks]
        if profile == "wearcap-open":
            assert back["device_ns"][starts].tolist() == [c.device_t0_ns for c in chunks]
