"""One wrist band's stream, sans-IO: notifications, arrival times and link events in; IMU batch
messages and gap messages out. No radio, no threads, no clock: every input carries its time.

    s = BandStream(band, batch_seconds)
    s.start(now)                    # the band is configured: absent until its first packet
    s.feed(arrival_ns, data)        # one notification, in arrival order
    s.missed(packets, arrival_ns)   # notifications dropped before the stream saw them
    s.event(link_event)             # connected, lost, refused, info, time, stopped, ...
    s.flush(now); s.open_segment(now) -> metadata; s.stop(now); s.end_at(end_ns)
    s.drain(now, link_ended) -> [Message]   # what is ready, in time order

The adapter (``agent.wrist.source.WristSource``) owns the ring the BLE thread pushes into and
replays packets and events into a stream in the order they happened.

Decoding: the profile's decoder; its chunks feed the band's clock (``agent.wrist.timing``)
and are collected into a batch, written as one IMU message (``agent.wrist.imu_batch``) once
it spans ``batch_seconds``, and earlier when the stream breaks (a lost link, dropped
notifications), at a segment roll, at ``flush()`` and at stop. When it writes is one
transition table (``agent.wrist.flushing``).

At every break, and at stop, the decoder is flushed and its chunks go the normal way before
the break, so every chunk released after a break came after it. The decoder is never reset:
its sample numbering runs on across a break, which is what lets it count the samples the band
took meanwhile. Rolls and ``flush()`` do not flush the decoder (that would cost its loss
detection): what it holds goes with the next batch, in the next segment.

Nothing is hidden: every loss, every break and the time a band is absent is a gap message,
each sample counted once (the rules: ``agent.wrist.gaps``). An open gap is cut at every
roll and at ``flush()``: the part up to then is written at once, the rest when it closes.
A gap still open when the link has ended is closed with `` (not connected before stop)`` /
`` (not reconnected before stop)``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from agent.config import WristBand
from agent.sources import Message
from agent.wrist import registry, tail
from agent.wrist.flushing import Flushing
from agent.wrist.gaps import (
    Break,
    OpenGap,
    estimate_cause,
    estimated_loss,
    gap_message,
    loss_cause,
    settle,
)
from agent.wrist.link import LinkEvent

STATS = ("packets", "samples", "gaps", "disconnects", "connect_failures", "cache_clears",
         "view_heals", "overflow_packets", "samples_lost", "messages", "loss_gaps",
         "time_exchanges")


class BandStream:
    def __init__(self, band: WristBand, batch_seconds: float) -> None:
        from agent.wrist.profiles import load_profile

        self.band = band
        self.name = band.name
        self.topic = f"/wrist/{band.name}/imu"
        self.profile = load_profile(band.profile)
        self.batch_seconds = batch_seconds
        self.stats = dict.fromkeys(STATS, 0)
        self.flushing = Flushing()
        self._out: list[Message] = []
        self._gap: OpenGap | None = None
        self._break: Break | None = None
        self._prev: Any = None  # the last chunk taken (for the span of a loss)
        self._last_arrival: int | None = None
        self._last_failure = ""
        self._batch: list[Any] = []
        self._batch_n = 0
        self._batch_samples = max(1, int(batch_seconds * band.rate_hz))
        self._batch_ns = int(batch_seconds * 1e9)
        self._segments = 0
        self._stop_ns: int | None = None  # when stop() was called: the band stops sampling
        self._end_ns: int | None = None  # the recording's last instant (end_at())
        self._stop_reply: bytes | None = None  # the band's reply to the stop command
        self._tail_done = False
        self.refused: dict[str, str] = {}  # stream -> the band's reason (control replies)
        self.band_info: dict[str, Any] = {}  # what the band says about itself (info char)
        self._rate_t0: tuple[int, int] | None = None
        self.rate_hz = 0.0
        self.decoder, self.fit = self._make_decoder()
        from agent.wrist.timing import PingAimer

        self.aimer = PingAimer()
        """Where the band's connection events are, for the link's time requests (open
        profile v2): fed with every chunk and every exchange."""

    # ------------------------------------------------------------ inputs

    def start(self, now_ns: int) -> None:
        self._gap = OpenGap(now_ns, now_ns, "not-connected", since_ns=now_ns)

    def feed(self, arrival_ns: int, data: bytes) -> None:
        self.stats["packets"] += 1
        dec = self.decoder
        bad = dec.malformed
        new = dec.feed(data, arrival_ns)
        gap = self._gap
        if gap is not None and gap.connected and dec.malformed == bad:
            self._resume(arrival_ns)
        if new:
            self._take(new)
        self._last_arrival = arrival_ns

    def missed(self, packets: int, arrival_ns: int) -> None:
        """``packets`` notifications were dropped before this one (a full ring)."""
        self._break_stream()
        self.stats["overflow_packets"] += packets
        start = self._last_arrival if self._last_arrival is not None else arrival_ns
        self._break = Break(start, arrival_ns, f"ring-overflow:{packets} packets",
                            packets * self.profile.samples_per_packet)

    def event(self, ev: LinkEvent) -> None:
        kind = ev.kind
        if kind == "lost":
            self.stats["disconnects"] += 1
            self._break_stream()
            start = self._last_arrival if self._last_arrival is not None else ev.t_ns
            if self._gap is None:
                self._gap = OpenGap(start, ev.t_ns, f"disconnect:{ev.cause}", since_ns=start)
        elif kind == "connected":
            if self._gap is not None:
                self._gap.connected = True
        elif kind == "stale-gatt-cleared":
            self.stats["cache_clears"] += 1
            self._last_failure = ev.cause
        elif kind == "stale-view-cleared":
            self.stats["view_heals"] += 1
        elif kind == "failed":
            self.stats["connect_failures"] += 1
            self._last_failure = ev.cause
        elif kind == "refused":
            stream, _, reason = ev.cause.partition(":")
            self._refuse(stream, reason)
        elif kind == "info":
            self._apply_info(ev.data)
        elif kind == "time":
            self._time_exchange(ev.data)
        elif kind == "stopped":
            self._stop_reply = ev.data

    def flush(self, now_ns: int) -> None:
        """Have the next ``drain()`` write the pending batch and the part of an open gap up
        to now (a break waiting for its count with its fallback)."""
        self.flushing.fire("flush", now_ns)

    def open_segment(self, now_ns: int) -> dict[str, str]:
        """A segment opens (from the second on, a roll): its metadata for this band."""
        self._segments += 1
        self.flushing.fire("open" if self._segments == 1 else "roll", now_ns)
        snap = self.fit.snapshot() if self.fit is not None else {}
        gap = self._gap
        meta = {"profile": self.band.profile, "address": self.band.address,
                "rate_hz": f"{self.band.rate_hz:g}", "clock_fit": json.dumps(snap),
                "batch_seconds": f"{self.batch_seconds:g}",
                "streaming": "no" if gap is not None else "yes"}
        if gap is not None:
            meta["absent_since_ns"] = str(gap.since_ns)
            meta["absent_cause"] = self.cause(gap)
        if self.refused:
            meta["refused_streams"] = json.dumps(self.refused, sort_keys=True)
        if self.band_info:
            meta["band_info"] = json.dumps(self.band_info, sort_keys=True)
        return meta

    def stop(self, now_ns: int) -> None:
        """The stop command is sent now: the band stops sampling."""
        self._stop_ns = now_ns
        self.flushing.fire("stop", now_ns)

    def end_at(self, end_ns: int) -> None:
        """The recording's last instant (its last frame): a stream that ends earlier is a
        gap to it, saying why."""
        self._end_ns = end_ns

    # ------------------------------------------------------------ outputs

    def drain(self, now_ns: int, link_ended: bool = False) -> list[Message]:
        """Everything ready, in time order. ``link_ended``: the link is over for good."""
        acts = self.flushing.fire("drain", now_ns)
        if "held" in acts:
            self._take(self._flush_decoder())
            self._settle(None)
        if "tail" in acts:
            self._tail()
        if "cut" in acts:
            mark = self.flushing.take_mark()
            if mark is not None:
                self._cut(mark)
        if link_ended and self._gap is not None:
            self._close_gap(now_ns, stopped=True)
        if "emit" in acts or self._batch_full():
            self._emit_batch()
        out, self._out = self._out, []
        out.sort(key=lambda m: m.log_time_ns)
        return out

    @property
    def pending_samples(self) -> int:
        """Samples decoded but not yet written (the batch being filled)."""
        return self._batch_n

    @property
    def absent(self) -> OpenGap | None:
        """The open gap while the band is not streaming."""
        return self._gap

    def cause(self, gap: OpenGap) -> str:
        if gap.cause == "not-connected":
            return f"not-connected:{self._last_failure or 'connecting'}"
        return gap.cause

    # ------------------------------------------------------------ decoding, batches

    def _make_decoder(self) -> tuple[Any, Any]:
        from agent.wrist.decode import make_decoder
        from agent.wrist.imu_batch import make_fit
        from agent.wrist.timing import band_latency

        band = self.band
        return (make_decoder(band.profile, rate_hz=band.rate_hz),
                make_fit(band.profile, band.rate_hz, band_latency(band)))

    def _flush_decoder(self) -> list[Any]:
        flush = getattr(self.decoder, "flush", None)  # a decoder that holds nothing may lack it
        return list(flush()) if flush is not None else []

    def _take(self, chunks: list[Any]) -> None:
        """Decoded chunks, in order: fit, loss gaps, batch."""
        from agent.wrist.imu_batch import observe

        fit = self.fit
        aim = self.aimer.feed if getattr(fit, "kind", "") == "two-way" else None
        stats = self.stats
        for c in chunks:
            observe(fit, c)
            if aim is not None:
                aim(fit, c)
            n = c.n
            stats["samples"] += n
            covered = self._break is not None and self._settle(c)
            if c.lost_before > 0 and not covered:
                self._loss_gap(c)
            batch = self._batch
            batch.append(c)
            self._batch_n += n
            self._prev = c
            # _batch_full(), inline: this runs for every notification
            if self._batch_n >= self._batch_samples \
                    or c.arrival_ns - batch[0].arrival_ns >= self._batch_ns:
                self._emit_batch()
        if chunks:
            self._note_rate(chunks)

    def _break_stream(self) -> None:
        """The stream breaks (lost link, dropped packets): what the decoder holds comes before
        it, a break still waiting for its count gets none, and no batch spans the break."""
        self._take(self._flush_decoder())
        self._settle(None)
        self._emit_batch()
        cut = getattr(self.fit, "cut", None)
        if cut is not None:
            cut()  # a band with no clock: its numbering across the break is an estimate

    def _batch_full(self) -> bool:
        b = self._batch
        return bool(b) and (self._batch_n >= self._batch_samples
                            or b[-1].arrival_ns - b[0].arrival_ns >= self._batch_ns)

    def _emit_batch(self) -> None:
        if not self._batch:
            return
        from agent.wrist.imu_batch import imu_message

        self._out.append(imu_message(self.name, self._batch, self.fit, self.band.profile,
                                     absent=self.refused))
        self.stats["messages"] += 1
        self._batch = []
        self._batch_n = 0

    def _note_rate(self, chunks: list[Any]) -> None:
        now = chunks[-1].arrival_ns
        if self._rate_t0 is None:
            self._rate_t0 = (now, self.stats["samples"])
            return
        t0, n0 = self._rate_t0
        if now - t0 >= 2_000_000_000:
            self.rate_hz = (self.stats["samples"] - n0) * 1e9 / (now - t0)
            self._rate_t0 = (now, self.stats["samples"])

    # ------------------------------------------------------------ what the band says

    def _time_exchange(self, data: bytes) -> None:
        """One two-way time exchange (open profile v2) into the band's clock, which then
        observes the latency instead of assuming it (agent.clock.band)."""
        fit = self.fit
        if getattr(fit, "kind", "") != "two-way" or len(data) != 32:
            return
        sent, rx_us, tx_us, arrival = struct.unpack("<QQQQ", data)
        fit.observe_exchange(sent, rx_us * 1000, arrival, tx_us * 1000)
        self.aimer.exchange(fit, sent, rx_us * 1000)
        self.stats["time_exchanges"] += 1

    def _refuse(self, stream: str, reason: str) -> None:
        """The band refused ``stream``: it is absent (never filled), with the band's reason."""
        self.refused[stream] = reason
        set_streams = getattr(self.decoder, "set_streams", None)
        if set_streams is not None and stream in ("acc", "gyro"):
            set_streams(acc="acc" not in self.refused, gyro="gyro" not in self.refused)

    def _apply_info(self, data: bytes) -> None:
        """The band's info characteristic: its own scales and rate replace the profile's
        defaults; one it cannot read is said so in the segment metadata."""
        set_info = getattr(self.decoder, "set_info", None)
        if set_info is None:
            return
        try:
            set_info(data)
        except ValueError as exc:
            self.band_info = {"error": str(exc), "raw": data.hex()}
            return
        info = self.decoder.info
        self.band_info = {"rate_hz": info.rate_hz, "acc_fs_g": info.acc_fs_g,
                          "gyro_fs_dps": info.gyro_fs_dps, "acc_scale": info.acc_scale,
                          "gyro_scale": info.gyro_scale, "gyro": info.gyro,
                          "version": info.version, "clock_tick_ns": info.clock_tick_ns,
                          "min_rate_hz": info.min_rate_hz, "max_rate_hz": info.max_rate_hz,
                          "time_exchange": info.two_way}
        if not info.gyro:
            self.refused.setdefault("gyro", "the band has no gyroscope (info characteristic)")

    # ------------------------------------------------------------ gaps

    def _tail(self) -> None:
        """At stop, once: the stream should run to the recording's end, or gaps say why."""
        if self._tail_done or self._stop_ns is None:
            return
        self._tail_done = True
        if self._gap is not None or self._prev is None:
            return  # not streaming: the open gap runs to the end (closed at the link's end)
        for start, end, lost, cause in tail.stop_gaps(
                self.fit, self._prev, self.band.rate_hz, self._stop_ns, self._end_ns,
                tail.next_seq(self._stop_reply) if registry.facts(self.band.profile).stop_count
                else None, self._why_no_stop_count()):
            self._gap_out(start, end, lost, cause)

    def _why_no_stop_count(self) -> str:
        """Why the band did not say at stop how many samples it sent (for a stop gap)."""
        name = self.band.profile
        if not registry.facts(name).stop_count:
            return f"a {name} band does not say at stop how many samples it sent"
        if self.band_info.get("version", 2) < 2:
            return "a version 1 band does not say at stop how many samples it sent"
        if self._stop_reply is not None:
            return f"its stop reply carried no next_seq ({self._stop_reply.hex()})"
        return "the band did not reply to the stop command, so how many is unknown"

    def _cut(self, cut_ns: int) -> None:
        """A roll or ``flush()``: write the part of an open gap up to ``cut_ns`` (the rest
        stays open), and a break still waiting for its count with its fallback."""
        b = self._break
        if b is not None and b.written is None:
            b.written = b.fallback
            self._gap_out(b.start_ns, b.end_ns, b.fallback, b.cause)
        gap = self._gap
        if gap is None or cut_ns <= gap.start_ns:
            return
        self._gap_out(gap.start_ns, cut_ns, -1, self.cause(gap) + " (continues after the roll)")
        gap.start_ns = cut_ns

    def _resume(self, arrival: int) -> None:
        """The first packet after a (re)connection: the open gap ends here. Its count comes
        with the first chunk decoded after it (``agent.wrist.gaps``)."""
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = self.cause(gap)
        self._last_failure = ""
        if gap.cause == "not-connected":  # nothing streamed before: nothing to count
            self._gap_out(gap.start_ns, arrival, -1, cause)
            return
        self._settle(None)
        self._break = Break(gap.start_ns, arrival, cause, -1)

    def _settle(self, c: Any) -> bool:
        """Write the waiting break once chunk ``c`` gives its count, or with its fallback
        (``agent.wrist.gaps.settle``). True: ``c``'s ``lost_before`` was the break's."""
        b = self._break
        if b is None:
            return False
        got = settle(b, c)
        if got is None:
            return False  # not yet
        counted, lost = got
        self._break = None
        if counted and estimated_loss(self.decoder, c):  # no counter: an estimate, never a count
            after = "" if b.written is None else " (after the gap was written)"
            self._gap_out(b.start_ns, b.end_ns, -1, estimate_cause(b.cause, lost) + after)
        elif b.written is None:
            self._gap_out(b.start_ns, b.end_ns, lost, b.cause)
        elif counted and lost > max(b.written, 0):  # the fallback went out first (a roll)
            self._gap_out(b.start_ns, b.end_ns, lost - max(b.written, 0),
                          f"{loss_cause(c)} (counted after the {b.cause} gap was written)")
        return counted

    def _close_gap(self, end_ns: int, *, stopped: bool = False) -> None:
        gap = self._gap
        assert gap is not None
        self._gap = None
        cause = self.cause(gap)
        self._last_failure = ""
        if stopped:
            cause += (" (not connected before stop)" if gap.cause == "not-connected"
                      else " (not reconnected before stop)")
        self._gap_out(gap.start_ns, end_ns, -1, cause)

    def _loss_gap(self, c: Any) -> None:
        """Samples a decoder says are missing before ``c``: from the host time of the last
        sample before to that of ``c``'s first."""
        from agent.wrist.imu_batch import host_times

        end, _p = host_times(self.fit, c)
        prev = self._prev
        start = end
        if prev is not None:
            t0, period = host_times(self.fit, prev)
            start = min(end, t0 + round((prev.n - 1) * period))
        self.stats["loss_gaps"] += 1
        if estimated_loss(self.decoder, c):
            self._gap_out(start, end, -1, estimate_cause(loss_cause(c), c.lost_before))
        else:
            self._gap_out(start, end, c.lost_before, loss_cause(c))

    def _gap_out(self, start: int, end: int, lost: int, cause: str) -> None:
        self.stats["gaps"] += 1
        if lost > 0:
            self.stats["samples_lost"] += lost
        self._out.append(gap_message(self.topic, start, end, lost, cause))
