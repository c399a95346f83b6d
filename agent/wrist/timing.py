"""Wrist-band time: each profile's timing facts, and decoded chunks into the band's mapper.

    clock = make_clock(profile, rate_hz, band_latency(band))   # agent.clock.band.BandClock
    observe(clock, chunk)        # every decoded chunk, in arrival order
    t = place(clock, chunk)      # its ChunkTime (host t0, spacing, bound parts), once per chunk,
                                 # in sample order, when it is written
    t = peek(clock, chunk)       # the same, committing nothing (e.g. a gap's span)

One clock per band stream, kept across reconnections and segment rolls: that is what keeps
host time monotonic in sample order (agent/clock/band.py).

What a chunk tells the clock: a band with a device clock is observed at the instant it says
it sent the packet (open profile: ``tx_device_ns``) or else at the packet's last sample (it
cannot leave before that was taken), against the first arrival of the notification(s) it
came in; a band with none (WitMotion) by sample number against arrival. Latency comes from
the band's config (``[[wrist]] latency_ms``: its source ``calibrated`` with ``latency_source
= "calibrated"``, which wearcap calibrate writes, else ``config``) or its profile's
``[timing]`` default, never from a simulator.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.clock.band import BandClock, ChunkTime, Latency
from agent.wrist.decode import ImuChunk
from agent.wrist.registry import REGISTRY, ProfileTiming

TIMING: dict[str, ProfileTiming] = {n: f.timing for n, f in REGISTRY.items()}
"""Each profile's timing, as the registry gives it (agent.wrist.registry: one table)."""


def band_latency(band: Any) -> Latency:
    """The latency a ``[[wrist]]`` band's mapper assumes: its own setting if it has one,
    else its sensor profile's default (agent.config.WristBand, agent.wrist.profiles)."""
    from agent.wrist.profiles import load_profile

    prof = load_profile(band.profile)
    ms = float(getattr(band, "latency_ms", -1.0))
    unc = float(getattr(band, "latency_uncertainty_ms", -1.0))
    if ms >= 0:
        source = "calibrated" if getattr(band, "latency_source", "") == "calibrated" \
            else "config"
        return Latency(round(ms * 1e6), round((unc if unc >= 0 else 0.3) * 1e6), source)
    return Latency(prof.latency_ns, round(unc * 1e6) if unc >= 0 else
                   prof.latency_uncertainty_ns, "profile")


def profile_latency(profile: str) -> Latency:
    from agent.wrist.profiles import load_profile

    prof = load_profile(profile)
    return Latency(prof.latency_ns, prof.latency_uncertainty_ns, "profile")


def make_clock(profile: str, rate_hz: float, latency: Latency | None = None,
               **clock_args: Any) -> BandClock:
    """The mapper for one band stream of ``profile`` at nominal ``rate_hz``."""
    t = TIMING[profile]
    args: dict[str, Any] = {"quantisation_ns": t.quantisation_ns,
                            "wait_prior_ns": t.wait_prior_ns, **t.fit_args, **clock_args}
    return BandClock(t.kind, latency or profile_latency(profile), period_ns=1e9 / rate_hz,
                     **args)


def observe(clock: BandClock, chunk: ImuChunk) -> None:
    """Feed one decoded chunk into its band's clock (call in arrival order)."""
    n = chunk.n
    if clock.kind == "rate":
        clock.observe_index(chunk.arrival_ns, n, chunk.index)
        return
    if chunk.device_t0_ns is None:
        return
    when = chunk.tx_device_ns
    if when is None:
        when = chunk.last_device_ns
        assert when is not None
    first = chunk.first_arrival_ns
    clock.observe_device(when, first if first is not None else chunk.arrival_ns,
                         chunk.index + n - 1)


def _arrival_time(clock: BandClock, chunk: ImuChunk) -> ChunkTime:
    """No fit yet (or no device time): the arrival, less the latency and a period per sample
    back, with the largest plausible wait as the bound."""
    period = chunk.period_ns or clock.nominal_period_ns
    lat = clock.latency
    t0 = chunk.arrival_ns - lat.ns - round((chunk.n - 1) * period)
    return ChunkTime(t0, period, clock.wait_prior_ns, lat.uncertainty_ns,
                     clock.quantisation_ns, 0, "arrival")


def _key(clock: BandClock, chunk: ImuChunk) -> float | None:
    return float(chunk.index) if clock.kind == "rate" else (
        None if chunk.device_t0_ns is None else float(chunk.device_t0_ns))


