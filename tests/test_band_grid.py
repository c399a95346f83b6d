"""The connection-event grid (agent/clock/band_grid.py) against events it is never shown: an
arrival re-timed onto the grid is never earlier than its packet was ready (plus the latency),
less the stated margin, whatever the link does (late packets, host stalls, reconnections,
jitter too wide for a grid), and it removes most of the host's jitter where there is one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.clock.band_grid import GRID_MARGIN_NS, EventGrid

LATENCY = 3_000_000


def _link(rng: np.random.Generator, n: int, interval_ms: float, frame_ms: float,
          ppm: float, jitter_ns: float, late: float = 0.05, stall: float = 0.01,
          reconnect_every: int = 0) -> list[tuple[float, int]]:
    """(ready time, arrival) of ``n`` packets: each ready every ``frame_ms``, leaving at the
    first event after (or a later one: ``late``), arriving latency + jitter after it (or
    stalled by up to three intervals: ``stall``); events every ``interval_ms`` on a controller
    clock ``ppm`` off the host's, at a new phase after each reconnection."""
    iv = interval_ms * 1e6 * (1 + ppm * 1e-6)
    ev0 = float(rng.uniform(0, iv))
    out = []
    t = 5e9
    for i in range(n):
        if reconnect_every and i and i % reconnect_every == 0:
            ev0 = float(rng.uniform(0, iv))
        t += frame_ms * 1e6
        k = np.ceil((t - ev0) / iv) + (rng.random() < late)
        a = ev0 + k * iv + LATENCY + rng.exponential(jitter_ns)
        if rng.random() < stall:
            a += rng.uniform(0, 3 * iv)
        out.append((t, int(a)))
    return out


def _retime(link: list[tuple[float, int]], reset_every: int = 0
            ) -> tuple[EventGrid, list[float], list[float]]:
    """Feed the arrivals; re-time each taken one once 8 events with an arrival follow it (as
    the band mapper does). Returns the grid, each re-timed value's height above its floor
    (ready + latency), and how much earlier than its arrival it was put."""
    g = EventGrid()
    pend: list[tuple[float, int, int]] = []
    above: list[float] = []
    gain: list[float] = []
    for i, (t, a) in enumerate(link):
        if reset_every and i and i % reset_every == 0:
            g.reset()
            pend = []
        k = g.add(a)
        if k is not None:
            pend.append((t, a, k))
        newest = g.event(-8)
        keep = []
        for t2, a2, k2 in pend:
            if newest is None or k2 >= newest:
                keep.append((t2, a2, k2))
                continue
            v = g.value(k2)
            if v is not None and v < a2:
                above.append(v - (t2 + LATENCY))
                gain.append(a2 - v)
        pend = keep if g.active else []
    return g, above, gain


@pytest.mark.parametrize(("interval_ms", "frame_ms", "ppm"), [
    (87.5, 307.69, 40.0),   # Polar on a congested link: a frame every 3.5 events
    (30.0, 307.69, -45.0),  # ... on the default link: every 10.26
    (7.5, 76.92, 20.0),     # Movesense on a fast link
    (40.0, 320.0, 1.0),     # phase locked: every 8th event, always the same phase
])
def test_a_retimed_arrival_is_never_before_its_event(interval_ms, frame_ms, ppm):
    rng = np.random.default_rng(int(interval_ms * 10))
    g, above, gain = _retime(_link(rng, 1000, interval_ms, frame_ms, ppm, 1e6))
    assert g.found >= 1 and len(above) > 600
    assert min(above) >= -GRID_MARGIN_NS
    # the host's jitter (exponential, mean 1 ms) is mostly gone
    assert float(np.median(gain)) > 400_000


def test_reconnections_and_stalls_never_retime_an_arrival_too_early():
    """A new phase at every reconnection (told: ``reset``, or not told: the arrivals stop
    fitting), late packets and stalls of up to three intervals."""
    rng = np.random.default_rng(7)
    link = _link(rng, 1300, 30.0, 307.69, 30.0, 1e6, late=0.2, stall=0.05,
                 reconnect_every=130)
    _g, above, _gain = _retime(link, reset_every=260)  # told of every other one
    assert len(above) > 400 and min(above) >= -GRID_MARGIN_NS


def test_arrivals_whose_jitter_is_wider_than_a_grid_are_not_retimed():
    rng = np.random.default_rng(3)
    g, above, _gain = _retime(_link(rng, 400, 30.0, 307.69, 10.0, 10e6))
    assert g.found <= 2
    assert not above or min(above) >= -GRID_MARGIN_NS
    assert len(above) < 40


def test_a_grid_is_drawn_through_the_lowest_of_the_arrivals_it_was_found_from():
    """The first arrival a grid is found from may sit well above the grid's lower edge (its
    jitter): the grid is still the edge, so the arrivals it was found from are all taken, and
    so are later ones on it (not only those as late as that first one)."""
    iv = 30_000_000
    jitter = [2_500_000] + [(i * 370_000) % 900_000 for i in range(1, 40)]
    arrivals = [5_000_000_000 + 10 * iv * i + (i * 7 % 3) * iv + LATENCY + j
                for i, j in enumerate(jitter)]
    g = EventGrid()
    taken = [g.add(a) for a in arrivals]
    assert g.found == 1 and g.resets == 0
    assert len(g.seeded) == 16  # every arrival it was found from
    after = taken[16:]
    assert all(k is not None for k in after)
    # each numbered on its own event: 8 to 12 events apart, as sent
    ks = [g.seeded[a] for a in arrivals[:16]] + after
    assert {b - a for a, b in itertools.pairwise(ks)} <= {8, 9, 10, 11, 12}
