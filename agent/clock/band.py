"""One band's time mapper: clock observations in, monotonic host times with an honest bound out.

    clock = BandClock("device", Latency(1_650_000, 1_350_000, "profile"), period_ns=1e9 / 52)
    clock.observe_device(device_ns, arrival_ns)   # a sample stamped device_ns had arrived by then
    clock.observe_index(arrival_ns, n, index)      # kind "rate": samples index.. came in one packet
    clock.observe_exchange(send_ns, rx_dev_ns, recv_ns, tx_dev_ns)   # a two-way time reply
    t = clock.place(key, n, period_ns)             # ChunkTime: host t0, spacing, bound and parts
    clock.peek(key, n, period_ns)                  # the same, committing nothing (gap spans)
    clock.state() -> the batch's "clock" dict ; clock.snapshot() -> the segment's fit

``key`` is the device time (ns) of a chunk's first sample for kinds "device" and "two-way",
its sample number for kind "rate" (bands with no device clock). Call ``place`` once per chunk,
in sample order: it is what keeps host time monotonic.

**The bound and its parts.** Every placement says how far the host time may be from the truth:

- ``latency_ns``: the uncertainty of the transport latency. A one-way fit (the lower envelope
  of arrival vs device time, agent/clock/oneway.py) sits the constant latency above the
  truth and cannot observe it; the mapper subtracts the configured ``Latency.ns`` and counts
  ``Latency.uncertainty_ns`` in the bound. It is never taken from a simulator. A two-way
  exchange (the open profile's time request) observes it instead: the envelope at the event
  a request went on air in, less the request's send time, is the sum of the notification
  and write latencies (plus the least wait); the notification latency is half of it, give
  or take half their difference (``asymmetry``: at most half their sum) and half the wait
  still possible (judged from how the sums spread). Where that range and the configured one
  overlap, the latency is in both: the latency part is half of what is left.
- ``fit_ns``: how far the envelope may be above the floor it estimates (the wait for a
  connection event, jitter) and what its slope error adds at the newest sample. While the
  fit has few bins it is ``wait_prior_ns / bins`` (the largest plausible wait, shrinking as
  bins come); then ``TAIL_FACTOR`` x the 10th-lowest bin residual (a wait plus jitter: the
  lowest of N is further from the floor than a uniform wait's). A band with no clock adds its
  floor, one sample period, until its rate fit has converged (a phase-locked link never does:
  arrival times cannot place its samples closer, agent/clock/rate.py). The slope error adds
  what the bins behind the line's anchor allow it to tilt, at most what supports at either end
  of the window, each up to that excess high, allow (``_slope_part``).
- ``quantisation_ns``: the resolution Q of the band's timestamps. Once the fit's part is its
  tail estimate and the stamps' phases slide through Q, a stamp's lag can only put the truth
  after the placement (the envelope rests on the lowest observation, whose lag is in the fit
  part): Q is then on the low side only, and this part is what it adds beyond the high
  side's room (``_one_sided``, docs/design-notes.md); else the whole Q.
- ``slew_ns``: how far the output is still from the fit (below).

**Monotonic time.** The output never steps: each chunk's first sample is placed where the
previous output predicts, corrected towards the fit by at most ``slew_ppm`` of the elapsed
device time (``slew_fast_ppm`` until the fit has converged), so host time strictly increases
in sample order across fit updates, restarts, reconnections and segment rolls. What is left
to absorb is the recorded slew, and it is part of the bound.

**Physically possible fits only.** A device clock runs within ``max_drift_ppm`` (hundreds of
ppm) of the host, a sample clock of a band with no device clock within ``max_rate_error``.
Start-up frames whose timestamps have not settled (Polar's first frames jump) break that:
an observation ``jump_ns`` below the envelope, or a whole ``settle_ns`` of them above it,
restarts the fit from the recent observations; a slope outside the physical range is
clamped and counted, never used. Until the restarted fit has bins again, the bound is wide.
A young window (under 60 s) has its slope held within ``PRIOR_DRIFT_PPM`` of 1; a converged
fit's slope that jumps by over ``SLOPE_JUMP_PPM`` in one refit is not believed (``_line``).
Before the fit settles, no sample is placed after its arrival allows and a chunk's spacing is
kept within ``max_rate_error`` of nominal.

**Phase-locked waits.** A band with a device clock whose packets all wait the same time for
their connection event shows no spread of waits; its lowest is not zero. Such waits (spread
under ``LOCK_SPREAD_NS``, per-second lows unmoved over the window) put one packet period into
the fit part (``lock_floor_ns``).

**Arrivals re-timed onto their connection events** (kind "device"). Notifications leave at
connection events, which come at a fixed interval on the host; the arrivals of many events
show that grid, and an earlier arrival, re-timed onto its event (its jitter removed), lowers
the fit's observation to the band's own wait (agent/clock/band_grid.py: never earlier than
the sample plus the latency, less ``GRID_MARGIN_NS``, which the bound counts).

**Where each part lives.** ``BandClock`` is built in layers, each a base class of the next:
agent/clock/band_line.py (the fit and its line: young, held and carried slopes; the mapper's
lock), band_bound.py (the stated bound's fit part: tail, slope part and tilt, local low, lock
floor), band_exchange.py (two-way replies and the latency they measure), band_observe.py
(observations, restarts, the suspect gate, ``cut``, re-timing), band_grid.py (the event
grid), band_now.py (what every placement takes
from the fit, cached per version), band_place.py (placement by the fit or by arrival, and the
slew), band_types.py (``Latency``, ``ChunkTime``); here: the arguments, and what a batch and
a segment record.
"""

