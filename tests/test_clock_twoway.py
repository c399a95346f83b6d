"""Two-way (TICSync-style) clock fit against the simulated MCU clock and link ground truth:
error and bound coverage on UART and USB CDC, asymmetric links, restarts, the physical clamp.
Correctness against ground truth only; nothing here is timed."""

from __future__ import annotations

import numpy as np
import pytest

from agent.clock.twoway import TwoWayFit
from agent.sim.mcu_link import LinkModel, McuClock, exchange


def run(link: LinkModel, clock: McuClock, seconds: float, *, ping_hz: float = 10.0,
        fit: TwoWayFit | None = None, start: int = 10**9):
    fit = fit or TwoWayFit()
    errs, bounds, conv = [], [], []
    step = int(1e9 / ping_hz)
    for k in range(int(seconds * ping_hz)):
        t0 = start + k * step
        fit.add(*exchange(clock, link, t0))
        # samples taken between this ping and the next: map them, compare with the truth
        for frac in (0.1, 0.5, 0.9):
            true_host = t0 + int(frac * step)
            d = clock.device_ns(true_host)
            truth = clock.host_ns(d)
            errs.append(fit.map(d) - truth)
            bounds.append(fit.bound_ns(d))
            conv.append(fit.converged)
    return fit, np.array(errs), np.array(bounds), np.array(conv)


@pytest.mark.parametrize("drift", [40.0, -40.0, 0.0])
def test_uart_fit_p99_under_100us_and_bound_covers(drift):
    clock = McuClock(drift_ppm=drift, origin_ns=10**9)
    fit, e, b, c = run(LinkModel("uart", seed=3), clock, 120)
    assert fit.converged and c.sum() > 0.8 * len(c)
    assert np.percentile(np.abs(e[c]), 99) < 100_000
    # the truth is -drift seen from the host (the device runs fast: host slope < 1)
    assert abs(fit.drift_ppm + drift) < 2.0
    assert np.mean(np.abs(e) <= b) >= 0.99  # coverage, before convergence too
    snap = fit.snapshot()
    assert snap["converged"] and snap["observations"] and snap["best_rtt_ns"] > 0


def test_usb_cdc_floor_is_half_a_frame_and_bound_still_covers():
    clock = McuClock(drift_ppm=-25.0, origin_ns=10**9)
    fit, e, b, c = run(LinkModel("usb-cdc", seed=4), clock, 120)
    assert fit.best_rtt_ns is not None and fit.best_rtt_ns >= 1_000_000  # 1 ms framing
    assert np.mean(np.abs(e) <= b) >= 0.99
    assert np.percentile(b[c], 50) >= 400_000  # the bound does not claim better than the link
    assert np.percentile(np.abs(e[c]), 99) < 1_500_000


def test_asymmetric_latency_biases_the_midpoint_but_the_bound_covers():
    """Forward 20 us, return 900 us: the naive midpoint is ~440 us late; the band fit must
    either find better or say so in its bound."""
    clock = McuClock(drift_ppm=10.0, origin_ns=10**9)
    link = LinkModel("uart", seed=5, host_tx_us=5.0, host_rx_us=900.0, spike_p=0.0)
    _fit, e, b, c = run(link, clock, 60)
    naive = []
    for k in range(200):
        t0, d, t1 = exchange(clock, link, 10**9 + 61 * 10**9 + k * 10**8)
        naive.append((t0 + t1) / 2 - clock.host_ns(d))
    assert np.median(naive) > 200_000  # the bias is real
    assert np.mean(np.abs(e) <= b) >= 0.99
    assert np.all(np.abs(e[c]) <= b[c])


def test_constant_asymmetry_gives_a_bound_of_half_the_round_trip_at_least():
    clock = McuClock(drift_ppm=0.0, wander_ppm=0.0, origin_ns=0, offset_ns=0)
    fit = TwoWayFit()
    for k in range(300):  # forward 100 us, back 500 us, exactly, every time
        t0 = 10**9 + k * 10**8
        fit.add(t0, clock.device_ns(t0 + 100_000), t0 + 600_000)
    d = clock.device_ns(10**9 + 299 * 10**8)
    err = fit.map(d) - clock.host_ns(d)
    assert abs(err) <= fit.bound_ns(d)
    assert fit.bound_ns(d) >= 300_000  # half the round trip: the asymmetry is unobservable


