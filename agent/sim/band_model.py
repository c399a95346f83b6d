"""A pure simulation of one wrist band: clock, motion, packets in the profile's bytes, BLE delivery.

    model = BandModel(BandParams(profile="wearcap-open", seed=3), start_host_ns=0)
    for d in model.deliveries_until(10 * 10**9):   # Delivery(host_ns, packet, first, n)
        ...
    model.truth_ns(k)        # true host time of sample k (the k-th sample the band took)
    model.device_ns(k)       # the band clock's reading when it took sample k

The band's clock runs ``drift_ppm`` fast against the host, plus a slow sinusoidal wander of
``wander_ppm``; its samples come ``rate_error`` (fraction) faster than nominal. Samples are
packed ``samples_per_packet`` at a time by the profile's encoder (the registry names it,
agent/sim/band_encoders.py; each encoder lives beside its decoder in agent/wrist/decode/),
a packet is ready when its last sample is
taken, and it leaves at the next BLE connection event (interval drawn from
``interval_ms``, in 1.25 ms steps). A failed transmission (``retransmit_prob`` per attempt)
is retried in the same event unless ``close_after_failures`` attempts in a row failed (the
link layer then closes the event: BLE closes it after two CRC errors in a row), which holds
it and every later packet to the next event. The host sees it ``latency_ns`` + an
exponential jitter of mean ``jitter_ns`` + air time after the event.

What the agent must never be told, and what can surprise its fit:

- ``latency_ns`` is this host's constant transport latency (controller, HCI, kernel, BlueZ,
  D-Bus: 0.3-3 ms on real hosts), and ``jitter_ns`` the mean of what comes on top. The agent
  only has a configured latency with an uncertainty (agent/clock/band.py).
- Congested links: ``outage_prob`` is the chance per connection event that interference
  starts, lasting ``outage_events`` events during which nothing gets through; the band's
  queue builds a backlog that drains at ``max_per_event`` packets per event afterwards.
  ``queue_limit`` (packets, 0: unbounded) makes a full queue drop what the band takes next
  (real losses, listed in ``lost_samples``).
- Start-up: ``startup_jump_ns`` shifts the timestamps a band stamps on its first frames (the
  stamped clock starts that far off and settles linearly over ``startup_ns``, as a clock
  being disciplined does: Polar's first frames jump). Ground truth is not affected.
- Rate errors (``rate_error``) and clock drift (``drift_ppm``) as on real crystals / RC
  oscillators.
- Two-way exchange (the open profile's time request): ``ping(host_ns)`` writes a request;
  it reaches the controller after ``write_latency_ns`` (+ jitter), goes on air at the next
  connection event, where the band stamps the event's anchor on its own clock; its reply is
  packed for the next event with that event's anchor, and arrives like any notification
  (``Delivery.exchange``). Write and notify latencies differ (asymmetric), as on real hosts.

Deterministic for a given seed (features that are off draw no random numbers).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.sim.band_encoders import POLAR_EPOCH_OFFSET_NS as POLAR_EPOCH_OFFSET_NS
from agent.wrist.decode import PROFILES
from agent.wrist.registry import REGISTRY

ANCHOR_LEAD_NS = 1_000_000
"""Open-profile firmware packs its samples this long before a connection event."""
AIR_NS = 400_000
"""Time between consecutive packets within one connection event."""


TAP_G = 6.0
"""Peak of a tap's shock on the band's accelerometer (g)."""
TAP_DECAY_NS = 25_000_000
"""How fast a tap's shock dies away on a wrist (strap and tissue damp it): slow enough that
a band's first sample after the tap sees it even at 50 Hz."""


def tap_accel(true_ns: npt.NDArray[np.int64], taps: list[int], g: float) -> np.ndarray:
    """Counts each sample (taken at true host times ``true_ns``) adds for the taps at
    ``taps``: a shock that starts at the tap instant (a step: a tap's edge is far shorter
    than any band's sample period) and decays, along the strap's axis (x) and up (z)."""
    out = np.zeros((len(true_ns), 3))
    for tap in taps:
        dt = true_ns.astype(np.float64) - tap
        hit = dt >= 0
        amp = np.where(hit, TAP_G * g * np.exp(-np.where(hit, dt, 0.0) / TAP_DECAY_NS), 0.0)
        out[:, 0] += 0.6 * amp
        out[:, 2] += 0.8 * amp
    return out


