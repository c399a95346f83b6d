"""The open profile's time requests are aimed just before connection events: with the link's
own plan (agent.wrist.time_requests) and the PingAimer the band stream feeds, the requests
reach the simulated band just before an event instead of anywhere in the interval, and the
two-way fit's error and bound are no worse than with the fixed cadence
(agent/sim/band_model.py: writes wait for the next connection event; write and notification
latencies differ and are never told to the agent)."""

from __future__ import annotations

import random
import struct
from dataclasses import replace

import numpy as np
import pytest

from agent.config import BleSection
from agent.sim.band_model import BandModel, BandParams
from agent.wrist.ble import LinkEvent
from agent.wrist.decode.open_profile import Info
from agent.wrist.time_requests import FAST_NS, FAST_REQUESTS, SLOW_NS, SPREAD_NS, TimeRequests
from tests.test_ble_source import Clock, Source
from tests.test_time_exchange import BAND, errors

MS = 1_000_000
T0 = 1_000_000_000
INTERVAL_MS = 30.0


def test_the_cadence_alone_is_unchanged_without_an_aimer():
    plan = TimeRequests(spread_ns=0)
    t, sends = 0, [0]
    for _ in range(14):
        t = plan.after(t)
        sends.append(t)
    gaps = np.diff(sends)
    assert list(gaps[:FAST_REQUESTS - 1]) == [FAST_NS] * (FAST_REQUESTS - 1)
    assert set(gaps[FAST_REQUESTS - 1:]) == {SLOW_NS}
    assert plan.aimed == 0


def test_unaimed_requests_are_spread_over_the_interval():
    rng = random.Random(2)
    phases = [TimeRequests(rng=rng).after(0) - FAST_NS for _ in range(200)]
    assert min(phases) >= 0 and max(phases) <= SPREAD_NS
    assert np.std(phases) > SPREAD_NS / 4  # not a handful of phases of a 1.25 ms grid


def test_an_aim_outside_the_window_falls_back_to_the_due_time():
    picks = iter([None, 5, 10**15, 700 * MS])
    plan = TimeRequests(aim=lambda due, u: next(picks), rng=random.Random(1), spread_ns=0)
    assert [plan.after(0) for _ in range(4)] == [FAST_NS, FAST_NS, FAST_NS, 700 * MS]
    assert plan.aimed == 1


def run(aimed: bool, seconds: float = 75.0) -> dict[str, float]:
    """Record one open-profile band through WristSource (its band stream feeds the aimer it
    hands the link), the link's plan choosing when each request is sent; the exchanges reach
    the stream as the link's ``time`` events."""
    p = BandParams(profile="wearcap-open", seed=5, latency_ns=2 * MS, jitter_ns=300_000.0,
                   interval_ms=(INTERVAL_MS, INTERVAL_MS), retransmit_prob=0.05,
                   write_latency_ns=1 * MS, write_jitter_ns=200_000.0, wander_ppm=0.0)
    clock = Clock()
    clock.now = T0
    src = Source(BAND, replace(BleSection(), batch_seconds=0.5), clock=clock)
    src.start()
    src.segment_metadata()
    src._on_event(LinkEvent(clock.now, "info", data=Info.default(200).encode()))  # version 2
    src.fake._fake_streaming(clock.now)
    aimer = src.fake.aimer
    assert aimer is src.stream.aimer  # what the link is given is what the stream feeds
    model = BandModel(p, T0)
    # the baseline is the link before aiming: a fixed cadence, no spread
    plan = TimeRequests(aim=aimer.next if aimed else None, rng=random.Random(9),
                        spread_ns=SPREAD_NS if aimed else 0)
    next_send = T0 + 300 * MS
    sends, waits, msgs = 0, [], []
    end = T0 + int(seconds * 1e9)
    while clock.now < end:
        clock.now += 5 * MS
        while next_send <= clock.now:
            model.ping(next_send)
            sends += 1
            next_send = plan.after(next_send)
        for d in model.deliveries_until(clock.now):
            if d.exchange is None:
                src._on_packet(d.host_ns, d.packet)
                continue
            send, rx, tx = d.exchange
            # the host instant of the event the request was taken in (no wander)
            ev = T0 + (rx - p.offset_ns) / (1 + p.drift_ppm * 1e-6)
            waits.append(ev - send - p.write_latency_ns)
            src._on_event(LinkEvent(d.host_ns, "time", data=struct.pack(
                "<QQQQ", send, rx // 1000, tx // 1000, d.host_ns)))
        msgs += src.drain()
    src.stop()
    msgs += src.drain()
    assert src.stats["time_exchanges"] == len(waits) > 0
    err, bnd = errors([m.payload for m in msgs if m.topic.endswith("/imu")], model)
    err = np.abs(err)
    late = err[len(err) * 2 // 5:]  # after the first 30 s
    w = np.asarray(waits)
    return {"sends": sends, "aimed": plan.aimed, "near": float(np.mean(w < 5 * MS)),
            "median_wait_ms": float(np.median(w)) / MS, "coverage": float(np.mean(err <= bnd)),
            "p99_ms": float(np.percentile(late, 99)) / MS,
            "median_bound_ms": float(np.median(bnd[len(bnd) * 2 // 5:])) / MS}


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, float], dict[str, float]]:
    return run(aimed=False), run(aimed=True)


def test_requests_are_aimed_just_before_connection_events(both):
    fixed, aimed = both
    print(f"\nrequests reaching the band < 5 ms before a connection event: fixed cadence "
          f"{fixed['near']:.2f}, aimed {aimed['near']:.2f} (median wait "
          f"{fixed['median_wait_ms']:.1f} -> {aimed['median_wait_ms']:.1f} ms; "
          f"{aimed['aimed']}/{aimed['sends']} aimed)")
    assert fixed["aimed"] == 0
    assert aimed["aimed"] >= aimed["sends"] - 3  # all but the first few, before the grid
    # a 30 ms interval: unaimed, a request waits anywhere in it (~1/6 within 5 ms)
    assert fixed["near"] <= 0.3
    assert aimed["near"] >= 0.5 and aimed["near"] >= 2 * fixed["near"]
    assert aimed["median_wait_ms"] <= 0.75 * fixed["median_wait_ms"]


def test_aiming_does_not_make_the_two_way_bound_worse(both):
    """Aimed requests keep the open profile within its budgets (p99 <= 1 ms, coverage >= 99 %,
    median bound <= 3x p99), and the bound is no looser for the error it covers than the fixed
    cadence's. The fixed cadence, phase-locked to the interval, sees only a few waits: its
    bound must then stay wide (it cannot tell how long they were), so its error may be small
    while its bound is many times that."""
    fixed, aimed = both
    print(f"\np99 error after 30 s: fixed {fixed['p99_ms']:.3f} ms, aimed {aimed['p99_ms']:.3f} "
          f"ms; median bound: fixed {fixed['median_bound_ms']:.3f} ms, aimed "
          f"{aimed['median_bound_ms']:.3f} ms; samples inside their bound: fixed "
          f"{fixed['coverage']:.4f}, aimed {aimed['coverage']:.4f}")
    assert aimed["p99_ms"] <= 1.0
    assert aimed["coverage"] >= max(fixed["coverage"], 0.99)
    assert (aimed["median_bound_ms"] / aimed["p99_ms"]
            <= fixed["median_bound_ms"] / fixed["p99_ms"])
    assert aimed["median_bound_ms"] <= 3 * aimed["p99_ms"]  # tight, as the budget says
