"""A band's clock in hindsight: refitted over a whole calibration recording, for its taps.

    s = hindsight(band_payloads, profile, rate_hz)   # agent.mcu.tap.Stream, host times remapped

While recording, each chunk is placed by the fit as it stood then: a young one-way fit
(agent/clock/band.py) wanders by milliseconds, and its output is slewed towards newer fits
rather than stepped. Taps measured on those times measure the band's latency error plus
that fit's error at the time, which a converged fit no longer has: the stored setting would
then be off by it. Here the agent's own mapper (agent.wrist.timing.make_clock, the same
profile, rate and assumed latency) is fed every chunk of the recording, in arrival order,
from what the batches stored (device times, sample numbers, arrival times), and then each
chunk's samples are placed by that final fit over the whole session, committing nothing and
with no slew: the line through the envelope of all of it.

What remains is that fit's own part of its bound at each sample (how far its envelope may
be above the floor it estimates, and its slope error at that distance from its anchor):
``sample_bound_ns`` holds it, and the calibration adds it to its uncertainty
(agent.commands.calibrate.analyse). The latency part is not in it: that is what the taps
measure. Nor is the timestamps' resolution (Movesense: 1 ms): the same decoder draws the
same line through the same truncated stamps in every recording, so the mean of what it
leaves is part of what the taps measure and later recordings need, and each later sample's
own share stays in that sample's bound.

Limits: a band whose chunks came in several notifications (Polar's ACC and GYRO frames) is
observed at the arrival the batch stored, its chunk's (the live mapper used the first: the
refit's envelope can only sit higher, which its bound does not hold); two-way exchanges
(open profile) are not stored, so such a band is refitted one way, against its configured
latency (its calibration is only its fallback anyway).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.clock.band import Latency
from agent.mcu.tap import Stream


def _chunks(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every stored chunk: its first sample's number, size, device time and spacing (or
    None), arrival, and where its samples are in the concatenated payloads."""
    from agent.wrist.imu_batch import columns

    out: list[dict[str, Any]] = []
    at = 0
    for p in payloads:
        c = columns(p)
        for j, n in enumerate(c["chunk_n"]):
            out.append({"index": int(c["index"][j]), "n": int(n),
                        "device_t0_ns": c["device_t0_ns"][j],
                        "period_ns": c["device_period_ns"][j],
                        "arrival_ns": int(c["arrival_ns"][j]), "at": at})
            at += int(n)
    return out


def hindsight(payloads: list[dict[str, Any]], profile: str, rate_hz: float,
              latency: Latency | None = None) -> Stream:
    """The band's samples (``payloads``, stored batches in order) with host times placed by
    its mapper's fit over the whole recording; ``latency``: the one the batches assumed
    (default: what their last clock state says). ``sample_bound_ns``: the fit's bound at
    each sample, its latency part left out."""
    from agent.mcu.tap import stream
    from agent.wrist.decode import ImuChunk
    from agent.wrist.timing import make_clock, observe

    s = stream(payloads, sort=False)
    chunks = _chunks(payloads)
    if not chunks:
        return s
    if latency is None:
        if s.latency_ns is None:
            raise ValueError("the band's batches do not say which latency they assumed")
        latency = Latency(s.latency_ns, s.latency_uncertainty_ns or 0, "config")
    clock = make_clock(profile, rate_hz, latency)
    empty = np.zeros((0, 3), np.int16)
    for c in sorted(chunks, key=lambda c: c["arrival_ns"]):
        observe(clock, ImuChunk(c["arrival_ns"], None, c["device_t0_ns"], c["period_ns"],
                                np.zeros((c["n"], 3), np.int16), 1.0, empty, 1.0,
                                index=c["index"]))
    if not clock.ready:
        raise ValueError("too few of the band's chunks to fit its clock")
    host = s.host_ns.copy()
    bound = np.zeros(len(host), np.int64)
    edge = _edge(clock)
    for c in chunks:
        key = float(c["index"]) if clock.kind == "rate" else (
            None if c["device_t0_ns"] is None else float(c["device_t0_ns"]))
        if key is None:
            raise ValueError("the band's chunks carry no device time to refit by")
        t = clock.peek(key, c["n"], c["period_ns"])
        i = np.arange(c["n"])
        host[c["at"]:c["at"] + c["n"]] = t.t0_ns + np.rint(i * t.period_ns).astype(np.int64)
        b = t.fit_ns + t.slew_ns
        if edge is not None:
            x1, x2, excess = edge
            last = key + (c["n"] - 1) * (c["period_ns"] or clock.nominal_period_ns)
            out = max(0.0, x1 - key, last - x2)
            b = min(b, round(excess * (1 + 2 * out / (x2 - x1))))
        bound[c["at"]:c["at"] + c["n"]] = b
    order = np.argsort(host, kind="stable")
    return Stream(host[order], s.acc[order], s.acc_scale[order], int(bound.max()),
                  bound[order], s.latency_ns, s.latency_uncertainty_ns)


def _edge(clock: Any) -> tuple[float, float, float] | None:
    """(x1, x2, excess): the hull edge the one-way line runs along (device ns of its two
    supports) and the fit's excess (its bound where the slope adds nothing: at x1).

    Each support is an observation up to the excess above the floor, so between them the
    line is within the excess of it, and outside them by the excess times (1 + 2 d / span)
    at a distance d beyond: tighter than the live bound's slope part (3 x excess x distance
    from x1 / window span), which must hold at the newest samples, where only x1 is known
    to be behind. None: not a hull edge (a rate fit, a slope held), or one support."""
    if clock.kind == "rate" or clock.young or clock.held:
        return None  # the line is not the hull's edge (a held or a young window's slope)
    snap = clock.fit.snapshot(max_points=1 << 30)
    hull = [x for x, _y in snap["hull"]]
    ref = snap["ref_device_ns"]
    if ref not in hull or hull.index(ref) + 1 >= len(hull):
        return None
    x2 = hull[hull.index(ref) + 1]
    excess = clock.peek(float(ref)).fit_ns
    return float(ref), float(x2), float(excess)


__all__ = ["hindsight"]