from __future__ import annotations

from typing import Any

from agent.clock.band_bound import (
    LOCAL_LOW_NS,
    LOCK_BIN_SPREAD_NS,
    LOCK_SPREAD_NS,
    TAIL_FACTOR,
    WAIT_PRIOR_NS,
)
from agent.clock.band_exchange import BLE_STEP_NS, RTT_WINDOW, TWO_WAY_ASYMMETRY, WAIT_WITNESSES
from agent.clock.band_line import (
    KINDS,
    MAX_DRIFT_PPM,
    MAX_RATE_ERROR,
    PRIOR_DRIFT_PPM,
    SETTLE_BINS,
    SLOPE_JUMP_PPM,
    YOUNG_SPAN_NS,
    serial,
)
from agent.clock.band_now import _FitNow as _FitNow
from agent.clock.band_observe import ARRIVAL_WINDOW_NS, REPLAY_NS, SUSPECT_NS
from agent.clock.band_place import SLEW_FAST_PPM, SLEW_PPM, SLEW_START_PPM, BandPlacement
from agent.clock.band_types import ChunkTime, Latency
from agent.clock.oneway import TAIL_RANK
from agent.clock.rate import BURST_GAP_NS


class BandClock(BandPlacement):
    """One band's time mapper (module doc)."""

    def __init__(self, kind: str, latency: Latency, *, period_ns: float,
                 quantisation_ns: int = 0, wait_prior_ns: int = WAIT_PRIOR_NS,
                 slew_ppm: float = SLEW_PPM, slew_fast_ppm: float = SLEW_FAST_PPM,
                 max_drift_ppm: float = MAX_DRIFT_PPM, max_rate_error: float = MAX_RATE_ERROR,
                 jump_ns: int = 150_000_000, settle_ns: int = 8_000_000_000,
                 asymmetry: float = TWO_WAY_ASYMMETRY, **fit_args: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind is one of {', '.join(KINDS)}")
        self.kind = kind
        self.latency = latency
        self.nominal_period_ns = float(period_ns)
        self.quantisation_ns = int(quantisation_ns)
        self.wait_prior_ns = int(wait_prior_ns)
        self.slew_ppm = slew_ppm
        self.slew_fast_ppm = slew_fast_ppm
        self.max_slope_dev = (max_rate_error if kind == "rate" else max_drift_ppm * 1e-6)
        self.jump_ns = int(jump_ns)
        self.asymmetry = float(asymmetry)
        self.settle_ns = int(settle_ns)
        self._fit_args = fit_args
        super().__init__()

    @serial
    def state(self) -> dict[str, Any]:
        """What a batch records about the mapping (see agent/wrist/imu_batch.py)."""
        f = self.fit
        return {"converged": self.converged, "drift_ppm": f.drift_ppm,
                "latency_ns": self.latency.ns,
                "latency_uncertainty_ns": self.latency.uncertainty_ns,
                "latency": self.latency.source, "kind": self.kind,
                "slew_max_ppm": self.slew_rate_ppm, "restarts": self.restarts}

    @serial
    def snapshot(self) -> dict[str, Any]:
        """The fit (and the two-way fit, if any), JSON-ready, for the segment metadata."""
        snap = self._rate.snapshot() if self._rate is not None else self.fit.snapshot()
        snap.update(latency_ns=self.latency.ns,
                    latency_uncertainty_ns=self.latency.uncertainty_ns,
                    latency=self.latency.source,
                    mapping=snap["mapping"].replace("- latency_ns", "- latency_ns (assumed)"),
                    error_bound_ns=self._fit_part() + self.latency.uncertainty_ns
                    + self.quantisation_ns,
                    slew={"max_ppm": self.slew_rate_ppm, "last_ns": self._last_slew_ns,
                          "max_ns": self.max_slew_seen_ns},
                    max_slope_deviation=self.max_slope_dev, clamped=self.clamped,
                    slope_jumps_held=self.held,
                    mapper_restarts=self.restarts)
        if self._twoway is not None:
            snap["two_way"] = self._twoway.snapshot()
        return snap


__all__ = [
    "ARRIVAL_WINDOW_NS", "BLE_STEP_NS", "BURST_GAP_NS", "KINDS", "LOCAL_LOW_NS",
    "LOCK_BIN_SPREAD_NS", "LOCK_SPREAD_NS", "MAX_DRIFT_PPM", "MAX_RATE_ERROR",
    "PRIOR_DRIFT_PPM", "REPLAY_NS", "RTT_WINDOW", "SETTLE_BINS", "SLEW_FAST_PPM", "SLEW_PPM",
    "SLEW_START_PPM", "SLOPE_JUMP_PPM", "SUSPECT_NS", "TAIL_FACTOR", "TAIL_RANK",
    "TWO_WAY_ASYMMETRY", "WAIT_PRIOR_NS", "WAIT_WITNESSES", "YOUNG_SPAN_NS", "BandClock",
    "ChunkTime", "Latency",
]
