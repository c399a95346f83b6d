"""A pure simulation of one wrist band: clock, motion, packets in the profile's bytes, BLE delivery.

    model = BandModel(BandParams(profile="wearcap-open", seed=3), start_host_ns=0)
    for d in model.deliveries_until(10 * 10**9):   # Delivery(host_ns, packet, first, n)
        ...
    model.truth_ns(k)        # true host time of sample k (the k-th sample the band took)
    model.device_ns(k)       # the band clock's reading when it took sample k

The band's clock runs ``drift_ppm`` fast against the host, plus a slow sinusoidal wander of
``wander_ppm``; its samples come ``rate_error`` (fraction) faster than nominal. Samples are
packed ``samples_per_packet`` at a time by the profile's encoder (each profile's encoder
lives beside its decoder in agent/wrist/decode/), a packet is ready when its last sample is
taken, and it leaves at the next BLE connection event (interval drawn from
``interval_ms``, in 1.25 ms steps). A failed transmission (``retransmit_prob``) holds it and
every later packet to the next event. The host sees it ``latency_ns`` (the calibrated
minimum) + an exponential jitter of mean ``jitter_ns`` + air time after the event.
Deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.wrist.decode import PROFILES

POLAR_EPOCH_OFFSET_NS = 757_382_400_000_000_000  # a 2024 wall time, ns since 2000-01-01
ANCHOR_LEAD_NS = 1_000_000
"""Open-profile firmware packs its samples this long before a connection event."""
AIR_NS = 400_000
"""Time between consecutive packets within one connection event."""


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


DEFAULT_SPP = {"wearcap-open": 4, "polar-pmd": 16, "movesense": 8, "witmotion": 1}

Encoder = Callable[[int, npt.NDArray[np.int64], npt.NDArray[np.int16],
                    npt.NDArray[np.int16]], list[bytes]]


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
        self._encode = self._encoder()
        self._next_sample = 0
        self._queue: deque[tuple[int, bytes, int, int]] = deque()  # ready, packet, first, n
        self.interval_ns = 0
        self._next_event = 0
        self._last_arrival = 0
        self.connect(start_host_ns)
        self.dropped_packets = 0

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
        acc += self.rng.normal(0, 3.0, (n, 3))
        gyro += self.rng.normal(0, 2.0, (n, 3))
        a: npt.NDArray[np.int16] = np.clip(np.rint(acc), -32767, 32767).astype(np.int16)
        gy: npt.NDArray[np.int16] = np.clip(np.rint(gyro), -32767, 32767).astype(np.int16)
        if self.recorded is not None:
            for j, kk in enumerate(k):
                self.recorded[int(kk)] = (a[j], gy[j])
        return a, gy

    # ---------------------------------------------------------------- packets
    def _encoder(self) -> Encoder:
        prof = self.p.profile
        if prof == "wearcap-open":
            from agent.wrist.decode import open_profile

            def enc(k0: int, dev: npt.NDArray[np.int64], acc: npt.NDArray[np.int16],
                    gyro: npt.NDArray[np.int16]) -> list[bytes]:
                return [open_profile.encode(k0, int(dev[0]) // 1000,
                                            round(self.device_period_ns), acc, gyro)]
            return enc
        if prof == "polar-pmd":
            from agent.wrist.decode import polar_pmd

            pe = polar_pmd.PolarEncoder()
            return lambda k0, dev, acc, gyro: pe.encode(
                dev + POLAR_EPOCH_OFFSET_NS, acc, gyro)
        if prof == "movesense":
            from agent.wrist.decode import movesense

            me = movesense.MovesenseEncoder()
            return lambda k0, dev, acc, gyro: [me.encode(int(dev[0]) // 1_000_000, acc, gyro)]
        from agent.wrist.decode import witmotion

        return lambda k0, dev, acc, gyro: [witmotion.encode(a, g)
                                           for a, g in zip(acc, gyro, strict=True)]

    def _make_packets(self, until_host_ns: int) -> None:
        """Queue every packet whose last sample is taken by ``until_host_ns``."""
        if self.p.profile == "wearcap-open":
            self._pack_at_event(until_host_ns)
            return
        while True:
            k0 = self._next_sample
            ks = np.arange(k0, k0 + self.spp, dtype=np.int64)
            ready = int(self.truth_ns(ks[-1]))
            if ready > until_host_ns:
                return
            acc, gyro = self.signal(ks)
            self._next_sample += self.spp
            if self.p.loss_prob and self.rng.random() < self.p.loss_prob:
                self.dropped_packets += 1
                continue
            per = self.spp if self.p.profile != "witmotion" else 1
            for j, pkt in enumerate(self._encode(k0, self.device_ns(ks), acc, gyro)):
                first = k0 + (j if per == 1 else 0)
                self._queue.append((ready, pkt, first, per if per == 1 else self.spp))

    def _pack_at_event(self, ev: int) -> None:
        """Open-profile firmware: in the radio-notification callback ``ANCHOR_LEAD_NS`` before
        a connection event, pack every sample taken so far and stamp the event's anchor."""
        from agent.wrist.decode import open_profile

        cut = ev - ANCHOR_LEAD_NS
        last = int(np.floor((cut - self.start - self.phase) / self.period_host))
        tx_us = int(self.device_at(np.int64(ev))) // 1000
        while self._next_sample <= last:
            k0 = self._next_sample
            n = min(last + 1 - k0, open_profile.max_samples(self.mtu))
            ks = np.arange(k0, k0 + n, dtype=np.int64)
            acc, gyro = self.signal(ks)
            self._next_sample += n
            if self.p.loss_prob and self.rng.random() < self.p.loss_prob:
                self.dropped_packets += 1
                continue
            dev = self.device_ns(ks)
            pkt = open_profile.encode(k0, int(dev[0]) // 1000, round(self.device_period_ns),
                                      acc, gyro, tx_us=tx_us, anchor=True)
            self._queue.append((ev, pkt, k0, n))

    # ---------------------------------------------------------------- BLE delivery
    def connect(self, host_ns: int) -> None:
        """A (re)connection at ``host_ns``: a new interval and event phase."""
        lo, hi = self.p.interval_ms
        steps = self.rng.integers(round(lo / 1.25), round(hi / 1.25) + 1)
        self.interval_ns = int(steps * 1_250_000)
        self._next_event = host_ns + int(self.rng.integers(0, self.interval_ns))

    def disconnect(self, host_ns: int) -> int:
        """Drop everything not yet delivered (as a real disconnect does); returns samples lost."""
        self._make_packets(host_ns)
        lost = sum(n for _, _, _, n in self._queue)
        self._queue.clear()
        return lost

    def skip_until(self, host_ns: int) -> int:
        """The band keeps sampling while disconnected: discard samples up to ``host_ns``."""
        before = self._next_sample
        self._make_packets(host_ns)
        self._queue.clear()
        return self._next_sample - before

    def deliveries_until(self, host_ns: int) -> list[Delivery]:
        """Deliveries of every connection event at or before ``host_ns``, in arrival order."""
        out: list[Delivery] = []
        while self._next_event <= host_ns:
            ev = self._next_event
            self._make_packets(ev)
            for j in range(self.p.max_per_event):
                if not self._queue or self._queue[0][0] > ev:
                    break
                if self.rng.random() < self.p.retransmit_prob:
                    break  # not acknowledged: this and later packets wait for the next event
                _, pkt, first, n = self._queue.popleft()
                arr = ev + self.p.latency_ns + j * AIR_NS + int(
                    self.rng.exponential(self.p.jitter_ns)) if self.p.jitter_ns else \
                    ev + self.p.latency_ns + j * AIR_NS
                self._last_arrival = max(self._last_arrival, arr)
                out.append(Delivery(self._last_arrival, pkt, first, n))
            self._next_event += self.interval_ns
        return out
