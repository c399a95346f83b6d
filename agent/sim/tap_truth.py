"""What the simulated rig knows about a band's latency: the truth a calibration is scored on.

    true_ns = converged_latency_ns(band_payloads, truth)   # what a converged fit needs
    at_taps = true_latency_ns(band_payloads, truth, assumed_ns, span)   # what the stored
                                                                 # (young) mapping needed

A band's stored sample times are off the truth by how far the latency its mapper assumed is
off (plus the mapping's own error). The band's true latency, for this recording, is the
setting that would have made them right on the median: the assumed one plus the median of
(stored time - true time) over its samples. ``truth`` is the band's entry in the file the
rig writes at stop (agent.sim.rig.TRUTH_ENV): sample k was taken at start + phase + k *
period on the host clock; the recording numbers samples from ``first_sample``. Scored over
the taps' span it is what the taps measure: the band's latency, plus the error its mapping
still has then (a one-way fit settles over tens of seconds). It includes
everything between the connection event and the agent (the latency the rig adds, and what
the private bus and this machine's scheduling take), none of which the agent is told.

That is not what a calibration must store: later recordings' fits converge, and no longer
have the young fit's error. ``converged_latency_ns`` is the setting a converged mapping
needs, from the rig's own clock truth and the lowest delay any chunk came with; a
calibration is scored on it (bench/bench_tap_rig.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def errors_ns(payloads: list[dict[str, Any]], truth: dict[str, Any],
              span_ns: tuple[int, int] | None = None) -> np.ndarray[Any, Any]:
    """Stored host time - true time of every sample of ``payloads`` (ns), or of those taken
    within ``span_ns`` (true host times)."""
    from agent.wrist.imu_batch import decode_payload

    out = []
    for p in payloads:
        d = decode_payload(p)
        k = d["index"] + int(truth.get("first_sample") or 0)
        true = truth["start_ns"] + truth["phase_ns"] + k * truth["period_ns"]
        e = d["host_ns"] - true
        if span_ns is not None:
            e = e[(true >= span_ns[0]) & (true <= span_ns[1])]
        out.append(e)
    return np.concatenate(out) if out else np.zeros(0)


def _host_at(device_ns: np.ndarray[Any, Any], truth: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The true host time at which the band's clock read ``device_ns`` (the inverse of the
    simulated band's clock, agent.sim.band_model.BandModel.device_at)."""
    c = truth["clock"]
    d = np.asarray(device_ns, np.float64) - c["offset_ns"]
    k = 1.0 + c["drift_ppm"] * 1e-6
    t = d / k
    for _ in range(3):  # the wander is ppm: a fixed point in a few steps
        w = c["wander_amp_ns"] * np.sin(2 * np.pi * t / (c["wander_period_s"] * 1e9))
        t = (d - w) / k
    return np.asarray(truth["start_ns"] + t)


STOP_TAIL_NS = 100_000_000
"""Chunks that arrived this close to the recording's last arrival are not taken for the
lowest delay: at a stop the simulated band sends what it holds at once, outside any
connection event (agent.sim.band_model.BandModel.stop), which no BLE link can. Such a chunk
once came 3.2 ms under every other of 6845 and set the floor alone. No fit sees it either: a
one-way fit never closes the bin it falls in."""


def converged_latency_ns(payloads: list[dict[str, Any]], truth: dict[str, Any], *,
                         burst_gap_ns: int = 2_000_000,
                         stop_tail_ns: int = STOP_TAIL_NS) -> int:
    """The latency setting a converged one-way mapping needs to place the band's samples
    right on the median: the mapping with the band's true clock and the lowest delay any
    chunk arrived with (the envelope a fit of unlimited length reaches), scored against the
    samples' true times. It depends on no fit of ours, nor on how young the recording's
    mapping was: it is what a calibration must recover for later recordings' converged fits.
    The chunks of the last ``stop_tail_ns`` are left out (``STOP_TAIL_NS``).

    A chunk is observed as the live fit observes it (agent.wrist.timing.observe): its last
    sample's stored device time against its arrival, or against the first arrival of its
    burst (arrivals within ``burst_gap_ns``: the profile's ``burst_gap_ns``). Needs the
    rig's clock truth (``truth["clock"]``) and device times (bands with a clock)."""
    from agent.wrist.imu_batch import columns, decode_payload

    lows, offs = [], []
    arrivals: list[tuple[int, float]] = []
    for p in payloads:
        c = columns(p)
        for t0, per, n, a in zip(c["device_t0_ns"], c["device_period_ns"], c["chunk_n"],
                                 c["arrival_ns"], strict=True):
            if t0 is not None:
                arrivals.append((int(a), float(t0 + (n - 1) * (per or 0.0))))
        d = decode_payload(p)
        k = d["index"] + int(truth.get("first_sample") or 0)
        true = truth["start_ns"] + truth["phase_ns"] + k * truth["period_ns"]
        offs.append(_host_at(d["device_ns"], truth) - true)
    start, last = 0, None
    end = max((a for a, _d in arrivals), default=0) - stop_tail_ns
    for a, dev in sorted(arrivals):
        if last is None or not 0 <= a - last <= burst_gap_ns:
            start = a
        last = a
        if a <= end:
            lows.append(start - float(_host_at(np.asarray([dev]), truth)[0]))
    if not lows:
        raise ValueError("no chunk with a device time")
    return round(min(lows) + float(np.median(np.concatenate(offs))))


def true_latency_ns(payloads: list[dict[str, Any]], truth: dict[str, Any], assumed_ns: int,
                    span_ns: tuple[int, int] | None = None) -> int:
    """The latency that would have made the band's stored times right on the median, over
    ``span_ns`` (the taps': what they can measure, the mapping's error then included)."""
    return int(assumed_ns + np.median(errors_ns(payloads, truth, span_ns)))
