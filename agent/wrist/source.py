"""WristSource: one BLE wrist band as an ``agent.sources.Source``.

The BLE loop (``agent.wrist.ble.BleLink``) calls ``_on_packet`` for every notification: it
pushes ``(arrival_ns, ticket)`` and the raw bytes into a preallocated ``ByteRing`` and
returns; nothing else happens on the event loop's hot path. Link events (connected, lost)
go to a small deque, stamped with the ticket of the next packet, so ``drain()`` (the writer's
thread) replays packets and events in the order they happened.

``drain()`` decodes with the profile's decoder, feeds the band's clock fit, and collects the
chunks into a batch; a batch is returned as one IMU message (``agent.wrist.imu_batch``) once
it spans ``ble.batch_seconds`` (fewer, larger messages compress far better), and earlier when
the stream breaks (a lost link, a ring overflow), at a segment roll, at ``flush()`` and at
stop, so nothing waits across a gap or is lost.

Decoders may hold chunks back (WitMotion holds ~2 s to find lost notifications from arrival
times). At every break of the stream, and at stop, the decoder is flushed and its chunks go
the normal way (fit, batch, message) before the break, so every chunk released after a break
came after it. The decoder is never reset: the sample numbering runs on across a break, which
is what lets it count the samples the band took meanwhile. ``flush()`` and segment rolls do
not flush the decoder (that would cost its loss detection): what it holds is written with the
next batch, in the next segment.

Nothing is hidden: every loss, every break of the stream and the time a band is absent is a
gap message, each sample counted once (the rules: ``agent.wrist.gaps``).

An open gap is cut at every segment roll (``segment_metadata()`` is called as a new segment
opens) and at ``flush()`` (called just before a segment is sealed): the part up to then is
written at once, the rest when the gap closes; the segment's metadata says whether the band
was streaming when it opened, and since when it was absent. A gap still open at stop is
closed with `` (not connected before stop)`` / `` (not reconnected before stop)``.
"""

from __future__ import annotations

import collections
import json
import struct
import threading
from typing import Any

from agent.config import BleSection, WristBand
from agent.ring import ByteRing
from agent.sources import ChannelSpec, Message
from agent.timeline import Clock, monotonic_ns
from agent.wrist.ble import BackoffPolicy, BleLink, LinkEvent
from agent.wrist.gaps import Break, OpenGap, gap_message, loss_cause, settle

META_DTYPE = [("arrival_ns", "<i8"), ("ticket", "<u8")]

_REQUESTED, _DONE = 1, 2  # flush() states: asked for; done by the last drain()


