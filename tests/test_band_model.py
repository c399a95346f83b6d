"""The band model is deterministic, keeps ground truth and batches by connection event."""

from __future__ import annotations

import numpy as np

from agent.sim.band_model import BandModel, BandParams


def test_deterministic_and_batched_by_event():
    a = BandModel(BandParams(seed=7), 0).deliveries_until(3 * 10**9)
    b = BandModel(BandParams(seed=7), 0).deliveries_until(3 * 10**9)
    assert [(d.host_ns, d.packet) for d in a] == [(d.host_ns, d.packet) for d in b]
    m = BandModel(BandParams(seed=7, retransmit_prob=0.0, jitter_ns=0), 0)
    ds = m.deliveries_until(3 * 10**9)
    gaps = np.diff([d.host_ns for d in ds])
    assert gaps.max() >= m.interval_ns - 2 * 400_000  # arrivals come in event bursts
    assert 7_500_000 <= m.interval_ns <= 50_000_000 and m.interval_ns % 1_250_000 == 0


def test_truth_is_on_the_drifting_band_clock():
    m = BandModel(BandParams(drift_ppm=50, wander_ppm=0, seed=1), 0)
    k = np.array([0, 200_000])
    dh = np.diff(m.truth_ns(k))[0]
    dd = np.diff(m.device_ns(k))[0]
    assert abs(dd / dh - 1 - 50e-6) < 1e-9
    # nothing arrives before its last sample was taken
    for d in m.deliveries_until(5 * 10**9):
        assert d.host_ns >= m.truth_ns(d.first_sample + d.n - 1)


def test_signal_is_not_trivially_compressible():
    m = BandModel(BandParams(seed=1), 0)
    acc, _gyro = m.signal(np.arange(2000))
    assert np.std(np.diff(acc[:, 0].astype(float))) > 3 and np.ptp(acc[:, 2]) > 100
