"""Tap calibration against a known latency: recovered within the stated uncertainty."""

from __future__ import annotations

import numpy as np

from agent.mcu.tap import calibrate, onset_spans, onsets

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


def step_imu(t, taps):
    """Counts of an IMU sampled at ``t`` that a tap at each of ``taps`` hits at once (a step
    up, then damped)."""
    az = np.full(len(t), G)
    for tap in taps:
        dt = (t - tap) / 1e6
        az[dt >= 0] += 60 * np.exp(-dt[dt >= 0] / 4.0)
    acc = np.stack([np.zeros(len(t)), np.zeros(len(t)), az], axis=1)
    return np.round(acc / SCALE).astype(np.int16)


def test_taps_in_a_rhythm_locked_to_both_rates_are_still_covered():
    """Taps exactly 1 s apart, a 416 Hz band and the 1 kHz head: every tap lands at the same
    sampling phase of both IMUs, here just after a band sample and just before a head one,
    so every tap's offset is off by the same +1.7 ms (half a period of each) and their
    spread says nothing of it. The uncertainty must still hold it: taps a sampling rhythm
    locks cannot be averaged (a uniform phase over taps was assumed before, and its
    +-0.9 ms missed)."""
    band_p = 1e9 / 416
    bt = (10**9 + np.arange(30 * 416) * band_p).astype(np.int64)
    taps = [int(bt[416 * 5] + 1_000 + i * 10**9) for i in range(8)]  # 1 us after a sample
    ht = (taps[0] + 1_000 - 4 * 10**9 + np.arange(30_000) * 10**6).astype(np.int64)
    late = 2_000_000
    r = calibrate(onset_spans(ht, step_imu(ht, taps), SCALE),
                  onset_spans(bt + late, step_imu(bt, taps), SCALE),
                  head_bound_ns=100_000, band_period_ns=round(band_p))
    assert r is not None and r.taps == 8 and not r.rejected_ns
    assert np.ptp(r.offsets_ns) < 10_000  # all the same: the spread shows nothing
    assert abs(np.mean(r.offsets_ns) - late - 1_700_000) < 20_000  # each 1.7 ms off
    assert abs(r.offset_ns - late) <= r.uncertainty_ns
    # the taps' spans all coincide: only half a period of each IMU is known
    assert r.sampling_ns >= 1_690_000


def test_taps_at_random_phases_narrow_the_range_below_half_a_period():
    rng = np.random.default_rng(8)
    taps = list(np.cumsum(rng.uniform(1e9, 3e9, 12)).astype(np.int64) + 2 * 10**9)
    band_p = 1e9 / 416
    bt = (10**9 + (np.arange(40 * 416) + rng.uniform()) * band_p).astype(np.int64)
    ht = (10**9 + (np.arange(40_000) + rng.uniform()) * 1e6).astype(np.int64)
    r = calibrate(onset_spans(ht, step_imu(ht, taps), SCALE),
                  onset_spans(bt + 3_000_000, step_imu(bt, taps), SCALE),
                  head_bound_ns=100_000, band_period_ns=round(band_p))
    assert r is not None and r.taps == 12
    assert abs(r.offset_ns - 3_000_000) <= r.uncertainty_ns
    assert r.sampling_ns < (band_p + 1e6) / 4
    assert r.uncertainty_ns == r.sampling_ns + 100_000 or r.sampling_ns == 0


def test_a_tap_whose_span_misses_the_others_is_rejected():
    from agent.mcu.tap import intersect

    (lo, hi), out = intersect([(0, 10), (2, 12), (5, 15), (40, 50)])
    assert (lo, hi) == (5, 10) and out == [3]
    (lo, hi), out = intersect([(0, 10), (20, 30)])  # no majority: as wide as both
    assert (lo, hi) == (0, 30) and out == []
