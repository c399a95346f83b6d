"""The band mapper's per-placement cache (agent/clock/band.py ``_now``) never goes stale:
over randomised observation sequences, every placement, peek, state and snapshot equals
what a mapper that recomputes everything for each placement gives, and the cached value
equals a fresh recompute after every step. Exact equality, no tolerance."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from agent.clock.band import BLE_STEP_NS, SETTLE_BINS, WAIT_WITNESSES, BandClock, Latency, _FitNow
from bench.bench_clock import Cell, run_cell


def fresh_slope_part(self: BandClock, x: float, excess: float) -> float:
    """``_slope_part`` by its per-key formula, nothing kept."""
    f = self.fit
    if self._bins() < SETTLE_BINS or f.window_span_ns <= 0:
        return 0.0
    _s, ax, _ay = self._line()
    d = x - ax
    car = self._carrying()
    if car is not None:
        return car[1] * abs(d)
    edge = f.edge_ns if self._line_on_edge else 0
    part = abs(d) * (excess / edge if edge > 0 else 3.0 * excess / f.window_span_ns)
    tilt = None if self.kind == "rate" else self._tilt(excess, d >= 0)
    if tilt is not None:
        part = min(part, abs(d) * tilt)
    if self.young:
        part = max(part, self.max_slope_dev * abs(d))
    return part


def fresh_local_low(self: BandClock, x: float, excess: float) -> float:
    """``_local_low`` by its per-key formula (the residuals as the mapper keeps them)."""
    self._low_prepared(excess)  # the residuals, once per refit (as the mapper keeps them)
    rec = self._low_cache
    if not rec:
        return 0.0
    d = x - self._line()[1]
    out = math.inf
    for dj, r in rec:
        v = r
        if dj * d > 0 and abs(d) > abs(dj):
            v += (r + excess) * (abs(d) - abs(dj)) / abs(dj)
        out = min(out, v)
    return max(0.0, out)


class Fresh(BandClock):
    """The mapper with no cache: every placement recomputes what it takes from the fit, the
    slope part and the local low by their per-key formulas, the measured latency by sorting
    every sum and the interval by every pair of anchors."""

    def _now(self) -> _FitNow:
        return self._fit_now()

    def _gates(self) -> tuple[bool, bool, bool]:
        return self._fresh_gates()

    def _slope_part(self, x: float, excess: float) -> float:
        return fresh_slope_part(self, x, excess)

    def _local_low(self, x: float, excess: float) -> float:
        return fresh_local_low(self, x, excess)

    def _measured_latency(self) -> tuple[float, float] | None:
        f = self.fit
        if not f.ready or not self._xch:
            return None
        key = (f.refits, self._epoch, self.exchanges // 32)  # the mapper's own staleness
        if self._lat_cache[0] == key:
            return self._lat_cache[1]
        slope, ax, ay = self._line()
        sums = sorted(s for s in (ay + slope * (rx - ax) - send for rx, send in self._xch)
                      if s > 0)
        out: tuple[float, float] | None = None
        if sums:
            low = sums[0]
            iv = self._interval_ns()
            out = (low, low)
            if iv is not None and len(sums) > WAIT_WITNESSES:
                m = low % iv
                back = sorted((m - s % iv) % iv for s in sums[1:])
                out = (low, min(low, back[WAIT_WITNESSES - 1]))
        self._lat_cache = (key, out)
        return out

    def _interval_ns(self) -> float | None:
        keys = [k for k, _a, _m in self._recent]
        g = 0
        for a, b in itertools.pairwise(keys):
            steps = round((b - a) / BLE_STEP_NS)
            if steps > 0:
                g = math.gcd(g, steps)
        return g * BLE_STEP_NS if g else None


class Checked(BandClock):
    """The cached mapper, each cached value checked against a fresh recompute where it is
    read (recomputing then changes nothing: no state has changed since it was cached)."""

    reads = 0
    hits = 0

    def _now(self) -> _FitNow:
        hit = self._now_cache is not None and self._now_cache.ver == self._ver
        now = super()._now()
        assert now == self._fit_now()
        self.reads += 1
        self.hits += hit
        return now

    def _gates(self) -> tuple[bool, bool, bool]:
        gates = super()._gates()
        assert gates == self._fresh_gates()
        return gates

    lows = 0
    """Local lows above 0 (the residuals made a difference)."""

    def _slope_part(self, x: float, excess: float) -> float:
        got = super()._slope_part(x, excess)  # kept per version and excess
        assert got == fresh_slope_part(self, x, excess)
        return got

    def _local_low(self, x: float, excess: float) -> float:
        got = super()._local_low(x, excess)
        assert got == fresh_local_low(self, x, excess)
        self.lows += got > 0
        return got


def _clock(cls: type[BandClock], kind: str) -> BandClock:
    period = 5_000_000 if kind != "rate" else 10_000_000
    return cls(kind, Latency(1_700_000, 1_500_000), period_ns=period,
               wait_prior_ns=60_000_000, settle_ns=3_000_000_000)


def _script(kind: str, seed: int, steps: int) -> list[tuple[str, tuple[Any, ...]]]:
    """A band's life: notifications on a drifting clock, in stretches of random waits,
    waits that do not slide, stamps that run at an impossible rate or jump (start-up
    frames), a reboot, backlogs, link cuts, two-way exchanges; placements in batches and
    one by one, peeks between."""
    rng = random.Random(seed)
    period = 5_000_000 if kind != "rate" else 10_000_000
    drift = rng.uniform(-80e-6, 80e-6)
    dev0, host0, jump, stamp = 10**9, 3 * 10**9, 0, 0.0
    mode = "jumpy"
    index = 0
    pending: list[tuple[float, int, int, int]] = []  # key, n, arrival, index
    out: list[tuple[str, tuple[Any, ...]]] = []
    t = 0

    def exchange() -> tuple[str, tuple[Any, ...]]:
        send = host0 + round(t * (1 + drift)) + rng.randint(0, 5_000_000)
        rx = dev0 + round(stamp) + rng.randint(1_000_000, 9_000_000)
        tx = rx + rng.choice([0, 7_500_000, 15_000_000])
        return ("observe_exchange", (send, rx, send + rng.randint(4_000_000, 30_000_000), tx))

    for _ in range(steps):
        if rng.random() < 0.01:
            mode = rng.choice(["random", "random", "locked", "slow", "jumpy"])
        r = rng.random()
        if r < 0.6 or not out:
            n = rng.randint(1, 8)
            t += n * period
            stamp += n * period * (0.5 if mode == "slow" else 1.0)
            wait = {"random": rng.uniform(0, 30e6), "locked": 12e6, "slow": rng.uniform(0, 7e6),
                    "jumpy": rng.uniform(0, 7e6)}[mode]
            if rng.random() < 0.01:
                wait += rng.uniform(0.2e9, 2e9)  # a backlog
            if mode == "jumpy" and rng.random() < 0.1:
                jump = rng.choice([-2 * 10**9, 2 * 10**9, 0, 300_000_000])
            if rng.random() < 0.002:
                dev0 -= round(stamp) + 10**9  # a reboot: the device clock starts again lower
            arrival = host0 + round(t * (1 + drift)) + 1_700_000 + round(wait)
            if kind == "rate":
                out.append(("observe_index", (arrival, n, index)))
                pending.append((float(index), n, arrival, index))
            else:
                last = dev0 + round(stamp) + (jump if mode == "jumpy" else 0)
                out.append(("observe_device", (last, arrival, index + n - 1)))
                pending.append((float(last - (n - 1) * period), n, arrival, index))
            index += n
        elif r < 0.67 and kind == "two-way":
            out.append(exchange())
        elif r < 0.605 and kind == "rate":
            out.append(("cut", ()))
            pending.clear()
            index += rng.randint(1, 50)
        elif r < 0.73 and len(pending) > 5:
            # a batch: its chunks placed in order, with nothing observed between
            for key, n, arrival, idx in pending:
                out.append(("place", (key, n, float(period), arrival, idx)))
                if kind == "two-way" and rng.random() < 0.2:
                    out.append(exchange())  # a reply read between two placements
            pending.clear()
        elif r < 0.75 and pending:
            key, n, arrival, idx = rng.choice(pending)
            out.append(("peek", (key, n, float(period), arrival, idx)))
        elif r < 0.76:
            out.append((rng.choice(["state", "snapshot"]), ()))
    return out


def _run(clock: BandClock, script: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    results = []
    for name, args in script:
        try:
            results.append(getattr(clock, name)(*args))
        except ValueError as e:  # placed before any observation
            results.append(("error", str(e)))
    return results


@pytest.mark.parametrize("kind", ["device", "two-way", "rate"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_cached_placements_equal_a_fresh_recompute(kind, seed):
    script = _script(kind, seed, 3000)
    cached, fresh = _clock(Checked, kind), _clock(Fresh, kind)
    got = _run(cached, script)
    want = _run(fresh, script)
    assert got == want
    placed = [r for (name, _a), r in zip(script, got, strict=True) if name == "place"]
    # the sequence exercised what invalidates the cache, and the cache was used
    assert len(placed) > 1000 and cached.restarts >= 1
    assert kind == "rate" or ("arrival" in {p.source for p in placed} and cached.clamped > 0)
    assert isinstance(cached, Checked) and 0 < cached.hits < cached.reads
    assert (cached.clamped, cached.held, cached.restarts) == \
        (fresh.clamped, fresh.held, fresh.restarts)


def test_the_cache_holds_across_the_simulated_bands(monkeypatch):
    """The bench's simulated bands (a device clock with start-up jumps, the open profile's
    exchanges, a band with no clock on a lossy link): each cached value read by a
    placement equals a fresh recompute at that moment."""
    reads = []
    cached_now, cached_gates = BandClock._now, BandClock._gates

    def checked_now(self: BandClock) -> _FitNow:
        now = cached_now(self)
        assert now == self._fit_now()
        reads.append(now.ver)
        return now

    def checked_gates(self: BandClock) -> tuple[bool, bool, bool]:
        gates = cached_gates(self)
        assert gates == self._fresh_gates()
        return gates

    lows: list[float] = []
    slopes: list[float] = []
    cached_slope, cached_low = BandClock._slope_part, BandClock._local_low

    def checked_slope(self: BandClock, x: float, excess: float) -> float:
        got = cached_slope(self, x, excess)
        assert got == fresh_slope_part(self, x, excess)
        slopes.append(got)
        return got

    def checked_low(self: BandClock, x: float, excess: float) -> float:
        got = cached_low(self, x, excess)
        assert got == fresh_local_low(self, x, excess)
        lows.append(got)
        return got

    monkeypatch.setattr(BandClock, "_now", checked_now)
    monkeypatch.setattr(BandClock, "_gates", checked_gates)
    monkeypatch.setattr(BandClock, "_slope_part", checked_slope)
    monkeypatch.setattr(BandClock, "_local_low", checked_low)
    for cell in (Cell("polar-pmd", "default", 1.0, 1, 0.5),
                 Cell("wearcap-open", "default", 2.0, 2, 0.5),
                 Cell("witmotion", "lossy", 1.0, 1, 0.5),
                 Cell("movesense", "default", 1.0, 1, 1.0)):  # recent bins above the line
        assert run_cell(cell)["backward_steps"] == 0
    assert len(reads) > 1000 and len(set(reads)) < len(reads)
    # the slope part and the local low (kept per version) were read, and were not all 0
    assert sum(v > 0 for v in lows) > 100 and sum(v > 0 for v in slopes) > 100


def test_a_peek_from_another_thread_never_reads_an_observation_half_done():
    """The open profile's time-request aimer peeks from the BLE loop while the writer
    observes and places. Inside an observation, a placement or a cut, the mapper is held:
    another thread cannot take it until the call is done."""
    import threading

    free: list[bool] = []

    def other_thread_can_take(clock: BandClock) -> None:
        def probe() -> None:
            got = clock._lock.acquire(blocking=False)
            free.append(got)
            if got:
                clock._lock.release()
        t = threading.Thread(target=probe)
        t.start()
        t.join()

    class Probe(BandClock):
        def _observe(self, key: int, arrival_ns: int, n: int) -> None:
            other_thread_can_take(self)
            super()._observe(key, arrival_ns, n)

    c = _clock(Probe, "device")
    for i in range(40):
        c.observe_device(i * 5_000_000, 10**9 + i * 5_000_000 + 2_000_000)
    assert free and not any(free)
    other_thread_can_take(c)
    assert free[-1] is True  # between calls it is free
    got = c.peek(40 * 5_000_000.0)
    assert got == c.place(40 * 5_000_000.0)  # a peek is the placement, committing nothing
