"""Tap calibration against a known latency: recovered within the stated uncertainty."""

from __future__ import annotations

import numpy as np

from agent.mcu.tap import calibrate, onsets

G = 9.80665
SCALE = 16 * G / 32768


def imu(rate_hz, taps, phase, rng, span=(10**9, 40 * 10**9)):
    period = 1e9 / rate_hz
    t = span[0] + (np.arange(int((span[1] - span[0]) / period)) + phase) * period
    az = np.full(len(t), G)
    for tap in taps:
        dt = (t - tap) / 1e6
        hit = dt >= 0
        az[hit] += 60 * np.exp(-dt[hit] / 4.0) * np.minimum(dt[hit] / 2.0, 1.0)
    acc = np.stack([rng.normal(0, 0.05, len(t)), rng.normal(0, 0.05, len(t)), az], axis=1)
    return t.astype(np.int64), np.round(acc / SCALE).astype(np.int16)


def test_recovers_a_band_latency_within_its_uncertainty():
    rng = np.random.default_rng(3)
    taps = list(np.cumsum(rng.uniform(1e9, 3e9, 12)).astype(np.int64) + 2 * 10**9)
    ht, hacc = imu(1000, taps, rng.uniform(), rng)
    bt, bacc = imu(200, taps, rng.uniform(), rng)
    true_late = 3_600_000  # the band's times are 3.6 ms late: its latency was underestimated
    r = calibrate(onsets(ht, hacc, SCALE), onsets(bt + true_late, bacc, SCALE),
                  head_bound_ns=100_000, band_period_ns=5_000_000)
    assert r is not None and r.taps == 12
    assert abs(r.offset_ns - true_late) <= r.uncertainty_ns < 3_000_000
    assert abs(r.latency_ms(0.4) - 4.0) <= r.uncertainty_ns / 1e6


def test_no_taps_no_result():
    rng = np.random.default_rng(1)
    ht, hacc = imu(1000, [], 0.0, rng, span=(0, 2 * 10**9))
    assert onsets(ht, hacc, SCALE) == []
    assert calibrate([], [1], head_bound_ns=0, band_period_ns=5_000_000) is None


def test_inconsistent_taps_are_rejected_and_counted():
    rng = np.random.default_rng(5)
    head = [int(x) for x in np.arange(10) * 2_000_000_000 + 10**9]
    band = [h + 2_000_000 + int(rng.uniform(-2.5e6, 2.5e6)) for h in head]
    band[3] += 40_000_000  # the band hit something else just after a head tap
    band.append(head[-1] + 900_000_000)  # a bump of the band alone
    r = calibrate(head[:-1], band, head_bound_ns=100_000, band_period_ns=5_000_000)
    assert r is not None and r.rejected_ns == [band[3] - head[3]]
    assert r.taps == 8 and r.band_only == 2 and r.head_only == 0
    assert abs(r.offset_ns - 2_000_000) <= r.uncertainty_ns


def test_the_simulated_band_feels_a_tap_at_its_true_instant():
    """The band model's accelerometer shows a tap from the first sample taken after its
    true host instant, whatever the band's rate: sampled at 52 and 208 Hz, the onsets land
    within half a period after the truth."""
    from agent.sim.band_model import BandModel, BandParams

    for rate in (52.0, 208.0):
        m = BandModel(BandParams(profile="movesense", rate_hz=rate, seed=2), 0)
        taps = [int(x) for x in np.arange(8) * 1_700_000_123 + 2 * 10**9]
        for t in taps:
            m.tap(t)
        k = np.arange(int(17 * rate))
        acc, _ = m.signal(k)
        found = onsets(m.truth_ns(k), acc, SCALE)
        assert len(found) == len(taps)
        err = np.asarray(found) - np.asarray(taps)
        assert np.all(np.abs(err) <= m.period_host / 2 + 1)
        quiet = BandModel(BandParams(profile="movesense", rate_hz=rate, seed=2), 0)
        assert onsets(quiet.truth_ns(k), quiet.signal(k)[0], SCALE) == []
