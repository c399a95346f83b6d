"""WristSource: one BLE wrist band as an ``agent.sources.Source``.

The BLE loop (``agent.wrist.ble.BleLink``) calls ``_on_packet`` for every notification: it
pushes ``(arrival_ns, ticket)`` and the raw bytes into a preallocated ``ByteRing`` and
returns; nothing else happens on the event loop's hot path. Link events (connected, lost)
go to a small deque, stamped with the ticket of the next packet, so ``drain()`` (the writer's
thread) replays packets and events in the order they happened.

``drain()`` decodes with the profile's decoder, feeds the band's clock fit, and collects the
chunks into a batch; a batch is returned as one IMU message (``agent.wrist.imu_batch``) once
it spans ``ble.batch_seconds`` (fewer, larger messages compress far better), and earlier when
the link is lost, at a segment roll and at stop, so nothing waits across a gap or is lost.

Nothing is hidden: from ``start()`` until it streams, and from a lost link until it streams
again, the band has an open gap, written to ``GAP_TOPIC`` when it closes:

- never connected yet: cause ``not-connected:<last error>`` (``connecting`` when no attempt
  has failed yet), from ``start()`` to the first packet;
- a lost link: cause ``disconnect:<cause>``, from the last packet before the loss to the first
  packet after the reconnection, with the samples the band's sequence numbers say were lost
  (-1 when the profile cannot tell);
- a ring overflow (tickets missing): cause ``ring-overflow``.

An open gap is cut at every segment roll (``segment_metadata()`` is called as a new segment
opens): the part up to the roll is written at once, the rest when the gap closes (that part
carries the samples lost over the whole outage); the segment's metadata says whether the
band was streaming when it opened, and since when it was absent. A gap still open at stop
is closed with `` (not connected before stop)``.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass
from typing import Any

from agent.config import BleSection, WristBand
from agent.ring import ByteRing
from agent.sources import GAP_TOPIC, ChannelSpec, Message
from agent.timeline import Clock, monotonic_ns
from agent.wrist.ble import BackoffPolicy, BleLink, LinkEvent

META_DTYPE = [("arrival_ns", "<i8"), ("ticket", "<u8")]


@dataclass(slots=True)
class _OpenGap:
    start_ns: int
    lost_ns: int
    cause: str
    """``disconnect:<cause>``, or ``not-connected`` (the last error is added when written)"""
    connected: bool = False
    since_ns: int = 0
    """Start of the whole outage (``start_ns`` moves to each segment roll)."""


class WristSource:
    def __init__(self, band: WristBand, ble: BleSection, *, clock: Clock = monotonic_ns,
                 ring_bytes: int = 512 * 1024, max_packets: int = 8192,
                 policy: BackoffPolicy | None = None, scan_timeout: float = 5.0) -> None:
        from agent.wrist.profiles import load_profile

        self.band = band
        self.ble = ble
        self.name = band.name
        self.clock = clock
        self.profile = load_profile(band.profile)
        self.policy = policy or BackoffPolicy(cap_s=ble.backoff_max)
        self.scan_timeout = scan_timeout
        self.ring = ByteRing(ring_bytes, max_packets, META_DTYPE)
        self._ticket = 0  # producer side: packets offered so far
        self._events: collections.deque[tuple[int, LinkEvent]] = collections.deque()
        self._lock = threading.Lock()  # status counters read from other threads
        self._link: BleLink | None = None
        self._decoder: Any = None
        self._fit: Any = None
        self._next_ticket = 0
        self._last_arrival: int | None = None
        self._gap: _OpenGap | None = None
        self._last_failure = ""
        self._batch: list[Any] = []
        self._batch_n = 0
        self._batch_samples = max(1, int(ble.batch_seconds * band.rate_hz))
        self._batch_ns = int(ble.batch_seconds * 1e9)
        self._flush = False  # set by a segment roll or stop: write what is pending
        self._rolls = 0
        self._roll_ns: int | None = None
        self.stats = {"packets": 0, "samples": 0, "gaps": 0, "disconnects": 0,
                      "connect_failures": 0, "cache_clears": 0, "view_heals": 0,
                      "overflow_packets": 0, "samples_lost": 0, "messages": 0}
        self._rate_t0: tuple[int, int] | None = None
        self._rate_hz = 0.0
        self._make_decoder()

    # ------------------------------------------------------------ Source protocol

    def channels(self) -> list[ChannelSpec]:
        from agent.wrist.imu_batch import imu_channel

        return [imu_channel(self.name, self.band.profile)]

    def start(self) -> None:
        if not self.band.address:
            from agent.errors import SourceError

            raise SourceError("no address configured (run wearcap pair)", device=self.name)
        now = self.clock()
        self._gap = _OpenGap(now, now, "not-connected", since_ns=now)
        self._link = self._make_link()
        self._link.start()

    def _make_link(self) -> BleLink:
        return BleLink(
            name=self.name, address=self.band.address, adapter=self.ble.adapter,
            profile=self.profile, rate_hz=self.band.rate_hz, on_packet=self._on_packet,
            on_event=self._on_event, connect_timeout=self.ble.connect_timeout,
            scan_timeout=self.scan_timeout, policy=self.policy, clock=self.clock)

    def stop(self) -> None:
        if self._link is not None:
            self._link.stop()
        self._flush = True  # the writer's last drain() takes everything

    def drain(self) -> list[Message]:
        from agent.wrist.imu_batch import observe

        out: list[Message] = []
        ring = self.ring
        rate_chunks: list[Any] = []
        while (item := ring.pop()) is not None:
            rec, data = item
            ticket = int(rec["ticket"])
            arrival = int(rec["arrival_ns"])
            self._replay_events(ticket, out)
            if ticket != self._next_ticket:
                self._emit_batch(out)
                self._overflow_gap(ticket - self._next_ticket, arrival, out)
            self._next_ticket = ticket + 1
            self.stats["packets"] += 1
            new = self._decoder.feed(data, arrival)
            for c in new:
                observe(self._fit, c)
                self.stats["samples"] += c.n
            gap = self._gap
            if new and gap is not None and gap.connected:
                known = self._has_seq(new[0]) and gap.cause != "not-connected"
                self._close_gap(arrival, new[0].lost_before if known else -1, out)
            if new:
                self._batch.extend(new)
                self._batch_n += sum(c.n for c in new)
                rate_chunks.extend(new)
                if self._batch_full():
                    self._emit_batch(out)
            self._last_arrival = arrival
        self._replay_events(None, out)
        if self._roll_ns is not None:
            self._cut_at_roll(self._roll_ns, out)
            self._roll_ns = None
        if self._link is not None and not self._link.running and self._gap is not None:
            self._close_gap(self.clock(), -1, out, stopped=True)
        if self._flush or self._batch_full():
            self._emit_batch(out)
            self._flush = False
        if rate_chunks:
            self._note_rate(rate_chunks)
        out.sort(key=lambda m: m.log_time_ns)
        return out

    def segment_metadata(self) -> dict[str, str]:
        """Called as each segment opens; from the second call on, that is a roll."""
        self._rolls += 1
        if self._rolls > 1:
            self._roll_ns = self.clock()
            self._flush = True
        snap = self._fit.snapshot() if self._fit is not None else {}
        gap = self._gap
        meta = {"profile": self.band.profile, "address": self.band.address,
                "rate_hz": f"{self.band.rate_hz:g}", "clock_fit": json.dumps(snap),
                "batch_seconds": f"{self.ble.batch_seconds:g}",
                "streaming": "no" if gap is not None else "yes"}
        if gap is not None:
            meta["absent_since_ns"] = str(gap.since_ns)
            meta["absent_cause"] = self._cause(gap)
        return meta

    def status(self) -> dict[str, Any]:
        """Counters and state; ``streaming`` False with ``absent_s`` and ``absent_cause``
        while the band is configured but not delivering."""
        link = self._link
        state = link.lifecycle.state.value if link is not None else "idle"
        gap = self._gap
        return {
            "name": self.name, "address": self.band.address, "profile": self.band.profile,
            "state": state,
            "streaming": gap is None and state == "streaming",
            "absent_s": round((self.clock() - gap.since_ns) / 1e9, 1) if gap else 0.0,
            "absent_cause": self._cause(gap) if gap else "",
            "reconnects": link.lifecycle.reconnects if link is not None else 0,
            "rate_hz": round(self._rate_hz, 2),
            "malformed": int(getattr(self._decoder, "malformed", 0)),
            "ring_dropped": self.ring.dropped_records,
            "last_error": link.last_error if link is not None else "",
            "clock_converged": bool(getattr(self._fit, "converged", False)),
            **self.stats,
        }

    # ------------------------------------------------------------ BLE thread side

    def _on_packet(self, arrival_ns: int, data: bytes) -> None:
        self.ring.push(data, (arrival_ns, self._ticket))
        self._ticket += 1

    def _on_event(self, ev: LinkEvent) -> None:
        self._events.append((self._ticket, ev))

    # ------------------------------------------------------------ writer side

    def _make_decoder(self) -> None:
        from agent.wrist.decode import make_decoder
        from agent.wrist.imu_batch import make_fit

        self._decoder = make_decoder(self.band.profile, rate_hz=self.band.rate_hz)
        self._fit = make_fit(self.band.profile, self.band.rate_hz)

    @staticmethod
    def _has_seq(c: Any) -> bool:
        return c.seq is not None

    def _batch_full(self) -> bool:
        b = self._batch
        return bool(b) and (self._batch_n >= self._batch_samples
                            or b[-1].arrival_ns - b[0].arrival_ns >= self._batch_ns)

    def _emit_batch(self, out: list[Message]) -> None:
        if not self._batch:
            return
        from agent.wrist.imu_batch import imu_message

        out.append(imu_message(self.name, self._batch, self._fit, self.band.profile))
        self.stats["messages"] += 1
        self._batch = []
        self._batch_n = 0

    def _cause(self, gap: _OpenGap) -> str:
        if gap.cause == "not-connected":
            return f"not-connected:{self._last_failure or 'connecting'}"
        return gap.cause

    def _cut_at_roll(self, roll_ns: int, out: list[Message]) -> None:
        """Write the part of an open gap up to a segment roll; the rest stays open."""
        gap = self._gap
        if gap is None or roll_ns <= gap.start_ns:
            return
        self.stats["gaps"] += 1
        out.append(self._gap_message(gap.start_ns, roll_ns, -1,
                                     self._cause(gap) + " (continues after the roll)"))
        gap.start_ns = roll_ns

    def _replay_events(self, upto_ticket: int | None, out: list[Message]) -> None:
        ev_q = self._events
        while ev_q and (upto_ticket is None or ev_q[0][0] <= upto_ticket):
            _t, ev = ev_q.popleft()
            if ev.kind == "lost":
                self.stats["disconnects"] += 1
                self._emit_batch(out)  # a batch never spans a gap
                start = self._last_arrival if self._last_arrival is not None else ev.t_ns
                if self._gap is None:
                    self._gap = _OpenGap(start, ev.t_ns, f"disconnect:{ev.cause}",
                                         since_ns=start)
            elif ev.kind == "connected":
                if self._gap is not None:
                    self._gap.connected = True
            elif ev.kind == "stale-gatt-cleared":
                self.stats["cache_clears"] += 1
                self._last_failure = ev.cause
            elif ev.kind == "stale-view-cleared":
                self.stats["view_heals"] += 1
            elif ev.kind == "failed":
                self.stats["connect_failures"] += 1
                self._last_failure = ev.cause

    def _close_gap(self, end_ns: int, lost: int, out: list[Message], *,
                   stopped: bool = False) -> None:
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = self._cause(gap)
        self._last_failure = ""
        if stopped:
            cause += (" (not connected before stop)" if gap.cause == "not-connected"
                      else " (not reconnected before stop)")
        if lost > 0:
            self.stats["samples_lost"] += lost
        self.stats["gaps"] += 1
        out.append(self._gap_message(gap.start_ns, end_ns, lost, cause))

    def _overflow_gap(self, packets: int, arrival: int, out: list[Message]) -> None:
        self.stats["overflow_packets"] += packets
        self.stats["gaps"] += 1
        start = self._last_arrival if self._last_arrival is not None else arrival
        lost = packets * self.profile.samples_per_packet
        out.append(self._gap_message(start, arrival, lost, f"ring-overflow:{packets} packets"))

    def _gap_message(self, start: int, end: int, lost: int, cause: str) -> Message:
        return Message(GAP_TOPIC, start, {"stream": f"/wrist/{self.name}/imu",
                                          "start_ns": start, "end_ns": end, "lost": lost,
                                          "cause": cause})

    def _note_rate(self, chunks: list[Any]) -> None:
        now = chunks[-1].arrival_ns
        if self._rate_t0 is None:
            self._rate_t0 = (now, self.stats["samples"])
            return
        t0, n0 = self._rate_t0
        if now - t0 >= 2_000_000_000:
            self._rate_hz = (self.stats["samples"] - n0) * 1e9 / (now - t0)
            self._rate_t0 = (now, self.stats["samples"])
