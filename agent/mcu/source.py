"""McuSource: the head microcontroller as an ``agent.sources.Source``.

The serial reader thread (agent.mcu.serial_port) pushes every read, stamped, into a
preallocated ByteRing and sends a ping every ``1/ping_hz`` s; nothing else happens there.
``drain()`` (the writer's thread) decodes (agent.mcu.protocol), feeds the two-way clock fit
(agent.clock.twoway) with the exchanges, maps every tick onto the host timeline, and returns:

- head IMU batches (agent.mcu.records) of ``batch_seconds``, earlier at ``flush()``;
- strobes, button edges, battery readings, the clock exchanges, as columnar batches;
- each frame's strobe, matched as it is recorded (``on_frame(index, host_ns)``, called by
  the capture loop for every frame it writes; agent.mcu.strobes.StrobeMatcher), on
  ``/head/strobe_match``;
- gaps: a jump of the IMU's sample number is a gap of exactly that many samples (cause
  ``unplugged`` if the port was lost meanwhile, else ``link-loss``); a gap in the frame seq
  counter is counted (``frames_lost``); a ring overflow is a gap of unknown size.

Host times within the IMU stream never step back: a refit that would map a chunk before the
previous one's last sample is slewed to a sample period after it, and counted (``slewed``).
A slewed chunk's samples are spaced closer than the fit's until the stream meets the fit
again, its bound widened by how far ahead it starts. The further ahead, the faster: by
(ahead / ``CATCH_UP_NS``), at least ``CATCH_UP`` (5 %), at most ``CATCH_UP_MAX`` (50 %). A
stream 18 s ahead runs at double speed for 36 s, then what is left shrinks by about 63 % a
second until it is under 50 ms, then at 5 %: 2 s ahead meets the fit after about 6 s of
samples (it took 40 s at a flat 5 %). No two samples are ever closer than half a period.

Samples that arrive before the fit is usable are held, up to ``hold_samples`` (holding
longer would break the promise that a crash loses at most a chunk of any stream); after
that they are written with ``clock.method = "arrival"`` and no bound, timed by the lowest
(arrival - device time) of the chunks within ``ARRIVAL_WINDOW_NS`` of device time: a sample
was taken before it arrived, and the MCU's ticks space the samples, so a backlog read at
once after the process was starved is spread back over the ticks it was taken at instead of
piling up at its arrival (which, host time never stepping back, put every later sample
seconds late).

Controls: button edges also go to ``on_button(down, host_ns)`` (agent.mcu.controls), and
``set_led(pattern, rgb)`` / ``haptic(pattern, ms)`` send commands to the MCU.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.clock.twoway import TwoWayFit
from agent.clock.unwrap import Unwrapper
from agent.durable import write_atomic
from agent.mcu import protocol as p
from agent.mcu import records
from agent.mcu.strobes import MATCH_COLUMNS, StrobeMatcher
from agent.ring import ByteRing
from agent.sources import ChannelSpec, Message
from agent.timeline import Clock, monotonic_ns
from agent.wrist.gaps import gap_message

log = logging.getLogger("wearcap.mcu")

META_DTYPE = [("arrival_ns", "<i8"), ("ticket", "<u8")]
G = 9.80665


class McuSource:
    name = "mcu"
    RTT_WINDOW = 100
    """Round trips kept for the ping figures of ``status()`` (10 s at the default 10 Hz)."""

    def __init__(self, port: str, baud: int = 921_600, *, clock: Clock = monotonic_ns,
                 ping_hz: float = 10.0, batch_seconds: float = 1.0,
                 battery_file: str | Path | None = None,
                 on_button: Callable[[bool, int], None] | None = None,
                 ring_bytes: int = 1 << 20, max_packets: int = 16384,
                 hold_samples: int = 5000) -> None:
        self.port = port
        self.baud = baud
        self.clock = clock
        self.ping_ns = int(1e9 / ping_hz)
        self.batch_ns = int(batch_seconds * 1e9)
        self.battery_file = Path(battery_file) if battery_file else None
        self.on_button = on_button
        self.hold_samples = hold_samples
        self.ring = ByteRing(ring_bytes, max_packets, META_DTYPE)
        self._ticket = 0
        self._next_ticket = 0
        self._events: collections.deque[tuple[int, str, int, str]] = collections.deque()
        self.decoder = p.Decoder()
        self.fit = TwoWayFit()
        self.unwrap = Unwrapper(p.TICK_BITS, p.TICK_NS)
        self._pings: dict[int, int] = {}
        self._rtts: collections.deque[int] = collections.deque(maxlen=self.RTT_WINDOW)
        self._ping_id = 0
        self._rate_marks: collections.deque[tuple[int, int]] = collections.deque()
        self._next_ping = 0
        self._host_seq = 0
        self._link: Any = None
        self._hello: p.Hello | None = None
        self._incompatible: str = ""
        self._last_seq: int | None = None
        self._next_index: int | None = None
        self._last_imu_host: int | None = None
        self._last_imu_dev: int | None = None
        self._lost_since: tuple[int, str] | None = None  # port lost: (host_ns, why)
        self._held: list[records.HeadChunk] = []
        self._early: collections.deque[tuple[int, int]] = collections.deque()
        """(last device ns, arrival - it) of chunks placed with no usable fit, recent."""
        self._batch: list[records.HeadChunk] = []
        self._rows: dict[str, list[dict[str, Any]]] = {
            records.STROBE_TOPIC: [], records.BUTTON_TOPIC: [], records.BATTERY_TOPIC: [],
            records.CLOCK_TOPIC: []}
        self._pending_strobes: list[dict[str, Any]] = []
        self._rows[records.STROBE_MATCH_TOPIC] = []
        self.matcher = StrobeMatcher()
        self._to_match: list[tuple[int, int]] = []  # (strobe index, device mid ns)
        self._flush = False
        self._stopping = False
        self._lock = threading.Lock()
        self.battery: dict[str, Any] | None = None
        self.acc_scale = 16 * G / 32768
        self.gyro_scale = 2000 * math.pi / 180 / 32768
        self.stats: dict[str, int] = {
            "reads": 0, "frames": 0, "samples": 0, "samples_lost": 0, "frames_lost": 0,
            "before_hello": 0, "strobes": 0, "buttons": 0, "pongs": 0, "pings": 0,
            "stale_pongs": 0, "mcu_errors": 0, "overflow_reads": 0, "slewed": 0,
            "gaps": 0, "opens": 0, "losses": 0}

    # ------------------------------------------------------------ Source protocol
    def channels(self) -> list[ChannelSpec]:
        return records.channels()

    def start(self) -> None:
        from agent.mcu.serial_port import SerialLink

        self._link = SerialLink(self.port, self.baud, self._on_bytes, on_event=self._on_event,
                                on_open=self._on_open, clock=self.clock, poll_seconds=0.02)
        self._link.start()

    def stop(self) -> None:
        if self._link is not None:
            # on purpose: the MCU keeps its pattern (no host-silence fault, protocol 1.1)
            self._send(p.Bye(self._seq()))
            self._link.stop()
        self._stopping = True
        self._flush = True

    def flush(self) -> None:
        self._flush = True

    def segment_metadata(self) -> dict[str, str]:
        h = self._hello
        return {
            "port": self.port, "device": str(getattr(self._link, "device", "") or ""),
            "baud": str(self.baud),
            "protocol": f"{h.major}.{h.minor}" if h else "",
            "firmware": h.firmware if h else "", "caps": json.dumps(h.caps if h else {}),
            "clock_fit": json.dumps(self.fit.snapshot()),
            "decoder_errors": json.dumps(self.decoder.errors),
            "stats": json.dumps(self.stats),
        }

    def status(self) -> dict[str, Any]:
        link = self._link
        up = bool(link is not None and link.connected and self._hello is not None)
        st: dict[str, Any] = {**self.stats, "bad_frames": self.decoder.bad_frames,
                              "decoder_errors": dict(self.decoder.errors),
                              "last_error": self.decoder.last_error,
                              "converged": self.fit.converged,
                              "bound_ns": self.fit.bound_ns() if self.fit.ready else None,
                              "drift_ppm": self.fit.drift_ppm, "battery": self.battery,
                              "incompatible": self._incompatible, **self.rtt_figures()}
        st["rate_hz"] = self._rate()
        st["clock_bound_ns"] = st["bound_ns"]
        st["clock_converged"] = st["converged"]
        if link is not None:
            st["streaming"] = up
            if not up:
                since = self._lost_since[0] if self._lost_since else None
                st["absent_s"] = (self.clock() - since) / 1e9 if since else 0.0
                st["absent_cause"] = (self._incompatible or
                                      (self._lost_since[1] if self._lost_since else "no hello"))
        return st

    def _rate(self) -> float | None:
        """Head IMU samples per second over the last few status calls (>= 1 s apart)."""
        now, n = self.clock(), self.stats["samples"]
        marks = self._rate_marks
        if not marks or now - marks[-1][0] >= 1e9:
            marks.append((now, n))
        while len(marks) > 2 and now - marks[1][0] >= 2e9:
            marks.popleft()
        t0, n0 = marks[0]
        return round((n - n0) * 1e9 / (now - t0), 1) if now - t0 >= 0.5e9 else None

    def rtt_figures(self) -> dict[str, Any]:
        """The ping round trip (host send to pong arrival) over the last ``RTT_WINDOW``
        answered pings: ``rtt_ms_p50``, ``rtt_ms_min``, ``rtt_ms_max``, ``rtt_samples``
        (None without an answer). Half the minimum is the floor the link sets on the clock
        fit (USB CDC: about 0.5 ms or more)."""
        rtts = sorted(self._rtts)  # a copy: the deque is appended on the writer's thread
        if not rtts:
            return {"rtt_ms_p50": None, "rtt_ms_min": None, "rtt_ms_max": None,
                    "rtt_samples": 0}
        return {"rtt_ms_p50": round(rtts[len(rtts) // 2] / 1e6, 3),
                "rtt_ms_min": round(rtts[0] / 1e6, 3), "rtt_ms_max": round(rtts[-1] / 1e6, 3),
                "rtt_samples": len(rtts)}

    # ------------------------------------------------------------ commands to the MCU
    def _send(self, msg: p.Message) -> int | None:
        link = self._link
        if link is None:
            return None
        return link.write(p.encode(msg))  # type: ignore[no-any-return]

    def _seq(self) -> int:
        s = self._host_seq
        self._host_seq = (s + 1) % p.SEQ_MOD
        return s

    def set_led(self, pattern: int, rgb: int) -> None:
        self._send(p.Led(self._seq(), pattern, rgb))

    def haptic(self, pattern: int, ms: int) -> None:
        self._send(p.Haptic(self._seq(), pattern, ms))

    # ------------------------------------------------------------ reader thread side
    def _on_bytes(self, host_ns: int, data: bytes) -> None:
        if not self.ring.push(data, (host_ns, self._ticket)):
            self.stats["overflow_reads"] += 1
        self._ticket += 1
        if host_ns >= self._next_ping:
            self._next_ping = host_ns + self.ping_ns
            self._ping()

    def _on_open(self) -> None:
        self._send(p.HelloRequest(self._seq()))
        self._ping()

    def _ping(self) -> None:
        pid = self._ping_id
        self._ping_id = (pid + 1) % (1 << 32)
        t0 = self._send(p.Ping(self._seq(), pid))
        if t0 is not None:
            self._pings[pid] = t0
            self.stats["pings"] += 1
            if len(self._pings) > 64:  # answers that never came
                self._pings.pop(next(iter(self._pings)))

    def _on_event(self, kind: str, host_ns: int, detail: str) -> None:
        self._events.append((self._ticket, kind, host_ns, detail))

    # ------------------------------------------------------------ writer thread side
    def drain(self) -> list[Message]:
        out: list[Message] = []
        for (arrival, ticket), data in self.ring.pop_all():  # META_DTYPE's order
            self._replay(ticket, out)
            if ticket != self._next_ticket:
                self._ring_loss(arrival, out)
            self._next_ticket = ticket + 1
            self.stats["reads"] += 1
            for m in self.decoder.feed(data):
                self._message(m, arrival, out)
        self._replay(None, out)
        self._match_strobes()
        if self._held and not self._usable and len(self._held) * 10 > self.hold_samples:
            self._map_held(out)
        if self._batch and (self._flush or self._batch_span() >= self.batch_ns):
            self._emit_imu(out)
        if self._flush or any(len(r) >= 256 for r in self._rows.values()):
            self._map_rows()
            for topic, rows in self._rows.items():
                if rows:
                    out.append(records.columns(topic, rows))
                    rows.clear()
        if self._stopping and self._held:
            self._map_held(out)
            if self._batch:
                self._emit_imu(out)
        self._flush = False
        out.sort(key=lambda m: m.log_time_ns)
        return out

    def on_frame(self, index: int, host_ns: int) -> None:
        """A frame the capture loop wrote (writer's thread): matched to its strobe."""
        h = self._hello
        if h is not None and h.caps.get("strobe") is False:
            return  # this MCU sees no strobe: nothing to match, no row per frame
        self.matcher.frame(index, host_ns)

    MATCH_WAIT = 600
    """Strobes held for the fit (about 20 s at 30 fps) before frames are decided without
    them: a fit that never becomes usable must not hold every frame for ever."""

    def _match_strobes(self) -> None:
        if self._to_match and self._usable:
            for index, dev in self._to_match:
                host, bound = self._map(dev)
                self.matcher.strobe(index, host, bound)
            self._to_match.clear()
        elif self._to_match and not self._stopping:
            if len(self._to_match) <= self.MATCH_WAIT:
                return  # strobes wait for the fit: their frames are not decided without them
            self._to_match.clear()
        rows = self.matcher.decide(self.clock(), final=self._stopping)
        if rows:
            self._rows[records.STROBE_MATCH_TOPIC].extend(
                dict(zip(MATCH_COLUMNS, r, strict=True)) for r in rows)

    def _replay(self, ticket: int | None, out: list[Message]) -> None:
        while self._events and (ticket is None or self._events[0][0] <= ticket):
            _, kind, host_ns, detail = self._events.popleft()
            if kind == "lost":
                self.stats["losses"] += 1
                self._lost_since = (host_ns, f"unplugged: {detail}")
                self._hello = None  # the next MCU may be another firmware
                self._pings.clear()
                log.warning("mcu: port lost (%s); reopening", detail)
            elif kind == "opened":
                self.stats["opens"] += 1
                self._last_seq = None

    def _ring_loss(self, arrival: int, out: list[Message]) -> None:
        self.stats["gaps"] += 1
        out.append(gap_message(records.IMU_TOPIC, self._last_imu_host or arrival, arrival, -1,
                               "ring-overflow"))

    def _message(self, m: p.Message, arrival: int, out: list[Message]) -> None:
        self.stats["frames"] += 1
        if self._last_seq is not None:
            lost = (m.seq - self._last_seq - 1) % p.SEQ_MOD
            if lost and lost < p.SEQ_MOD // 2:
                self.stats["frames_lost"] += lost
        self._last_seq = m.seq
        if isinstance(m, p.Hello):
            self._on_hello(m)
            return
        if self._hello is None:
            self.stats["before_hello"] += 1
            return
        if isinstance(m, p.ImuBatch):  # the 1 kHz stream's frames first: most of them
            self._on_imu(m, arrival, out)
        elif isinstance(m, p.Pong):
            self._on_pong(m, arrival)
        elif isinstance(m, p.Strobe):
            self._on_strobe(m)
        elif isinstance(m, p.Button):
            self._on_button(m, arrival)
        elif isinstance(m, p.Battery):
            self._on_battery(m, arrival)
        elif isinstance(m, p.McuError):
            self.stats["mcu_errors"] += 1
            log.info("mcu reports error %d: %s", m.code, m.detail)

    def _on_hello(self, h: p.Hello) -> None:
        if h.major != p.PROTO_MAJOR:
            if not self._incompatible:
                log.error("MCU protocol %d.%d unsupported (this agent speaks %d.x)",
                          h.major, h.minor, p.PROTO_MAJOR)
            self._incompatible = f"protocol {h.major}.{h.minor} unsupported"
            self._hello = None
            return
        self._incompatible = ""
        self._hello = h
        minor = min(h.minor, p.PROTO_MINOR)
        self._send(p.Accept(self._seq(), p.PROTO_MAJOR, minor))
        acc_g, gyro_dps = h.caps.get("acc_g"), h.caps.get("gyro_dps")
        if isinstance(acc_g, int) and 0 < acc_g <= 64:
            self.acc_scale = acc_g * G / 32768
        if isinstance(gyro_dps, int) and 0 < gyro_dps <= 8000:
            self.gyro_scale = gyro_dps * math.pi / 180 / 32768

    MIN_EXCHANGES = 5
    """Exchanges before samples are mapped (held until then): the first ping's round trip
    can be long (a port just opened, a busy start), and a mapping that then jumps forward
    by it would leave a hole in the stream."""

    @property
    def _usable(self) -> bool:
        return self.fit.ready and self.fit.exchanges >= self.MIN_EXCHANGES

    def _dev(self, tick: int) -> int:
        return self.unwrap(tick)

    def _map(self, device_ns: int) -> tuple[int, int]:
        return self.fit.map(device_ns), self.fit.bound_ns(device_ns)

    def _on_pong(self, m: p.Pong, arrival: int) -> None:
        t0 = self._pings.pop(m.ping_id, None)
        if t0 is None:
            self.stats["stale_pongs"] += 1
            return
        d = self._dev(m.tick)
        self._rtts.append(arrival - t0)
        if self.fit.add(t0, d, arrival):
            self.stats["pongs"] += 1
        self._rows[records.CLOCK_TOPIC].append(
            {"host_send_ns": t0, "tick": m.tick, "device_ns": d, "host_recv_ns": arrival})
        if self._held and self._usable:
            self._map_held(None)

    def _on_imu(self, m: p.ImuBatch, arrival: int, out: list[Message]) -> None:
        n = m.n
        counts = np.frombuffer(m.samples, dtype="<i2").reshape(n, 6)
        dev0 = self._dev(m.tick0)
        dev = [dev0] + [dev0 + d * p.TICK_NS for d in m.deltas]
        lost = 0
        if self._next_index is not None:
            lost = (m.index - self._next_index) % (1 << 32)
            if lost >= 1 << 31:  # went back: the MCU rebooted; numbering restarts
                lost = 0
        self._next_index = (m.index + n) % (1 << 32)
        self.stats["samples"] += n
        chunk = records.HeadChunk(m.index, m.seq, lost, m.tick0, dev, counts, arrival)
        if lost:
            self.stats["samples_lost"] += lost
            chunk.lost_before = lost
        if not self._usable or self._held:
            self._held.append(chunk)
            return
        prev_end = self._prev_end_host
        self._time(chunk)
        if lost:
            self._gap(chunk, lost, prev_end, out)
        self._batch.append(chunk)
        if self._batch_span() >= self.batch_ns:
            self._emit_imu(out)

    def _gap(self, chunk: records.HeadChunk, lost: int, prev_end: int | None,
             out: list[Message]) -> None:
        start = prev_end if prev_end is not None else chunk.host_t0_ns
        cause = self._lost_since[1] if self._lost_since else "link-loss"
        self.stats["gaps"] += 1
        out.append(gap_message(records.IMU_TOPIC, start, chunk.host_t0_ns, lost, cause))
        self._lost_since = None

    _prev_end_host: int | None = None

    CATCH_UP = 0.05
    """How much faster than the fit a slewed chunk runs at least (50,000 ppm)."""
    CATCH_UP_NS = 1_000_000_000
    """A stream ahead of its fit runs (ahead / this) faster: 10 % at 100 ms ahead ..."""
    CATCH_UP_MAX = 0.5
    """... but never more than 50 % faster: samples stay at least half a period apart."""
    ARRIVAL_WINDOW_NS = 6_000_000_000
    """Before the fit is usable, a chunk is timed by the lowest (arrival - device time) of
    the chunks within this long of device time (the MCU's crystal: tens of ppm over it)."""

    def _catch_up(self, ahead: float) -> float:
        return min(self.CATCH_UP_MAX, max(self.CATCH_UP, ahead / self.CATCH_UP_NS))

    def _time(self, c: records.HeadChunk) -> None:
        host, bound = self._map(c.device_ns[0])
        n = len(c.device_ns)
        span = (c.device_ns[-1] - c.device_ns[0]) * self.fit.slope
        step = span / (n - 1) if n > 1 else 1e6
        earliest = None
        if self._last_imu_host is not None:
            rate = self._catch_up(self._last_imu_host + step - host)
            earliest = self._last_imu_host + max(1, round(step * (1 - rate)))
        if earliest is not None and host < earliest:
            self.stats["slewed"] += 1
            ahead = earliest - host
            bound += ahead  # the first sample is the furthest from the fit
            host = earliest
            span = max(span * (1 - rate), span - ahead)
        c.host_t0_ns, c.bound_ns = host, bound
        c.host_period_ns = span / (n - 1) if n > 1 else 0.0
        self._last_imu_host = host + int(span)
        self._prev_end_host = self._last_imu_host
        if self._lost_since is not None and not c.lost_before:
            self._lost_since = None  # the port came back with nothing lost

    def _by_arrival(self, held: list[records.HeadChunk]) -> list[int]:
        """Host times of ``held``'s first samples with no usable fit: each chunk's device
        time plus the lowest (arrival - last sample's device time) within
        ``ARRIVAL_WINDOW_NS`` of it, over these chunks and the ones placed so before."""
        recent = self._early
        dev = np.asarray([c.device_ns[-1] for c in held], np.float64)
        off = np.asarray([c.arrival_ns - c.device_ns[-1] for c in held], np.float64)
        if recent:
            dev = np.concatenate([np.asarray([d for d, _ in recent], np.float64), dev])
            off = np.concatenate([np.asarray([o for _, o in recent], np.float64), off])
        w = self.ARRIVAL_WINDOW_NS
        out = []
        for c in held:
            near = np.abs(dev - c.device_ns[-1]) <= w
            out.append(int(c.device_ns[0] + off[near].min()))
        recent.extend((c.device_ns[-1], c.arrival_ns - c.device_ns[-1]) for c in held)
        while recent and recent[0][0] < held[-1].device_ns[-1] - w:
            recent.popleft()
        return out

    def _map_held(self, out: list[Message] | None) -> None:
        held, self._held = self._held, []
        early = self._by_arrival(held) if held and not self._usable else []
        for i, c in enumerate(held):
            if self._usable:
                self._time(c)
            else:
                c.host_t0_ns, c.bound_ns = early[i], -1
                if self._last_imu_host is not None:  # a sample period on (5 % less at most)
                    earliest = self._last_imu_host + round(1e6 * (1 - self.CATCH_UP))
                    c.host_t0_ns = max(c.host_t0_ns, earliest)
                c.host_period_ns = 1e6
                self._last_imu_host = c.host_t0_ns + int(1e6 * (len(c.device_ns) - 1))
            self._batch.append(c)

    def _batch_span(self) -> int:
        if not self._batch:
            return 0
        return self._batch[-1].host_t0_ns - self._batch[0].host_t0_ns

    def _emit_imu(self, out: list[Message]) -> None:
        clock = {"method": "two-way", "converged": self.fit.converged,
                 "drift_ppm": self.fit.drift_ppm, "latency_ns": 0, "latency": "two-way"}
        if any(c.bound_ns < 0 for c in self._batch):
            clock = {**clock, "method": "arrival", "converged": False}
        out.append(records.imu_message(self._batch, self.acc_scale, self.gyro_scale, clock))
        self._batch = []

    def _map_rows(self) -> None:
        """Strobes are mapped with the fit of when they are written (the latest); before
        the fit is usable they keep bound -1 and host time 0, and are written later."""
        rows = self._rows[records.STROBE_TOPIC]
        if not self._usable:
            if not self._stopping:
                self._pending_strobes = self._pending_strobes + rows
                self._rows[records.STROBE_TOPIC] = []
            else:
                for r in rows:
                    r["host_mid_ns"] = 0
            return
        rows[:0] = self._pending_strobes
        self._pending_strobes = []
        for r in rows:
            r["host_mid_ns"], r["bound_ns"] = self._map(r["device_mid_ns"])

    def _on_strobe(self, m: p.Strobe) -> None:
        self.stats["strobes"] += 1
        rise = self._dev(m.rise)
        fall = rise + ((m.fall - m.rise) % (1 << 32)) * p.TICK_NS
        mid = (rise + fall) // 2
        self._to_match.append((m.index, mid))
        self._rows[records.STROBE_TOPIC].append(
            {"index": m.index, "rise_tick": m.rise, "fall_tick": m.fall, "device_mid_ns": mid,
             "host_mid_ns": None, "bound_ns": -1})  # mapped when written (_map_rows)

    def _on_button(self, m: p.Button, arrival: int) -> None:
        self.stats["buttons"] += 1
        host = self._map(self._dev(m.tick))[0] if self.fit.ready else arrival
        self._rows[records.BUTTON_TOPIC].append({"down": m.down, "tick": m.tick,
                                                  "host_ns": host})
        if self.on_button is not None:
            self.on_button(m.down, host)

    def _on_battery(self, m: p.Battery, arrival: int) -> None:
        self.battery = {"percent": m.percent, "millivolts": m.millivolts,
                        "charging": m.charging, "host_ns": arrival}
        self._rows[records.BATTERY_TOPIC].append(
            {"host_ns": arrival, "millivolts": m.millivolts, "percent": m.percent,
             "charging": m.charging})
        if self.battery_file is not None:
            write_battery_file(self.battery_file, self.battery)


def write_battery_file(path: Path, state: dict[str, Any]) -> None:
    """The charging state file the sync policy reads (agent.sync.policy.charging), atomic."""
    body = json.dumps({**state, "state": "charging" if state["charging"] else "discharging"})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, body.encode(), durable=False)  # a state, rewritten every 10 s
    except OSError as exc:
        log.warning("cannot write the battery state file %s: %s", path, exc)
