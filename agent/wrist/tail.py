"""The end of a band's stream at a clean stop: the gaps that say why it ends where it does.

    stop_gaps(clock, last_chunk, rate_hz, stop_ns, end_ns, next_seq=None, unknown="")
        -> [(start_ns, end_ns, lost, cause)]

At a clean stop every stream runs to the recording's last instant, or a gap says why not:
samples the band took before the stop command that never reached the host (a partial frame
it kept, or in flight when the link closed), then the time after the band stopped sampling.

Where the band says at stop how many samples it sent (the open profile's stop reply carries
``next_seq``, the seq after its last sample: docs/wrist-profile.md), the samples that did not
arrive are counted exactly. Elsewhere the stream can only judge from time: a stream that ends
more than two samples (and the mapping's own bound) before the stop is a gap with ``lost``
-1, and its cause says why the count is unknown (``unknown``).
"""

from __future__ import annotations

import struct
from typing import Any

GapSpan = tuple[int, int, int, str]
SEQ_MOD = 1 << 32

IN_FLIGHT = ("stop: no sample after this reached the host; the band may have taken some "
             "before the stop command that did not arrive (a partial frame it kept, or in "
             "flight when the link closed)")
AFTER_STOP = "stop: the band was stopped before the recording ended; nothing was taken"


def next_seq(reply_params: bytes | None) -> int | None:
    """The open profile's stop reply: ``<u32 next_seq>`` (None: no reply, or too short)."""
    if reply_params is None or len(reply_params) < 4:
        return None
    return int(struct.unpack_from("<I", reply_params)[0])


def stop_gaps(clock: Any, last: Any, rate_hz: float, stop_ns: int, end_ns: int | None,
              next_seq: int | None = None, unknown: str = "") -> list[GapSpan]:
    """Gaps at the end of a stream whose last decoded chunk is ``last``, stopped at
    ``stop_ns`` in a recording that ends at ``end_ns`` (None: unknown). ``next_seq``: the
    band's own count at stop (the seq after the last sample it sent), if it gave one;
    ``unknown``: why it did not (written into the cause)."""
    from agent.wrist import timing

    t = timing.peek(clock, last)
    period = t.period_ns
    last_ns = t.t0_ns + round((last.n - 1) * period)
    # short by more than two samples, beyond what the mapping itself may be off by
    slack = round(2 * max(period, 1e9 / max(rate_hz, 1.0))) + t.bound_ns
    out: list[GapSpan] = []
    missing = None
    if next_seq is not None and last.seq is not None:
        missing = (next_seq - (last.seq + last.n)) % SEQ_MOD
        if missing >= SEQ_MOD // 2:
            missing = None  # behind what was received: not this stream's count
    if missing is not None:
        if missing:
            end = last_ns + round(missing * period)
            out.append((last_ns, max(end, last_ns + 1), missing,
                        f"stop: {missing} samples the band sent before its stop reply "
                        f"(next_seq {next_seq}) did not reach the host"))
            last_ns = end
        elif stop_ns - last_ns > slack:
            out.append((last_ns, stop_ns, 0, "stop: the band took no sample after this "
                        f"before the stop command (its stop reply: next_seq {next_seq})"))
        last_ns = max(last_ns, stop_ns)
    elif stop_ns - last_ns > slack:
        out.append((last_ns, stop_ns, -1, f"{IN_FLIGHT}; {unknown}" if unknown else IN_FLIGHT))
        last_ns = stop_ns
    if end_ns is not None and end_ns - max(last_ns, stop_ns) > slack:
        out.append((max(last_ns, stop_ns), end_ns, 0, AFTER_STOP))
    return out
