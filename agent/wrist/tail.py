"""The end of a band's stream at a clean stop: the gaps that say why it ends where it does.

    stop_gaps(clock, last_chunk, rate_hz, stop_ns, end_ns) -> [(start, end, lost, cause)]

At a clean stop every stream runs to the recording's last instant, or a gap says why not:
samples the band took before the stop command that never reached the host (a partial frame
it kept, or in flight when the link closed), then the time after the band stopped sampling.
"""

from __future__ import annotations

from typing import Any

GapSpan = tuple[int, int, int, str]

IN_FLIGHT = ("stop: no sample after this reached the host; the band may have taken some "
             "before the stop command that did not arrive (a partial frame it kept, or in "
             "flight when the link closed)")
AFTER_STOP = "stop: the band was stopped before the recording ended; nothing was taken"


def stop_gaps(clock: Any, last: Any, rate_hz: float, stop_ns: int,
              end_ns: int | None) -> list[GapSpan]:
    """Gaps at the end of a stream whose last decoded chunk is ``last``, stopped at
    ``stop_ns`` in a recording that ends at ``end_ns`` (None: unknown)."""
    from agent.wrist import timing

    t = timing.peek(clock, last)
    period = t.period_ns
    last_ns = t.t0_ns + round((last.n - 1) * period)
    # short by more than two samples, beyond what the mapping itself may be off by
    slack = round(2 * max(period, 1e9 / max(rate_hz, 1.0))) + t.bound_ns
    out: list[GapSpan] = []
    if stop_ns - last_ns > slack:
        out.append((last_ns, stop_ns, -1, IN_FLIGHT))
        last_ns = stop_ns
    if end_ns is not None and end_ns - max(last_ns, stop_ns) > slack:
        out.append((max(last_ns, stop_ns), end_ns, 0, AFTER_STOP))
    return out