def place(clock: BandClock, chunk: ImuChunk) -> ChunkTime:
    """Host times of ``chunk``'s samples and their bound; once per chunk, in sample order."""
    key = _key(clock, chunk)
    if key is None or not clock.ready:
        return _arrival_time(clock, chunk)
    return clock.place(key, chunk.n, chunk.period_ns, _arrival(chunk), chunk.index)


def peek(clock: BandClock, chunk: ImuChunk) -> ChunkTime:
    """``place`` without committing anything."""
    key = _key(clock, chunk)
    if key is None or not clock.ready:
        return _arrival_time(clock, chunk)
    return clock.peek(key, chunk.n, chunk.period_ns, _arrival(chunk), chunk.index)


class PingAimer:
    """When to send the open profile's time requests so that most reach the band with no
    wait. A write reaches the controller a write latency after it is sent (unknown; the
    host stack's, 0.3-5 ms) and then waits for the next connection event; that wait is on
    the exchange's low side, so it widens the exchange and biases its midpoint. Events are
    where the band's anchors map to; a request is sent a lead before one.

    Until exchanges come back the lead is spread over [0, lead_max_ns] so that whatever
    the write latency is, some arrive just in time. Told each exchange (``exchange``), the
    aimer learns the write side (event - send, lowest of the recent ones: the write latency
    plus the least wait) and sends most requests with a lead just around it, the rest
    still spread over the whole interval (so a changed latency is found again). Both the
    event grid and the write side are measured through the same mapping, so its own error
    cancels in the aim.

        aim = PingAimer(); aim.feed(clock, chunk) for each chunk
        aim.exchange(clock, host_send_ns, device_rx_ns) for each reply
        t = aim.next(now_ns, u)    # u uniform in [0, 1): the send time (None: no grid yet)
    """

    AIMED = 0.75
    """Share of requests sent at the learned lead (the rest explore)."""
    EARLY_NS = 300_000
    LATE_NS = 700_000
    """The aimed lead is spread over [write side - EARLY_NS, write side + LATE_NS]."""

    def __init__(self, lead_max_ns: int = 8_000_000, window: int = 64) -> None:
        self.lead_max_ns = lead_max_ns
        self.interval_ns: float | None = None
        self._clock: BandClock | None = None
        self._last_anchor: int | None = None
        self._write: deque[float] = deque(maxlen=window)
        self.write_ns: float | None = None
        """The learned write side (write latency + least wait), ns; None until told."""

    def feed(self, clock: BandClock, chunk: ImuChunk) -> None:
        a = chunk.tx_device_ns
        if a is None or not clock.ready:
            return
        last = self._last_anchor
        if last is not None and a > last:
            d = a - last
            iv = self.interval_ns
            # anchors of consecutive events differ by the interval, skipped ones by multiples
            if iv is None or d < 0.9 * iv:
                self.interval_ns = float(d)
            elif abs(d / iv - round(d / iv)) < 0.05:
                self.interval_ns = iv + 0.05 * (d / round(d / iv) - iv)
        self._last_anchor = a
        self._clock = clock  # the anchor is mapped when a request is aimed (next)

    def exchange(self, clock: BandClock, host_send_ns: int, device_rx_ns: int) -> None:
        """A reply came: the request sent at ``host_send_ns`` went on air in the event the
        band stamped ``device_rx_ns``."""
        if not clock.ready:
            return
        w = clock.peek(float(device_rx_ns)).t0_ns - host_send_ns
        if w < 0 or (self.interval_ns and w > 4 * self.interval_ns):
            return  # not yet a usable mapping
        self._write.append(float(w))
        self.write_ns = min(self._write)

    def next(self, now_ns: int, u: float) -> int | None:
        iv, clock, a = self.interval_ns, self._clock, self._last_anchor
        if clock is None or a is None or iv is None or iv <= 0:
            return None
        ev = clock.peek(float(a)).t0_ns + 0.0
        wr = self.write_ns
        if wr is not None and u < self.AIMED:
            v = u / self.AIMED
            lead = max(0.0, wr - self.EARLY_NS + v * (self.EARLY_NS + self.LATE_NS))
        else:
            v = (u - self.AIMED) / (1 - self.AIMED) if wr is not None else u
            lead = v * min(float(self.lead_max_ns), iv if wr is not None else 1e18)
        k = max(1, int((now_ns + lead - ev) // iv) + 1)
        return round(ev + k * iv - lead)


def _arrival(chunk: ImuChunk) -> int:
    return chunk.first_arrival_ns if chunk.first_arrival_ns is not None else chunk.arrival_ns


__all__ = ["TIMING", "BandClock", "ChunkTime", "Latency", "band_latency", "make_clock",
           "observe", "peek", "place", "profile_latency"]
