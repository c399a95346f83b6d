"""What the simulated rig knows about a band's latency: the truth a calibration is scored on.

    true_ns = true_latency_ns(band_payloads, truth, assumed_ns)

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


def true_latency_ns(payloads: list[dict[str, Any]], truth: dict[str, Any], assumed_ns: int,
                    span_ns: tuple[int, int] | None = None) -> int:
    """The latency that would have made the band's stored times right on the median, over
    ``span_ns`` (the taps': what they can measure, the mapping's error then included)."""
    return int(assumed_ns + np.median(errors_ns(payloads, truth, span_ns)))
