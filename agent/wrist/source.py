"""WristSource: one BLE wrist band as an ``agent.sources.Source``, a thin adapter.

It owns what the BLE thread and the writer's thread share, and nothing else:

- a link from an injected factory (``agent.wrist.link.LinkFactory``; default
  ``agent.wrist.ble.BleLink``), whose notification callback pushes ``(arrival_ns, ticket)``
  and the raw bytes into a preallocated ``ByteRing`` and returns: nothing else happens on
  the event loop's hot path;
- link events, queued stamped with the ticket of the next packet;
- the band's sans-IO stream (``agent.wrist.stream.BandStream``), into which ``drain()`` (the
  writer's thread) replays packets and events in the order they happened, missing tickets
  as dropped notifications. Everything about batches, gaps, flushing and the stop tail is
  the stream's.
"""

from __future__ import annotations

import collections
from typing import Any

from agent.config import BleSection, WristBand
from agent.ring import ByteRing
from agent.sources import ChannelSpec, Message
from agent.timeline import Clock, monotonic_ns
from agent.wrist.ble import BackoffPolicy, BleLink
from agent.wrist.link import Link, LinkEvent, LinkFactory
from agent.wrist.stream import BandStream

META_DTYPE = [("arrival_ns", "<i8"), ("ticket", "<u8")]


class WristSource:
    def __init__(self, band: WristBand, ble: BleSection, *, clock: Clock = monotonic_ns,
                 ring_bytes: int = 512 * 1024, max_packets: int = 8192,
                 policy: BackoffPolicy | None = None, scan_timeout: float = 5.0,
                 link_factory: LinkFactory = BleLink) -> None:
        self.band = band
        self.ble = ble
        self.name = band.name
        self.clock = clock
        self.stream = BandStream(band, ble.batch_seconds)
        self.topic = self.stream.topic
        self.profile = self.stream.profile
        self.policy = policy or BackoffPolicy(cap_s=ble.backoff_max)
        self.scan_timeout = scan_timeout
        self.link_factory = link_factory
        self.ring = ByteRing(ring_bytes, max_packets, META_DTYPE)
        self._ticket = 0  # producer side: packets offered so far
        self._next_ticket = 0  # consumer side
        self._events: collections.deque[tuple[int, LinkEvent]] = collections.deque()
        self.link: Link | None = None

    @property
    def stats(self) -> dict[str, int]:
        return self.stream.stats

    # ------------------------------------------------------------ Source protocol

    def channels(self) -> list[ChannelSpec]:
        from agent.wrist.imu_batch import imu_channel

        return [imu_channel(self.name, self.band.profile)]

    def start(self) -> None:
        if not self.band.address:
            from agent.errors import SourceError

            raise SourceError("no address configured (run wearcap pair)", device=self.name)
        self.stream.start(self.clock())
        self.link = self.link_factory(
            name=self.name, address=self.band.address, adapter=self.ble.adapter,
            profile=self.profile, rate_hz=self.band.rate_hz, on_packet=self._on_packet,
            on_event=self._on_event, connect_timeout=self.ble.connect_timeout,
            scan_timeout=self.scan_timeout, policy=self.policy, clock=self.clock,
            aimer=self.stream.aimer, notify_path=self.band.notify)
        self.link.start()

    def stop(self) -> None:
        stop_ns = self.clock()
        if self.link is not None:
            self.link.stop()
        self.stream.stop(stop_ns)  # the writer's next drain() takes everything, held too

    def end_at(self, end_ns: int) -> None:
        """The recording's last instant (its last frame), for the last ``drain()`` after
        ``stop()``: a stream that ends earlier is a gap to it, saying why."""
        self.stream.end_at(end_ns)

    def flush(self) -> None:
        """Have the next ``drain()`` return the pending batch and the part of an open gap up
        to now. For the writer just before it seals a segment: ``flush()`` then ``drain()``.
        Writer's thread only; the roll that follows does not cut or flush again
        (``agent.wrist.flushing``)."""
        self.stream.flush(self.clock())

    def drain(self) -> list[Message]:
        ring, stream = self.ring, self.stream
        for (arrival, ticket), data in ring.pop_all():  # META_DTYPE's order
            self._replay_events(ticket)
            if ticket != self._next_ticket:
                stream.missed(ticket - self._next_ticket, arrival)
            self._next_ticket = ticket + 1
            stream.feed(arrival, data)
        self._replay_events(None)
        link = self.link
        return stream.drain(self.clock(), link_ended=link is not None and not link.running)

    def segment_metadata(self) -> dict[str, str]:
        """Called as each segment opens; from the second call on, that is a roll. With the
        link's notify path once it is known (``notify_path``, and ``notify_fallback``: why
        AcquireNotify was given up)."""
        meta = self.stream.open_segment(self.clock())
        meta.update(self._notify_meta())
        return meta

    def _notify_meta(self) -> dict[str, str]:
        link = self.link
        via = str(getattr(link, "notify_via", ""))
        fallback = str(getattr(link, "notify_fallback", ""))
        out = {"notify_path": via} if via else {}
        if fallback:
            out["notify_fallback"] = fallback
        return out

    def status(self) -> dict[str, Any]:
        """Counters and state; ``streaming`` False with ``absent_s`` and ``absent_cause``
        while the band is configured but not delivering."""
        link, s = self.link, self.stream
        state = link.lifecycle.state.value if link is not None else "idle"
        gap = s.absent
        fit = s.fit
        return {
            "name": self.name, "address": self.band.address, "profile": self.band.profile,
            "state": state,
            "streaming": gap is None and state == "streaming",
            "absent_s": round((self.clock() - gap.since_ns) / 1e9, 1) if gap else 0.0,
            "absent_cause": s.cause(gap) if gap else "",
            "reconnects": link.lifecycle.reconnects if link is not None else 0,
            "rate_hz": round(s.rate_hz, 2),
            "malformed": int(getattr(s.decoder, "malformed", 0)),
            "ring_dropped": self.ring.dropped_records,
            "last_error": link.last_error if link is not None else "",
            "clock_converged": bool(getattr(fit, "converged", False)),
            "clock_bound_ns": _bound_ns(fit),
            "clock_drift_ppm": getattr(fit, "drift_ppm", None),
            "notify_path": str(getattr(link, "notify_via", "")),
            "notify_fallback": str(getattr(link, "notify_fallback", "")),
            **s.stats,
        }

    # ------------------------------------------------------------ the link's thread

    def _on_packet(self, arrival_ns: int, data: bytes) -> None:
        self.ring.push(data, (arrival_ns, self._ticket))
        self._ticket += 1

    def _on_event(self, ev: LinkEvent) -> None:
        self._events.append((self._ticket, ev))

    # ------------------------------------------------------------ the writer's thread

    def _replay_events(self, upto_ticket: int | None) -> None:
        ev_q = self._events
        while ev_q and (upto_ticket is None or ev_q[0][0] <= upto_ticket):
            self.stream.event(ev_q.popleft()[1])


def _bound_ns(fit: Any) -> int | None:
    """The mapping's current error bound, as the segment metadata records it (a live
    status without it shows no clock quality at all)."""
    if fit is None:
        return None
    try:
        bound = fit.snapshot().get("error_bound_ns")
    except Exception:  # a fit not yet ready: no figure, never a failed status
        return None
    return int(bound) if isinstance(bound, (int, float)) else None