def test_unconverged_bound_grows_with_distance_from_the_exchange():
    fit = TwoWayFit()
    fit.add(1_000_000, 5_000_000, 1_200_000)
    near, far = fit.bound_ns(5_000_000), fit.bound_ns(5_000_000 + 10**9)
    assert not fit.converged
    assert near >= 100_000 and far >= near + 150_000  # 200 ppm of a second


def test_device_reboot_restarts_the_fit():
    clock = McuClock(drift_ppm=20.0, origin_ns=10**9)
    link = LinkModel("uart", seed=6)
    fit, *_ = run(link, clock, 30)
    assert fit.converged
    rebooted = McuClock(drift_ppm=20.0, offset_ns=0, origin_ns=40 * 10**9)
    fit.add(*exchange(rebooted, link, 40 * 10**9 + 10**6))
    assert fit.restarts == 1 and not fit.converged
    d = rebooted.device_ns(40 * 10**9 + 5 * 10**6)
    assert abs(fit.map(d) - rebooted.host_ns(d)) <= fit.bound_ns(d)


def test_impossible_exchanges_are_refused_and_slope_is_clamped():
    fit = TwoWayFit(max_drift_ppm=100.0)
    assert not fit.add(2_000, 0, 1_000)  # answer before the request
    assert not fit.add(0, 0, 10**9)  # a one-second round trip tells nothing
    assert fit.rejected == 2
    for k in range(40):  # a "device" running 1 % fast: not a crystal
        t = k * 10**9
        fit.add(t, int(t * 1.01), t + 10_000)
    assert abs(fit.drift_ppm) <= 100.0 + 1e-6
    assert fit.clamped > 0


def _bound_by_formula(fit: TwoWayFit, device_ns: int | None) -> int:
    """bound_ns as the module doc writes it: min over the anchors, every anchor summed."""
    assert fit._x0 is not None
    x = fit._last_x if device_ns is None else int(device_ns) - fit._x0
    return int(min(c + fit.slope_unc * abs(x - xj) for xj, c in fit._anchors)
               + fit.tick_ns) + 1


@pytest.mark.parametrize(("kind", "seed"), [("uart", 1), ("usb-cdc", 2), ("uart", 3)])
def test_bound_is_the_formula_exactly_at_every_step(kind, seed):
    """bound_ns skips anchors that cannot be the minimum (sorted once per refit): the same
    integers as summing every anchor, at the latest exchange and before, between and after
    the exchanges (up to 5 min away, where the nearest anchor rather than the tightest gives
    the minimum), from the first exchange through convergence and a device reboot."""
    rng = np.random.default_rng(seed)
    link = LinkModel(kind, seed=seed)
    clock = McuClock(drift_ppm=float(rng.uniform(-60, 60)), origin_ns=10**9)
    fit = TwoWayFit()
    not_tightest = checked = 0
    for k in range(1200):
        t0 = 10**9 + k * 100_000_000
        if k == 700:  # the device rebooted: its clock starts again from near zero
            clock = McuClock(drift_ppm=clock.drift_ppm, offset_ns=0, origin_ns=t0)
        fit.add(*exchange(clock, link, t0))
        d = clock.device_ns(t0)
        for q in (None, d, d + 1, fit._x0,
                  *(d + int(rng.integers(-span, span)) for span in (10**8, 10**10, 3 * 10**11))):
            assert fit.bound_ns(q) == _bound_by_formula(fit, q)
            checked += 1
        x = d - fit._x0 + 3 * 10**11
        terms = [c + fit.slope_unc * abs(x - xj) for xj, c in fit._by_c]
        not_tightest += terms.index(min(terms)) > 2
    assert fit.restarts == 1 and fit.converged and checked == 8400
    assert not_tightest > 0  # the pruning is exercised past its first anchors