class WristSource:
    def __init__(self, band: WristBand, ble: BleSection, *, clock: Clock = monotonic_ns,
                 ring_bytes: int = 512 * 1024, max_packets: int = 8192,
                 policy: BackoffPolicy | None = None, scan_timeout: float = 5.0) -> None:
        from agent.wrist.profiles import load_profile

        self.band = band
        self.ble = ble
        self.name = band.name
        self.topic = f"/wrist/{band.name}/imu"
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
        self._gap: OpenGap | None = None
        self._break: Break | None = None
        self._prev: Any = None  # the last chunk taken (for the span of a loss)
        self._last_failure = ""
        self._batch: list[Any] = []
        self._batch_n = 0
        self._batch_samples = max(1, int(ble.batch_seconds * band.rate_hz))
        self._batch_ns = int(ble.batch_seconds * 1e9)
        self._flush = False  # set by a segment roll, flush() or stop: write what is pending
        self._flush_state = 0  # 0, _REQUESTED or _DONE (see flush())
        self._cut_ns: int | None = None  # cut an open gap here at the next drain()
        self._stopping = False
        self._stop_ns: int | None = None  # when stop() was called: the band stops sampling
        self._end_ns: int | None = None  # the recording's last instant (end_at())
        self._tail_done = False
        self._refused: dict[str, str] = {}  # stream -> the band's reason (control replies)
        self._band_info: dict[str, Any] = {}  # what the band says about itself (info char)
        self._rolls = 0
        self.stats = {"packets": 0, "samples": 0, "gaps": 0, "disconnects": 0,
                      "connect_failures": 0, "cache_clears": 0, "view_heals": 0,
                      "overflow_packets": 0, "samples_lost": 0, "messages": 0,
                      "loss_gaps": 0, "time_exchanges": 0}
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
        self._gap = OpenGap(now, now, "not-connected", since_ns=now)
        self._link = self._make_link()
        self._link.start()

    def _make_link(self) -> BleLink:
        return BleLink(
            name=self.name, address=self.band.address, adapter=self.ble.adapter,
            profile=self.profile, rate_hz=self.band.rate_hz, on_packet=self._on_packet,
            on_event=self._on_event, connect_timeout=self.ble.connect_timeout,
            scan_timeout=self.scan_timeout, policy=self.policy, clock=self.clock)

    def stop(self) -> None:
        self._stop_ns = self.clock()
        if self._link is not None:
            self._link.stop()
        self._stopping = True  # the writer's last drain() takes everything, held chunks too
        self._flush = True

    def end_at(self, end_ns: int) -> None:
        """The recording's last instant (its last frame), for the last ``drain()`` after
        ``stop()``: a stream that ends earlier is a gap to it, saying why."""
        self._end_ns = end_ns

    def flush(self) -> None:
        """Have the next ``drain()`` return the pending batch and the part of an open gap up
        to now (a break waiting for its count is written with its fallback).

        For the writer just before it seals a segment: ``flush()`` then ``drain()``, so the
        segment holds everything decoded so far. Writer's thread only (like ``drain()``), any
        time; calling it again before that drain changes nothing, and after it, writes only
        what came since. The roll that follows does not cut or flush again."""
        self._cut_ns = self.clock()
        self._flush = True
        self._flush_state = _REQUESTED

    def drain(self) -> list[Message]:
        out: list[Message] = []
        if self._flush_state == _DONE:
            self._flush_state = 0  # a drain since the flush: the next roll cuts again
        ring = self.ring
        dec = self._decoder
        while (item := ring.pop()) is not None:
            rec, data = item
            ticket = int(rec["ticket"])
            arrival = int(rec["arrival_ns"])
            self._replay_events(ticket, out)
            if ticket != self._next_ticket:
                self._overflow(ticket - self._next_ticket, arrival, out)
            self._next_ticket = ticket + 1
            self.stats["packets"] += 1
            bad = dec.malformed
            new = dec.feed(data, arrival)
            gap = self._gap
            if gap is not None and gap.connected and dec.malformed == bad:
                self._resume(arrival, out)
            if new:
                self._take(new, out)
            self._last_arrival = arrival
        self._replay_events(None, out)
        if self._stopping:
            self._take(self._flush_decoder(), out)
            self._settle(None, out)
            self._tail(out)
        if self._cut_ns is not None:
            self._cut(self._cut_ns, out)
            self._cut_ns = None
        if self._link is not None and not self._link.running and self._gap is not None:
            self._close_gap(self.clock(), out, stopped=True)
        if self._flush or self._batch_full():
            self._emit_batch(out)
            self._flush = False
        if self._flush_state == _REQUESTED:
            self._flush_state = _DONE
        out.sort(key=lambda m: m.log_time_ns)
        return out

    def segment_metadata(self) -> dict[str, str]:
        """Called as each segment opens; from the second call on, that is a roll (unless
        ``flush()`` just did its work)."""
        self._rolls += 1
        if self._rolls > 1 and not self._flush_state:
            self._cut_ns = self.clock()
            self._flush = True
        if self._flush_state == _DONE:
            self._flush_state = 0
        snap = self._fit.snapshot() if self._fit is not None else {}
        gap = self._gap
        meta = {"profile": self.band.profile, "address": self.band.address,
                "rate_hz": f"{self.band.rate_hz:g}", "clock_fit": json.dumps(snap),
                "batch_seconds": f"{self.ble.batch_seconds:g}",
                "streaming": "no" if gap is not None else "yes"}
        if gap is not None:
            meta["absent_since_ns"] = str(gap.since_ns)
            meta["absent_cause"] = self._cause(gap)
        if self._refused:
            meta["refused_streams"] = json.dumps(self._refused, sort_keys=True)
        if self._band_info:
            meta["band_info"] = json.dumps(self._band_info, sort_keys=True)
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
            "clock_bound_ns": getattr(self._fit, "error_bound_ns", None),
            "clock_drift_ppm": getattr(self._fit, "drift_ppm", None),
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

    def _flush_decoder(self) -> list[Any]:
        flush = getattr(self._decoder, "flush", None)  # a decoder that holds nothing may lack it
        return list(flush()) if flush is not None else []

    def _take(self, chunks: list[Any], out: list[Message]) -> None:
        """Decoded chunks, in order: fit, loss gaps, batch."""
        from agent.wrist.imu_batch import observe

        fit = self._fit
        for c in chunks:
            observe(fit, c)
            self.stats["samples"] += c.n
            covered = self._break is not None and self._settle(c, out)
            if c.lost_before > 0 and not covered:
                self._loss_gap(c, out)
            self._batch.append(c)
            self._batch_n += c.n
            self._prev = c
            if self._batch_full():
                self._emit_batch(out)
        if chunks:
            self._note_rate(chunks)

    def _break_stream(self, out: list[Message]) -> None:
        """The stream breaks (lost link, ring overflow): what the decoder holds comes before
        it, a break still waiting for its count gets none, and no batch spans the break."""
        self._take(self._flush_decoder(), out)
        self._settle(None, out)
        self._emit_batch(out)

    def _batch_full(self) -> bool:
        b = self._batch
        return bool(b) and (self._batch_n >= self._batch_samples
                            or b[-1].arrival_ns - b[0].arrival_ns >= self._batch_ns)

    def _emit_batch(self, out: list[Message]) -> None:
        if not self._batch:
            return
        from agent.wrist.imu_batch import imu_message

        out.append(imu_message(self.name, self._batch, self._fit, self.band.profile,
                               absent=self._refused))
        self.stats["messages"] += 1
        self._batch = []
        self._batch_n = 0

    def _cause(self, gap: OpenGap) -> str:
        if gap.cause == "not-connected":
            return f"not-connected:{self._last_failure or 'connecting'}"
        return gap.cause

    def _cut(self, cut_ns: int, out: list[Message]) -> None:
        """A roll or ``flush()``: write the part of an open gap up to ``cut_ns`` (the rest
        stays open), and a break still waiting for its count with its fallback."""
        b = self._break
        if b is not None and b.written is None:
            b.written = b.fallback
            self._gap_out(b.start_ns, b.end_ns, b.fallback, b.cause, out)
        gap = self._gap
        if gap is None or cut_ns <= gap.start_ns:
            return
        self._gap_out(gap.start_ns, cut_ns, -1, self._cause(gap) + " (continues after the roll)",
                      out)
        gap.start_ns = cut_ns

    def _replay_events(self, upto_ticket: int | None, out: list[Message]) -> None:
        ev_q = self._events
        while ev_q and (upto_ticket is None or ev_q[0][0] <= upto_ticket):
            _t, ev = ev_q.popleft()
            if ev.kind == "lost":
                self.stats["disconnects"] += 1
                self._break_stream(out)
                start = self._last_arrival if self._last_arrival is not None else ev.t_ns
                if self._gap is None:
                    self._gap = OpenGap(start, ev.t_ns, f"disconnect:{ev.cause}",
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
            elif ev.kind == "refused":
                stream, _, reason = ev.cause.partition(":")
                self._refuse(stream, reason)
            elif ev.kind == "info":
                self._apply_info(ev.data)
            elif ev.kind == "time":
                self._time_exchange(ev.data)

    def _time_exchange(self, data: bytes) -> None:
        """One two-way time exchange (open profile v2) into the band's clock, which then
        observes the latency instead of assuming it (agent.clock.band)."""
        fit = self._fit
        if getattr(fit, "kind", "") != "two-way" or len(data) != 32:
            return
        sent, rx_us, tx_us, arrival = struct.unpack("<QQQQ", data)
        fit.observe_exchange(sent, rx_us * 1000, arrival, tx_us * 1000)
        self.stats["time_exchanges"] += 1

    def _refuse(self, stream: str, reason: str) -> None:
        """The band refused ``stream``: it is absent (never filled), with the band's reason."""
        self._refused[stream] = reason
        set_streams = getattr(self._decoder, "set_streams", None)
        if set_streams is not None and stream in ("acc", "gyro"):
            set_streams(acc="acc" not in self._refused, gyro="gyro" not in self._refused)

    def _apply_info(self, data: bytes) -> None:
        """The band's info characteristic: its own scales and rate replace the profile's
        defaults; one it cannot read is said so in the segment metadata."""
        set_info = getattr(self._decoder, "set_info", None)
        if set_info is None:
            return
        try:
            set_info(data)
        except ValueError as exc:
            self._band_info = {"error": str(exc), "raw": data.hex()}
            return
        info = self._decoder.info
        self._band_info = {"rate_hz": info.rate_hz, "acc_fs_g": info.acc_fs_g,
                           "gyro_fs_dps": info.gyro_fs_dps, "acc_scale": info.acc_scale,
                           "gyro_scale": info.gyro_scale, "gyro": info.gyro,
                           "version": info.version, "clock_tick_ns": info.clock_tick_ns,
                           "min_rate_hz": info.min_rate_hz, "max_rate_hz": info.max_rate_hz,
                           "time_exchange": info.two_way}
        if not info.gyro:
            self._refused.setdefault("gyro", "the band has no gyroscope (info characteristic)")

    def _tail(self, out: list[Message]) -> None:
        """At stop, once: the stream should run to the recording's end. If it stops short,
        gaps say why: samples taken before the stop command that never arrived (a partial
        frame, or in flight when the link closed), then the time after the band stopped."""
        if self._tail_done or self._stop_ns is None:
            return
        self._tail_done = True
        if self._gap is not None or self._prev is None:
            return  # not streaming: the open gap runs to the end (closed below)
        from agent.wrist import timing

        t = timing.peek(self._fit, self._prev)
        period = t.period_ns
        last = t.t0_ns + round((self._prev.n - 1) * period)
        # short by more than two samples, beyond what the mapping itself may be off by
        slack = round(2 * max(period, 1e9 / max(self.band.rate_hz, 1.0))) + t.bound_ns
        stop = self._stop_ns
        if stop - last > slack:
            self._gap_out(last, stop, -1, "stop: no sample after this reached the host; "
                          "the band may have taken some before the stop command that did not "
                          "arrive (a partial frame it kept, or in flight when the link closed)",
                          out)
            last = stop
        end = self._end_ns
        if end is not None and end - max(last, stop) > slack:
            self._gap_out(max(last, stop), end, 0, "stop: the band was stopped before the "
                          "recording ended; nothing was taken", out)

    def _resume(self, arrival: int, out: list[Message]) -> None:
        """The first packet after a (re)connection: the open gap ends here. Its count comes
        with the first chunk decoded after it (see the module doc)."""
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = self._cause(gap)
        self._last_failure = ""
        if gap.cause == "not-connected":  # nothing streamed before: nothing to count
            self._gap_out(gap.start_ns, arrival, -1, cause, out)
            return
        self._settle(None, out)
        self._break = Break(gap.start_ns, arrival, cause, -1)

    def _settle(self, c: Any, out: list[Message]) -> bool:
        """Write the waiting break once chunk ``c`` gives its count, or with its fallback
        (see ``agent.wrist.gaps.settle``). True: ``c``'s ``lost_before`` was the break's."""
        b = self._break
        if b is None:
            return False
        got = settle(b, c)
        if got is None:
            return False  # not yet
        counted, lost = got
        self._break = None
        if b.written is None:
            self._gap_out(b.start_ns, b.end_ns, lost, b.cause, out)
        elif counted and lost > max(b.written, 0):  # the fallback went out first (a roll)
            self._gap_out(b.start_ns, b.end_ns, lost - max(b.written, 0),
                          f"{loss_cause(c)} (counted after the {b.cause} gap was written)", out)
        return counted

    def _close_gap(self, end_ns: int, out: list[Message], *, stopped: bool = False) -> None:
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = self._cause(gap)
        self._last_failure = ""
        if stopped:
            cause += (" (not connected before stop)" if gap.cause == "not-connected"
                      else " (not reconnected before stop)")
        self._gap_out(gap.start_ns, end_ns, -1, cause, out)

    def _overflow(self, packets: int, arrival: int, out: list[Message]) -> None:
        """Tickets missing: the ring was full and dropped ``packets`` notifications."""
        self._break_stream(out)
        self.stats["overflow_packets"] += packets
        start = self._last_arrival if self._last_arrival is not None else arrival
        self._break = Break(start, arrival, f"ring-overflow:{packets} packets",
                             packets * self.profile.samples_per_packet)

    def _loss_gap(self, c: Any, out: list[Message]) -> None:
        """Samples a decoder says are missing before ``c``: from the host time of the last
        sample before to that of ``c``'s first."""
        from agent.wrist.imu_batch import host_times

        end, _p = host_times(self._fit, c)
        prev = self._prev
        start = end
        if prev is not None:
            t0, period = host_times(self._fit, prev)
            start = min(end, t0 + round((prev.n - 1) * period))
        self.stats["loss_gaps"] += 1
        self._gap_out(start, end, c.lost_before, loss_cause(c), out)

    def _gap_out(self, start: int, end: int, lost: int, cause: str,
                 out: list[Message]) -> None:
        self.stats["gaps"] += 1
        if lost > 0:
            self.stats["samples_lost"] += lost
        out.append(gap_message(self.topic, start, end, lost, cause))

    def _note_rate(self, chunks: list[Any]) -> None:
        now = chunks[-1].arrival_ns
        if self._rate_t0 is None:
            self._rate_t0 = (now, self.stats["samples"])
            return
        t0, n0 = self._rate_t0
        if now - t0 >= 2_000_000_000:
            self._rate_hz = (self.stats["samples"] - n0) * 1e9 / (now - t0)
            self._rate_t0 = (now, self.stats["samples"])
