"""IMU batch channel: msgpack round trip gives back the counts and every time."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder
from agent.wrist.imu_batch import (
    CLOCK_KEYSETS,
    FORMAT,
    LEGACY_ENCODING,
    batch_clock,
    clock_record,
    columns,
    decode_arrival,
    decode_counts,
    decode_payload,
    encode_arrival,
    encode_counts,
    fold,
    imu_channel,
    imu_message,
    make_fit,
    observe,
    pack_clock,
    predict_column,
    unfold,
    unpredict_column,
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
        clock = back["chunks"]["clock"]
        assert clock == batch_clock(msg.payload) == clock_record(fit, times)
        assert clock["error_bound_ns"] == max(t.bound_ns for t in times)
        assert set(clock["bound"]) == {"fit_ns", "latency_ns", "quantisation_ns", "slew_ns"}
        assert back["chunks"]["arrival_ns"] == [c.arrival_ns for c in chunks]
        for col in ("index", "seq", "raw_time", "device_t0_ns"):
            assert back["chunks"][col] == [getattr(c, col) for c in chunks], col
        if profile == "wearcap-open":
            assert back["device_ns"][starts].tolist() == [c.device_t0_ns for c in chunks]


# A batch as the recorder wrote it before the per-chunk columns were predicted: delta coded
# columns, arrival_ns in ns, the clock as a map (3 chunks of the open profile at 200 Hz).
DELTA_FORMAT_BATCH = bytes.fromhex(
    "de0015a462616e64a46c656674a770726f66696c65ac776561726361702d6f70656ea8656e636f64696e67"
    "b36431322d7a7a2d6931366c652d706c616e6172a16e04a3616363c418b9c2ce01af1d1b050509060f0705"
    "0c000500000000000000a96163635f6f7264657293010201a46779726fc418bf71c7ecb4c40e1703071601"
    "090500090500000000000000aa6779726f5f6f7264657293020202a76368756e6b5f6e93010102a9616363"
    "5f7363616c65cb3f739d013a92a305aa6779726f5f7363616c65cb3f51740afa84ad8aa5696e6465789300"
    "0101a373657193000101ab6c6f73745f6265666f726593000000a87261775f74696d6593ce004c5af9cd13"
    "88cd1388ac6465766963655f74305f6e7393cf000000012a435ca8ce004c4b40ce004c4b40b06465766963"
    "655f706572696f645f6e73cb415312d000000000aa6172726976616c5f6e7393ce00db8f97ce0001ebfdce"
    "00e15ae9aa686f73745f74305f6e7393ce001cd165ce004c4b40ce004c4b40ae686f73745f706572696f64"
    "5f6e73cb415312d000000000a5636c6f636b8ca9636f6e766572676564c2a964726966745f70706dcb0000"
    "000000000000aa6c6174656e63795f6e73ce0019f0a0b66c6174656e63795f756e6365727461696e74795f"
    "6e73ce0016e360a76c6174656e6379a770726f66696c65a46b696e64a774776f2d776179ac736c65775f6d"
    "61785f70706dcb40e86a0000000000a8726573746172747300ae6572726f725f626f756e645f6e73ce0139"
    "8ec1a5626f756e6484a66669745f6e73ce0122a779aa6c6174656e63795f6e73ce0016e360af7175616e74"
    "69736174696f6e5f6e73cd03e8a7736c65775f6e7300a7736c65775f6e7300a6736f75726365a76f6e652d"
    "776179")


def test_batches_with_delta_coded_columns_still_decode():
    p = msgpack.unpackb(DELTA_FORMAT_BATCH)
    d = decode_payload(p)
    assert d["host_ns"].tolist() == [1888613, 6888613, 11888613, 16888613]
    assert d["chunks"]["arrival_ns"] == [14389143, 14515092, 29283965]
    assert d["acc"][:2].tolist() == [[-989, 737, 1639], [-990, 746, 1624]]
    assert d["index"].tolist() == [0, 1, 2, 3]
    assert d["device_ns"].tolist() == [5004025000, 5009025000, 5014025000, 5019025000]
    clock = batch_clock(p)
    assert clock["error_bound_ns"] == 20549313 and clock["bound"]["fit_ns"] == 19048313
    assert clock == d["chunks"]["clock"]


def test_predicted_columns_round_trip_any_spacing():
    rng = np.random.default_rng(7)
    for _ in range(300):
        k = int(rng.integers(1, 40))
        n = rng.integers(1, 30, k).tolist()
        v = np.cumsum(rng.integers(-10**12, 10**12, k)) + int(rng.integers(-2**60, 2**60))
        vals = [int(x) for x in v]
        res, step = predict_column(vals, n)
        assert unpredict_column(res, n, step) == vals
    res, step = predict_column([100, 108, 116, 125, 133], [8, 8, 9, 8, 8])
    assert step == 1.0 and res == [100, 0, 0, 0, 0]  # a regular stream stores zeros


def test_clock_in_an_unknown_key_order_stays_a_map():
    known: dict[str, Any] = {k: 0 for k in CLOCK_KEYSETS[1] if "." not in k}
    known["bound"] = {"fit_ns": 1, "latency_ns": 2, "quantisation_ns": 3, "slew_ns": 4}
    stored, kid = pack_clock(known)
    assert kid == 1 and isinstance(stored, list)
    assert batch_clock({"clock": stored, "clock_keys": kid}) == known
    extra = {**known, "new_field": 5}
    stored, kid = pack_clock(extra)
    assert kid is None and batch_clock({"clock": stored}) == extra
    try:
        batch_clock({"clock": [1, 2], "clock_keys": 99})
    except ValueError as exc:
        assert "unknown key order" in str(exc)
    else:
        raise AssertionError("an unknown key order must not decode")


# A batch in format 2 (no ``format`` key; ``steps``, ``arrival_after_ns``, the clock a list):
# 3 chunks of the open profile at 200 Hz on a 7.5 ms link.
STEPS_FORMAT_BATCH = bytes.fromhex(
    "de0017a462616e64a46c656674a770726f66696c65ac776561726361702d6f70656ea8656e636f64696e67b3"
    "6431322d7a7a2d6931366c652d706c616e6172a16e04a3616363c418b9c2ce01121d1d1a0701011107050c00"
    "0000000000000000a96163635f6f7264657293010101a46779726fc418bf71c7e8acc0100102000201090500"
    "090500000000000000aa6779726f5f6f7264657293020202a76368756e6b5f6e93010201a96163635f736361"
    "6c65cb3f739d013a92a305aa6779726f5f7363616c65cb3f51740afa84ad8aa5696e64657893000000a37365"
    "7193000000a87261775f74696d6593ce004c5af90000ac6465766963655f74305f6e7393cf000000012a435c"
    "a80000aa686f73745f74305f6e7393ce0014811c0000a57374657073950101cd1388ce004c4b40ce004c4b40"
    "ab6c6f73745f6265666f726593000000b06465766963655f706572696f645f6e73cb415312d000000000b061"
    "72726976616c5f61667465725f6e7393ce00e2c99bce004a331bce00df3336ae686f73745f706572696f645f"
    "6e73cb415312d000000000a5636c6f636b9fc2cb0000000000000000ce0019f0a0ce0016e360a770726f6669"
    "6c65a774776f2d776179cb40e86a000000000000ce01294a74ce0112632cce0016e360cd03e80000a76f6e65"
    "2d776179aa636c6f636b5f6b65797301")


def test_batches_in_the_steps_format_still_decode():
    p = msgpack.unpackb(STEPS_FORMAT_BATCH)
    assert "format" not in p and "steps" in p
    d = decode_payload(p)
    assert d["host_ns"].tolist() == [1343772, 6343772, 11343772, 16343772]
    assert d["chunks"]["arrival_ns"] == [16206519, 16206519, 30971410]
    assert d["acc"][:2].tolist() == [[-989, 737, 1639], [-990, 746, 1624]]
    assert d["index"].tolist() == [0, 1, 2, 3]
    assert d["device_ns"].tolist() == [5004025000, 5009025000, 5014025000, 5019025000]
    assert batch_clock(p)["error_bound_ns"] == 19483252


def _arrivals_back(arrivals: list[int]) -> list[int]:
    cols = encode_arrival(arrivals)
    return decode_arrival(msgpack.unpackb(msgpack.packb({**cols, "chunk_n": [1] * len(arrivals)})))


def test_arrival_codec_is_exact_for_any_times():
    rng = np.random.default_rng(11)
    cases = [[123], [5, 5, 5], [10**13, 10**13 + 7_500_000], [3, 1, 2, 0],
             rng.integers(0, 2**62, 50).tolist(),  # no grid at all
             np.sort(rng.integers(10**12, 10**12 + 10**9, 300)).tolist(),
             (np.arange(200) * 30_000_000 + rng.integers(-40_000_000, 40_000_000, 200)).tolist()]
    for arrivals in cases:
        assert _arrivals_back(arrivals) == arrivals
    us = (np.arange(100) * 7_500_000 + 10**12 + rng.integers(0, 900, 100) * 1000).tolist()
    assert encode_arrival(us)["arrival_unit_ns"] == 1000 and _arrivals_back(us) == us
    assert encode_arrival([*us[:-1], us[-1] + 1])["arrival_unit_ns"] == 1  # one ns: ns


def test_arrivals_on_a_connection_grid_store_their_jitter_only():
    """A 7.5 ms link whose controller runs 60 ppm slow of the host, a missed event, two
    notifications in one event: the events are found, and a residual is the jitter."""
    rng = np.random.default_rng(5)
    events = np.concatenate([np.arange(0, 120), np.arange(121, 200)])
    events = np.insert(events, 50, events[49])  # two in event 49
    arrivals = (2 * 10**12 + 1_234_567 + np.rint(events * 7_500_000 * (1 + 60e-6))
                + rng.integers(0, 100, events.size)).astype(np.int64)
    arrivals[50] += 400_000  # the second packet of its event, one air slot later
    cols = encode_arrival(arrivals.tolist())
    assert cols["arrival_unit_ns"] == 1
    assert np.cumsum(cols["arrival_events"]).tolist() == events.tolist()
    assert abs(cols["arrival_interval"] - 7_500_000 * (1 + 60e-6)) < 1.0
    width = len(cols["arrival_resid"]) // events.size
    assert width == 3  # the 400 us of the shared event; the rest fit one byte
    z = np.frombuffer(cols["arrival_resid"], np.uint8).reshape(width, -1)
    assert np.count_nonzero(z[1:]) <= 2  # high planes: zero but the shared event's
    assert _arrivals_back(arrivals.tolist()) == arrivals.tolist()


def test_batches_say_their_format_and_refuse_a_newer_one():
    m = BandModel(BandParams(profile="wearcap-open", rate_hz=200, seed=3), 0)
    dec, fit = make_decoder("wearcap-open", rate_hz=200), make_fit("wearcap-open", 200)
    chunks = [c for d in m.deliveries_until(500_000_000) for c in dec.feed(d.packet, d.host_ns)]
    for c in chunks:
        observe(fit, c)
    p = msgpack.unpackb(msgpack.packb(imu_message("left", chunks, fit, "wearcap-open").payload))
    assert p["format"] == FORMAT == 3 and "arrival_after_ns" not in p
    assert columns(p)["arrival_ns"] == [c.arrival_ns for c in chunks]
    try:
        columns({**p, "format": FORMAT + 1})
    except ValueError as e:
        assert "newer" in str(e)
    else:
        raise AssertionError("a newer format was read")
