"""A head IMU stream placed ahead of its fit (written on late arrival times before the fit was
usable) catches up at a bounded rate, never stepping back, its bound covering the error."""

from __future__ import annotations

import numpy as np

from agent.mcu import protocol as p
from agent.mcu.source import McuSource

N = 20  # samples a frame, 1 kHz


def frame(k: int) -> p.ImuBatch:
    return p.ImuBatch(seq=k, index=k * N, tick0=k * N * 1000,
                      deltas=tuple(range(1000, N * 1000, 1000)),
                      samples=np.zeros((N, 6), "<i2").tobytes())


def test_a_stream_ahead_of_its_fit_meets_it_and_never_steps_back():
    # never opened: fed as drain() would, one batch for the whole run
    src = McuSource("/dev/null", hold_samples=100, batch_seconds=1e6)
    late = 2_000_000_000  # a starved start: every read stamped 2 s after the sample
    out: list = []
    k = 0
    for k in range(100):  # 2 s of frames with no usable fit: written on their arrival
        src._on_imu(frame(k), k * N * 1_000_000 + late, out)
        src._map_held(out)
    for i in range(6):  # the fit: device ns == host ns, exchanges of 100 us round trip
        t = (100 + i) * N * 1_000_000
        src.fit.add(t - 50_000, t, t + 50_000)
    assert src._usable
    placed: list[tuple[int, float, int, int]] = []  # (host_t0, period, bound, true t0)
    for k in range(100, 2200):  # 42 s more
        src._on_imu(frame(k), k * N * 1_000_000 + 1_000_000, out)
        c = src._batch[-1]
        placed.append((c.host_t0_ns, c.host_period_ns, c.bound_ns, k * N * 1_000_000))
        src._batch.clear()
    ends = [h + per * (N - 1) for h, per, _, _ in placed]
    starts = [h for h, *_ in placed]
    # strictly after, and a sample period on (at most 5 % less): never two samples at once
    assert all(s - e >= 0.95e6 - 1 for s, e in zip(starts[1:], ends[:-1], strict=True))
    err = [h - t for h, _, _, t in placed]
    assert err[0] > 1_900_000_000  # it started 2 s ahead ...
    assert all(abs(e) <= b for e, (_, _, b, _) in zip(err, placed, strict=True))  # bound holds
    assert abs(err[-1]) < 1_000_000  # ... and met the fit within 42 s (2 s / 5 % = 40 s)
    assert min(per for _, per, _, _ in placed) >= 0.95e6 - 1  # never faster than 5 %
    assert src.stats["slewed"] > 0
