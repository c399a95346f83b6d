"""WristSource: one BLE wrist band as an ``agent.sources.Source``.

The BLE loop thread (``agent.wrist.ble.BleLink``) calls ``_on_packet`` for every notification:
it pushes ``(arrival_ns, ticket)`` and the raw bytes into a preallocated ``ByteRing`` and
returns; nothing else happens on the event loop's hot path. Link events (connected, lost)
go to a small deque, stamped with the ticket of the next packet, so ``drain()`` (the writer's
thread) replays packets and events in the order they happened.

``drain()`` decodes with the profile's decoder, feeds the band's clock fit, and returns one
IMU batch message (``agent.wrist.imu_batch``) plus gap messages (``GAP_TOPIC``):

- a disconnect is a gap from the last packet before the loss to the first packet after the
  reconnection, with cause ``disconnect:<cause>`` and the samples the band's sequence numbers
  say were lost (-1 when the profile cannot tell);
- a ring overflow (tickets missing) is a gap with cause ``ring-overflow``.
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
    connected: bool = False


class WristSource:
    def __init__(self, band: WristBand, ble: BleSection, *, clock: Clock = monotonic_ns,
                 ring_bytes: int = 512 * 1024, max_packets: int = 8192,
                 policy: BackoffPolicy | None = None) -> None:
        from agent.wrist.profiles import load_profile

        self.band = band
        self.ble = ble
        self.name = band.name
        self.clock = clock
        self.profile = load_profile(band.profile)
        self.policy = policy or BackoffPolicy(cap_s=ble.backoff_max)
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
        self.stats = {"packets": 0, "samples": 0, "gaps": 0, "disconnects": 0,
                      "connect_failures": 0, "cache_clears": 0, "overflow_packets": 0,
                      "samples_lost": 0}
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
        self._link = BleLink(
            name=self.name, address=self.band.address, adapter=self.ble.adapter,
            profile=self.profile, rate_hz=self.band.rate_hz, on_packet=self._on_packet,
            on_event=self._on_event, connect_timeout=self.ble.connect_timeout,
            policy=self.policy, clock=self.clock)
        self._link.start()

    def stop(self) -> None:
        if self._link is not None:
            self._link.stop()

    def drain(self) -> list[Message]:
        from agent.wrist.imu_batch import imu_message, observe

        out: list[Message] = []
        chunks: list[Any] = []
        ring = self.ring
        while (item := ring.pop()) is not None:
            rec, data = item
            ticket = int(rec["ticket"])
            arrival = int(rec["arrival_ns"])
            self._replay_events(ticket, out)
            if ticket != self._next_ticket:
                self._overflow_gap(ticket - self._next_ticket, arrival, out)
            self._next_ticket = ticket + 1
            self.stats["packets"] += 1
            new = self._decoder.feed(data, arrival)
            for c in new:
                observe(self._fit, c)
                self.stats["samples"] += c.n
            if new and self._gap is not None and self._gap.connected:
                self._close_gap(arrival, new[0].lost_before if self._has_seq(new[0]) else -1,
                                out)
            chunks.extend(new)
            self._last_arrival = arrival
        self._replay_events(None, out)
        if self._link is not None and not self._link_alive() and self._gap is not None:
            self._close_gap(self.clock(), -1, out, stopped=True)
        if chunks:
            self._note_rate(chunks)
            out.append(imu_message(self.name, chunks, self._fit, self.band.profile))
        out.sort(key=lambda m: m.log_time_ns)
        return out

    def segment_metadata(self) -> dict[str, str]:
        snap = self._fit.snapshot() if self._fit is not None else {}
        return {"profile": self.band.profile, "address": self.band.address,
                "rate_hz": f"{self.band.rate_hz:g}", "clock_fit": json.dumps(snap)}

    def status(self) -> dict[str, Any]:
        link = self._link
        state = link.lifecycle.state.value if link is not None else "idle"
        return {
            "name": self.name, "address": self.band.address, "profile": self.band.profile,
            "state": state,
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

    def _link_alive(self) -> bool:
        link = self._link
        return link is not None and link._thread is not None and link._thread.is_alive()

    def _replay_events(self, upto_ticket: int | None, out: list[Message]) -> None:
        ev_q = self._events
        while ev_q and (upto_ticket is None or ev_q[0][0] <= upto_ticket):
            _t, ev = ev_q.popleft()
            if ev.kind == "lost":
                self.stats["disconnects"] += 1
                start = self._last_arrival if self._last_arrival is not None else ev.t_ns
                if self._gap is None:
                    self._gap = _OpenGap(start, ev.t_ns, f"disconnect:{ev.cause}")
            elif ev.kind == "connected":
                if self._gap is not None:
                    self._gap.connected = True
            elif ev.kind == "stale-gatt-cleared":
                self.stats["cache_clears"] += 1
            elif ev.kind == "failed":
                self.stats["connect_failures"] += 1

    def _close_gap(self, end_ns: int, lost: int, out: list[Message], *,
                   stopped: bool = False) -> None:
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = gap.cause + (" (not reconnected before stop)" if stopped else "")
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