@dataclass(frozen=True, slots=True)
class BandParams:
    profile: str = "wearcap-open"
    rate_hz: float = 200.0
    rate_error: float = 0.0
    """Fractional error of the real sample rate vs nominal (Movesense: up to ±0.1)."""
    drift_ppm: float = 50.0
    offset_ns: int = 5_000_000_000
    """Device clock reading at the start (e.g. time since the band booted)."""
    wander_ppm: float = 0.5
    wander_period_s: float = 600.0
    jitter_ns: float = 300_000.0
    latency_ns: int = 400_000
    interval_ms: tuple[float, float] = (7.5, 50.0)
    retransmit_prob: float = 0.05
    max_per_event: int = 10
    samples_per_packet: int = 0
    """0: the profile's default."""
    loss_prob: float = 0.0
    """Probability that a packet is dropped on the band (buffer overflow), for loss tests."""
    seed: int = 1
    close_after_failures: int = 1
    """Failed attempts in a row that close a connection event (BLE: 2; 1 = the first)."""
    outage_prob: float = 0.0
    """Chance per connection event that an interference burst starts (congested links)."""
    outage_events: tuple[int, int] = (2, 12)
    """Length of an interference burst, in connection events (drawn uniformly)."""
    queue_limit: int = 0
    """Packets the band can queue (0: unbounded); a full queue drops new packets."""
    startup_jump_ns: int = 0
    """How far off the band's stamped clock starts (settles linearly over ``startup_ns``)."""
    startup_ns: int = 3_000_000_000
    ready_delay_ns: int = 0
    """Band-side delay from taking a packet's last sample to handing it to the radio (a BLE
    module fed over a UART, as in WitMotion's: ~1.7 ms); unobservable like the latency."""
    write_latency_ns: int = 400_000
    """Two-way exchange: constant latency of a write from the host to the controller."""
    write_jitter_ns: float = 200_000.0

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}")
        lo, hi = self.interval_ms
        if not 7.5 <= lo <= hi <= 4000:
            raise ValueError("interval_ms must be [low, high] within 7.5..4000 ms")


@dataclass(frozen=True, slots=True)
class Delivery:
    host_ns: int
    """Host time the notification arrives (the simulated rig sends it then)."""
    packet: bytes
    first_sample: int
    """Sample number of the packet's first sample (ground truth via BandModel.truth_ns)."""
    n: int
    exchange: tuple[int, int, int] | None = None
    """A two-way reply (no samples): (host send ns of the request, band clock at the event
    the request arrived in, band clock at the anchor of the event the reply was packed for)."""


DEFAULT_SPP = {n: f.sim_samples_per_packet for n, f in REGISTRY.items()}

