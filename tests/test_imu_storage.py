"""Stored bytes per wrist sample: two simulated 200 Hz open bands (links of 7.5 to 50 ms,
a band clock drifting 50 ppm), batched by the band stream's rule (one batch per chunk) and
written through the segment writer with a chunk closed every second, as a recording does.
The budget is 8 B per 6-axis sample of zstd chunk bytes; the figure for real recordings is
bench/bench_wrist_recording.py."""

from __future__ import annotations

import io

import msgpack
from mcap.records import Chunk
from mcap.stream_reader import StreamReader

from agent.record.segment import SegmentHeader, SegmentWriter
from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder
from agent.wrist.imu_batch import decode_payload, imu_channel, imu_message, make_fit, observe

BUDGET = 8.0
T0 = 10_000_000_000  # host time the bands start at


def record(seconds: int, batch_per_chunk: int = 1, interval_ms: tuple[float, float] = (7.5, 50),
           stamp_ns: int = 1) -> tuple[bytes, int, list[bytes]]:
    """``stamp_ns``: arrivals rounded up to it, as the BLE link stamps them (1000)."""
    bands = []
    for i, name in enumerate(("left", "right")):
        model = BandModel(BandParams(profile="wearcap-open", rate_hz=200, seed=20 + i,
                                     interval_ms=interval_ms), T0, record=True)
        bands.append((name, model, make_decoder("wearcap-open", rate_hz=200),
                      make_fit("wearcap-open", 200)))
    buf = io.BytesIO()
    w = SegmentWriter(buf, SegmentHeader("sim-0001", 0, -1, "0" * 64, "0" * 64, None),
                      channels=[imu_channel(b[0], "wearcap-open") for b in bands], video=False,
                      sync=lambda: None)
    samples, payloads = 0, []
    step = 1_000_000_000 // batch_per_chunk
    for t in range(T0 + step, T0 + seconds * 1_000_000_000 + 1, step):
        for name, model, dec, fit in bands:
            chunks = [c for d in model.deliveries_until(t)
                      for c in dec.feed(d.packet, -(-d.host_ns // stamp_ns) * stamp_ns)]
            for c in chunks:
                observe(fit, c)
            if chunks:
                m = imu_message(name, chunks, fit, "wearcap-open")
                w.write_message(m)
                payloads.append(msgpack.packb(m.payload))
                samples += sum(c.n for c in chunks)
        if t % 1_000_000_000 == 0:
            w.checkpoint()
    w.close()
    return buf.getvalue(), samples, payloads


def chunk_bytes(data: bytes) -> int:
    return sum(len(r.data) for r in StreamReader(io.BytesIO(data), emit_chunks=True).records
               if isinstance(r, Chunk))


def test_a_batch_per_chunk_stays_within_8_bytes_per_sample():
    data, n, payloads = record(20)
    assert n > 7000  # two bands, 20 s, minus the first packets
    per_sample = chunk_bytes(data) / n
    assert per_sample <= BUDGET, f"{per_sample:.2f} B per stored sample"
    # and every sample comes back
    got = sum(len(decode_payload(msgpack.unpackb(p))["host_ns"]) for p in payloads)
    assert got == n


def test_fast_links_stay_within_8_bytes_per_sample():
    """Both bands on a 7.5 ms connection interval: 1-2 samples a notification, so each
    sample carries most of an arrival time (stamped in whole us, as the link does)."""
    data, n, payloads = record(12, interval_ms=(7.5, 7.5), stamp_ns=1000)
    per_sample = chunk_bytes(data) / n
    assert per_sample <= BUDGET, f"{per_sample:.2f} B per stored sample"
    assert {msgpack.unpackb(p)["arrival_unit_ns"] for p in payloads} == {1000}


def test_short_batches_cost_more_than_a_batch_per_chunk():
    """What the default buys: ten batches per chunk store more per sample than one."""
    one, n1, _ = record(6)
    ten, n10, _ = record(6, batch_per_chunk=10)
    assert chunk_bytes(ten) / n10 > chunk_bytes(one) / n1


def test_head_imu_batches_keep_each_samples_tick_to_the_microsecond():
    """The head MCU's samples are stored on a per-chunk grid plus each sample's residual in
    us (``tick_resid_us``, int8): the true ticks come back, clipped at +-127 us."""
    import numpy as np

    from agent.mcu.records import HeadChunk
    from agent.mcu.records import imu_message as head_message

    rng = np.random.default_rng(3)
    chunks, want = [], []
    for k in range(50):
        t0 = T0 + k * 20_000_000
        dev = [t0 + i * 1_000_000 + int(rng.integers(0, 4)) * 1000 for i in range(20)]
        if k == 7:
            dev[5] += 400_000  # a late tick beyond int8 us: clipped, not wrapped
        want.append(dev)
        chunks.append(HeadChunk(k * 20, k, 0, 0, dev, np.zeros((20, 6), np.int16), t0, t0,
                                1e6, 10))
    p = msgpack.unpackb(msgpack.packb(head_message(chunks, 1.0, 1.0, {}).payload))
    d = decode_payload(p)
    resid = np.frombuffer(p["tick_resid_us"], dtype=np.int8).astype(np.int64)
    got = d["device_ns"] + resid * 1000
    err = got - np.concatenate(want)
    assert np.abs(np.delete(err, 7 * 20 + 5)).max() < 1000
    assert resid[7 * 20 + 5] == 127
