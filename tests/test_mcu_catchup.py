"""A head IMU stream placed ahead of its fit (written on late arrival times before the fit was
usable) catches up at a bounded rate, never stepping back, its bound covering the error; a
backlog read at once after a starved start is spread back over its ticks, not piled up."""

from __future__ import annotations

import itertools

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
    # strictly after, and at least half a sample period on: never two samples at once
    assert all(s - e >= 0.5e6 - 1 for s, e in zip(starts[1:], ends[:-1], strict=True))
    err = [h - t for h, _, _, t in placed]
    assert err[0] > 1_900_000_000  # it started 2 s ahead ...
    assert all(abs(e) <= b for e, (_, _, b, _) in zip(err, placed, strict=True))  # bound holds
    # ... and met the fit after 4-8 s of samples (2 s at 50 %, then shrinking as it nears),
    # not 40 s (at 5 %)
    met = next(i for i, e in enumerate(err) if abs(e) < 1_000_000)
    assert 4e9 <= met * N * 1e6 <= 8e9
    assert all(abs(e) < 1_000_000 for e in err[met:])
    assert min(per for _, per, _, _ in placed) >= 0.5e6 - 1  # never faster than 50 %
    assert src.stats["slewed"] > 0


def test_a_backlog_read_at_once_is_placed_by_its_ticks_not_piled_up_at_its_arrival():
    """The process gets no CPU for 2 s at a time: each read brings 2 s of frames at once,
    stamped at the read. Before the fit is usable they are timed by the lowest (arrival -
    device time) around them, which the freshest frame of each read gives; at their arrival
    times, held monotonic, each backlog would push every later sample 2 s further out."""
    src = McuSource("/dev/null", hold_samples=100, batch_seconds=1e6)
    out: list = []
    placed: list[tuple[int, int]] = []  # (host t0, true t0)
    for read in range(10):  # 20 s of starved start-up
        ks = range(read * 100, (read + 1) * 100)
        arrival = (read + 1) * 100 * N * 1_000_000 + 500_000  # all read at once, 0.5 ms late
        for k in ks:
            src._on_imu(frame(k), arrival, out)
        src._map_held(out)
        for c in src._batch:
            placed.append((c.host_t0_ns, c.index * 1_000_000))
        src._batch.clear()
    err = np.array([h - t for h, t in placed])
    assert len(placed) == 1000 and not src._usable
    assert err.min() >= 0  # a sample is never placed before it was taken ...
    assert err.max() <= 20_000_000  # ... nor later than a frame and the read's lateness
    starts = [h for h, _ in placed]
    assert all(b - a >= 0.95 * N * 1e6 for a, b in itertools.pairwise(starts))