class BandModel:
    def __init__(self, params: BandParams, start_host_ns: int, *, record: bool = False) -> None:
        self.p = params
        self.recorded: dict[int, tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]] | None
        self.recorded = {} if record else None
        """With ``record``: sample number -> (acc, gyro) counts the band measured."""
        self.start = start_host_ns
        self.rng = np.random.default_rng(params.seed)
        self.spp = params.samples_per_packet or DEFAULT_SPP[params.profile]
        self.mtu = 247
        # the band samples on its own clock: drift moves the sampling against the host's
        # connection events, as on real hardware
        self.period_host = 1e9 / (params.rate_hz * (1.0 + params.rate_error)
                                  * (1.0 + params.drift_ppm * 1e-6))
        self.phase = float(self.rng.uniform(0, self.period_host))
        self._wander_amp = params.wander_ppm * 1e-6 * params.wander_period_s * 1e9 / (2 * math.pi)
        facts = REGISTRY[params.profile]
        self._encode = facts.make_sim_encoder(self.device_period_ns)
        self._at_events = facts.sim_packs_at_events
        self._next_sample = 0
        self._queue: deque[tuple[int, bytes, int, int]] = deque()  # ready, packet, first, n
        self.interval_ns = 0
        self._next_event = 0
        self._last_arrival = 0
        self.connect(start_host_ns)
        self.dropped_packets = 0
        self.lost_samples: list[tuple[int, int]] = []
        """(first sample, count) of every packet the band dropped (ground truth of losses)."""
        self._rng2 = np.random.default_rng(params.seed + 7919)  # new features' own stream
        self._outage_left = 0
        self._pings: deque[tuple[int, int]] = deque()  # (controller arrival, host send)
        self._stamped: list[tuple[int, int]] = []  # (host send, device rx) awaiting a reply
        self._replies = 0
        self._reply_of: dict[int, tuple[int, int, int]] = {}
        self.shakes: list[tuple[int, int]] = []
        """Host-time windows in which the wearer shakes the band (wearcap provision tells
        left from right by which band moved)."""
        self.taps: list[int] = []
        """True host instants at which the band is tapped against the head mount (wearcap
        calibrate); the head MCU's simulator is given the same instants."""

    def shake(self, start_host_ns: int, end_host_ns: int) -> None:
        self.shakes.append((start_host_ns, end_host_ns))

    def tap(self, host_ns: int) -> None:
        """The band is tapped against the head mount at true host time ``host_ns``."""
        self.taps.append(int(host_ns))

    # ---------------------------------------------------------------- ground truth
    def truth_ns(self, k: int | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """True host time(s) of sample(s) ``k``."""
        kf = np.asarray(k, dtype=np.float64)
        out: npt.NDArray[np.int64] = np.rint(
            self.start + self.phase + kf * self.period_host).astype(np.int64)
        return out

    def device_at(self, host_ns: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The band clock's reading at host time(s) ``host_ns``."""
        t = np.asarray(host_ns, dtype=np.float64) - self.start
        w = self._wander_amp * np.sin(2 * np.pi * t / (self.p.wander_period_s * 1e9))
        return (self.p.offset_ns + np.rint(t * (1 + self.p.drift_ppm * 1e-6) + w)).astype(
            np.int64)

    def device_ns(self, k: int | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self.device_at(self.truth_ns(k))

    def stamp_ns(self, k: int | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The device time the band *stamps* on sample(s) ``k``: its clock, plus the start-up
        transient (``startup_jump_ns`` settling over ``startup_ns``)."""
        d = self.device_ns(k)
        if not self.p.startup_jump_ns:
            return d
        t = self.truth_ns(k).astype(np.float64) - self.start
        w = np.clip(1.0 - t / max(1, self.p.startup_ns), 0.0, 1.0)
        out: npt.NDArray[np.int64] = d + np.rint(self.p.startup_jump_ns * w).astype(np.int64)
        return out

    @property
    def device_period_ns(self) -> float:
        return self.period_host * (1 + self.p.drift_ppm * 1e-6)

    # ---------------------------------------------------------------- motion
    def signal(self, k: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int16],
                                                        npt.NDArray[np.int16]]:
        """Counts at ±16 g / ±2000 °/s: gravity on a slowly turning wrist, hand motion,
        sensor noise (acc sigma 3 counts, gyro 2), so compression figures are honest."""
        t = k / self.p.rate_hz
        w = 2 * np.pi
        ph = self.p.seed * 0.7
        th = 0.6 * np.sin(w * 0.13 * t + ph) + 0.3 * np.sin(w * 0.71 * t + 1 + ph)
        fi = 0.5 * np.sin(w * 0.09 * t + 2 + ph) + 0.2 * np.sin(w * 1.3 * t + ph)
        dth = 0.6 * w * 0.13 * np.cos(w * 0.13 * t + ph) + 0.3 * w * 0.71 * np.cos(
            w * 0.71 * t + 1 + ph)
        dfi = 0.5 * w * 0.09 * np.cos(w * 0.09 * t + 2 + ph) + 0.2 * w * 1.3 * np.cos(
            w * 1.3 * t + ph)
        g = 2048.0
        hand = 0.25 * g * np.sin(w * 2.1 * t + ph) * np.sin(w * 0.05 * t)
        acc = np.stack([g * np.sin(th) + hand,
                        -g * np.sin(fi) * np.cos(th) + 0.5 * hand,
                        g * np.cos(fi) * np.cos(th)], axis=1)
        dps = 16.384 * 180 / np.pi
        gyro = np.stack([dfi * dps, dth * dps, 0.3 * np.sin(w * 0.4 * t + ph) * dps], axis=1)
        n = len(k)
        if self.shakes:  # a vigorous shake: +-1.5 g at 6 Hz on every axis
            tk = self.truth_ns(k)
            on = np.zeros(n, dtype=bool)
            for lo, hi in self.shakes:
                on |= (tk >= lo) & (tk < hi)
            acc += (on * 1.5 * g * np.sin(w * 6.0 * t))[:, None]
        if self.taps:
            acc += tap_accel(self.truth_ns(k), self.taps, g)
        acc += self.rng.normal(0, 3.0, (n, 3))
        gyro += self.rng.normal(0, 2.0, (n, 3))
        a: npt.NDArray[np.int16] = np.clip(np.rint(acc), -32767, 32767).astype(np.int16)
        gy: npt.NDArray[np.int16] = np.clip(np.rint(gyro), -32767, 32767).astype(np.int16)
        if self.recorded is not None:
            for j, kk in enumerate(k):
                self.recorded[int(kk)] = (a[j], gy[j])
        return a, gy

    # ---------------------------------------------------------------- packets
    def _make_packets(self, until_host_ns: int) -> None:
        """Queue every packet whose last sample is taken by ``until_host_ns``."""
        if self._at_events:
            self._pack_at_event(until_host_ns)
            return
        while True:
            k0 = self._next_sample
            ks = np.arange(k0, k0 + self.spp, dtype=np.int64)
            ready = int(self.truth_ns(ks[-1])) + self.p.ready_delay_ns
            if ready > until_host_ns:
                return
            acc, gyro = self.signal(ks)
            self._next_sample += self.spp
            if self.p.loss_prob and self.rng.random() < self.p.loss_prob:
                self.dropped_packets += 1
                self.lost_samples.append((k0, self.spp))
                continue
            for pkt, off, n in self._encode(k0, self.stamp_ns(ks), acc, gyro, None):
                if self._full():
                    self.dropped_packets += 1
                    self.lost_samples.append((k0 + off, n))
                    continue
                self._queue.append((ready, pkt, k0 + off, n))

    def _pack_at_event(self, ev: int) -> None:
        """Firmware that packs at events (the open profile's): in the radio-notification
        callback ``ANCHOR_LEAD_NS`` before a connection event, pack every sample taken so far
        (as many a notification as the MTU holds) and stamp the event's anchor."""
        from agent.wrist.decode import open_profile

        cut = ev - ANCHOR_LEAD_NS
        last = int(np.floor((cut - self.start - self.phase) / self.period_host))
        tx_ns = int(self.device_at(np.int64(ev)))
        while self._next_sample <= last:
            k0 = self._next_sample
            n = min(last + 1 - k0, open_profile.max_samples(self.mtu))
            ks = np.arange(k0, k0 + n, dtype=np.int64)
            acc, gyro = self.signal(ks)
            self._next_sample += n
            if self.p.loss_prob and self.rng.random() < self.p.loss_prob:
                self.dropped_packets += 1
                self.lost_samples.append((k0, n))
                continue
            for pkt, off, m in self._encode(k0, self.stamp_ns(ks), acc, gyro, tx_ns):
                if self._full():
                    self.dropped_packets += 1
                    self.lost_samples.append((k0 + off, m))
                    continue
                self._queue.append((ev, pkt, k0 + off, m))

    def _full(self) -> bool:
        return bool(self.p.queue_limit) and len(self._queue) >= self.p.queue_limit

    # ---------------------------------------------------------------- BLE delivery
    def connect(self, host_ns: int) -> None:
        """A (re)connection at ``host_ns``: a new interval and event phase."""
        lo, hi = self.p.interval_ms
        steps = self.rng.integers(round(lo / 1.25), round(hi / 1.25) + 1)
        self.interval_ns = int(steps * 1_250_000)
        self._next_event = host_ns + int(self.rng.integers(0, self.interval_ns))

    def disconnect(self, host_ns: int) -> int:
        """Drop everything not yet delivered (as a real disconnect does); returns samples lost
        (listed in ``lost_samples`` too)."""
        self._make_packets(host_ns)
        lost = 0
        for _, _, first, n in self._queue:
            if n > 0:
                self.lost_samples.append((first, n))
                lost += n
        self._queue.clear()
        self._stamped.clear()
        self._pings.clear()
        return lost

    def skip_until(self, host_ns: int) -> int:
        """The band keeps sampling while disconnected: discard samples up to ``host_ns``
        (listed in ``lost_samples``)."""
        before = self._next_sample
        self._make_packets(host_ns)
        for _, _, first, n in self._queue:
            if n > 0:
                self.lost_samples.append((first, n))
        self._queue.clear()
        return self._next_sample - before

    def ping(self, host_send_ns: int) -> None:
        """The host writes a time request at ``host_send_ns`` (two-way exchange)."""
        lat = self.p.write_latency_ns
        if self.p.write_jitter_ns:
            lat += int(self._rng2.exponential(self.p.write_jitter_ns))
        self._pings.append((host_send_ns + lat, host_send_ns))

    def _radio_ok(self) -> bool:
        """Whether this connection event gets through (congested links: interference)."""
        if self._outage_left:
            self._outage_left -= 1
            return False
        if self.p.outage_prob and self._rng2.random() < self.p.outage_prob:
            lo, hi = self.p.outage_events
            self._outage_left = int(self._rng2.integers(lo, hi + 1)) - 1
            return False
        return True

    def _exchanges(self, ev: int, ok: bool) -> None:
        """Requests on air at event ``ev``: the band stamps the event's anchor; its reply is
        queued for the next event."""
        if not ok:
            return
        while self._pings and self._pings[0][0] <= ev:
            _arr, send = self._pings.popleft()
            self._stamped.append((send, int(self.device_at(np.int64(ev)))))

    def deliveries_until(self, host_ns: int) -> list[Delivery]:
        """Deliveries of every connection event at or before ``host_ns``, in arrival order."""
        out: list[Delivery] = []
        while self._next_event <= host_ns:
            ev = self._next_event
            self._make_packets(ev)
            ok = self._radio_ok()
            if self._stamped:  # replies packed in the radio notification before this event
                tx = int(self.device_at(np.int64(ev)))
                for send, rx in self._stamped:
                    self._replies += 1  # a reply: no samples, "first" is -(its number)
                    self._reply_of[-self._replies] = (send, rx, tx)
                    self._queue.append((ev, b"", -self._replies, 0))
                self._stamped = []
            self._exchanges(ev, ok)
            fails = 0
            j = 0
            while ok and j < self.p.max_per_event:
                if not self._queue or self._queue[0][0] > ev:
                    break
                if self.rng.random() < self.p.retransmit_prob:
                    fails += 1
                    if fails >= self.p.close_after_failures:
                        break  # the event closes: this and later packets wait
                    j += 1  # retried in this event: costs an air slot
                    continue
                fails = 0
                _, pkt, first, n = self._queue.popleft()
                arr = ev + self.p.latency_ns + j * AIR_NS + int(
                    self.rng.exponential(self.p.jitter_ns)) if self.p.jitter_ns else \
                    ev + self.p.latency_ns + j * AIR_NS
                self._last_arrival = max(self._last_arrival, arr)
                exch = self._reply_of.pop(first, None) if first < 0 else None
                out.append(Delivery(self._last_arrival, pkt, first, n, exch))
                j += 1
            self._next_event += self.interval_ns
        return out

    def stop(self, host_ns: int, *, send_partial: bool = True) -> list[Delivery]:
        """The host's stop command reaches the band at ``host_ns``: it stops sampling, and
        sends what it still holds at once (the packets waiting for a connection event, and with
        ``send_partial`` the samples of the frame it was filling, as a short last packet).
        Without ``send_partial`` the partial frame is thrown away, as some vendor firmware
        does: those samples were taken but never sent."""
        self._make_packets(host_ns)
        last = int(np.floor((host_ns - self.start - self.phase) / self.period_host))
        if send_partial and self._next_sample <= last:
            k0 = self._next_sample
            ks = np.arange(k0, last + 1, dtype=np.int64)
            acc, gyro = self.signal(ks)
            self._next_sample = last + 1
            for pkt, off, n in self._encode(k0, self.device_ns(ks), acc, gyro, None):
                self._queue.append((host_ns, pkt, k0 + off, n))
        elif self._next_sample <= last:
            self._next_sample = last + 1
        out: list[Delivery] = []
        for j, (_ready, pkt, first, n) in enumerate(self._queue):
            arr = max(self._last_arrival, host_ns + self.p.latency_ns + j * AIR_NS)
            self._last_arrival = arr
            out.append(Delivery(arr, pkt, first, n))
        self._queue.clear()
        return out
