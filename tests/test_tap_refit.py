"""The band's clock refitted over a whole recording (agent.mcu.tap_refit): the times it gives
are steadier than the young fit's stored ones, off the truth by the latency error only, and
its bound covers them. Synthetic band (sans IO): its own clock 50 ppm fast, packets waiting
for a BLE connection event, then a latency it never tells."""

from __future__ import annotations

import msgpack
import numpy as np

from agent.mcu import tap
from agent.mcu.tap_refit import hindsight
from agent.wrist.decode import ImuChunk
from agent.wrist.imu_batch import imu_message
from agent.wrist.timing import make_clock, observe, profile_latency

RATE = 208.0
SPP = 8  # samples a packet
LATENCY = 3_000_000  # the band's true latency; the mapper assumes the profile's 1.7 ms


def recording(seconds: float, seed: int = 1) -> tuple[list[dict], np.ndarray, int]:
    """Stored batches of a movesense band (1 s each), each sample's true host time, and the
    latency a converged mapping needs: the lowest delay of any packet (its latency and the
    least wait and jitter it came with)."""
    rng = np.random.default_rng(seed)
    period = 1e9 / RATE
    interval = 15_000_000  # connection events
    n = int(seconds * RATE) // SPP * SPP
    true = 5e9 + np.arange(n) * period
    dev = 7e9 + (true - 5e9) * (1 + 50e-6)
    clock = make_clock("movesense", RATE)
    payloads, batch, floor = [], [], 10**12
    for k in range(0, n, SPP):
        ready = true[k + SPP - 1]
        event = (np.floor(ready / interval) + 1) * interval  # waits for the next event
        arrival = int(event + LATENCY + rng.exponential(300_000))
        floor = min(floor, arrival - int(ready))
        c = ImuChunk(arrival, None, int(dev[k]), period * (1 + 50e-6),
                     np.zeros((SPP, 3), np.int16), 1.0, np.zeros((SPP, 3), np.int16), 1.0,
                     index=k)
        observe(clock, c)
        batch.append(c)
        if batch[-1].arrival_ns - batch[0].arrival_ns >= 1e9:
            m = imu_message("left", batch, clock, "movesense")
            payloads.append(msgpack.unpackb(msgpack.packb(m.payload)))
            batch = []
    return payloads, true[: sum(p["n"] for p in payloads)], floor


def test_the_refit_is_off_by_the_latency_only_and_its_bound_covers_it():
    payloads, true, floor = recording(120)
    stored = tap.stream(payloads)
    refit = hindsight(payloads, "movesense", RATE)
    assumed = profile_latency("movesense").ns
    assert stored.latency_ns == refit.latency_ns == assumed
    err_stored = stored.host_ns - true
    err = refit.host_ns - true
    # the refit: one line for the whole recording, late by what the latency setting lacks
    late = floor - assumed
    assert LATENCY < floor < LATENCY + 1_000_000
    assert np.all(np.abs(err - late) <= refit.sample_bound_ns)
    assert np.ptp(err) < 200_000
    # the stored times were placed by a young fit as it went: they wandered further
    assert np.ptp(err_stored[: 30 * int(RATE)]) > 3 * np.ptp(err)
    # the refit's bound is the fit's alone (no latency part), tightest in the middle
    mid = refit.sample_bound_ns[len(true) // 2]
    assert 0 < mid < 2_000_000 and mid <= refit.sample_bound_ns.max()


def test_a_tap_offset_through_the_refit_recovers_the_latency():
    payloads, true, floor = recording(90, seed=4)
    refit = hindsight(payloads, "movesense", RATE)
    # a tap is an instant on both IMUs: the band's sample nearest each truth is its onset
    taps = true[::int(5 * RATE)][2:-2]
    idx = np.searchsorted(refit.host_ns, taps)
    band_on = [int(refit.host_ns[i]) for i in idx]
    head_on = [int(true[np.searchsorted(true, t)]) for t in taps]
    r = tap.calibrate(head_on, band_on, head_bound_ns=0, band_period_ns=int(1e9 / RATE),
                      band_bound_ns=tap.bound_at(refit, band_on))
    assert r is not None and r.taps == len(taps)
    assumed = profile_latency("movesense").ns
    assert abs(assumed + r.offset_ns - floor) <= r.uncertainty_ns
    assert r.band_bound_ns > 0



def test_the_true_latency_leaves_out_what_a_band_sends_at_once_at_its_stop():
    """At a stop the simulated band sends what it holds at once, outside any connection
    event, which no BLE link can: such a chunk, the recording's last, once came 3.2 ms under
    every other and set the truth's floor alone. The truth leaves out the last 100 ms."""
    from agent.sim.tap_truth import converged_latency_ns

    payloads, _true, floor = recording(30, seed=6)
    period = 1e9 / RATE
    k = sum(p["n"] for p in payloads)
    t = 5e9 + (k + np.arange(SPP)) * period
    stop = ImuChunk(int(t[-1]) + LATENCY, None, int(7e9 + (t[0] - 5e9) * (1 + 50e-6)),
                    period * (1 + 50e-6), np.zeros((SPP, 3), np.int16), 1.0,
                    np.zeros((SPP, 3), np.int16), 1.0, index=k)
    clock = make_clock("movesense", RATE)
    observe(clock, stop)
    last = msgpack.unpackb(msgpack.packb(imu_message("left", [stop], clock, "movesense").payload))
    truth = {"start_ns": 5e9, "phase_ns": 0.0, "period_ns": period, "first_sample": 0,
             "clock": {"offset_ns": 7e9, "drift_ppm": 50.0, "wander_amp_ns": 0.0,
                       "wander_period_s": 600.0}}
    assert floor > LATENCY + 100_000  # every packet waited for an event
    assert abs(converged_latency_ns([*payloads, last], truth) - floor) < 2_000
    assert abs(converged_latency_ns([*payloads, last], truth, stop_tail_ns=0) - LATENCY) < 2_000
