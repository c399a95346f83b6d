"""What a simulated band program sends: its GATT layout and its packets over time.

A ``Feed`` wraps the pure band simulation (``agent.sim.band_model``) and the sensor profile
(``agent.wrist.profiles``) for the peripheral program. ``CounterFeed`` is a trivial stand-in
(sequence number, device time, sample count, zero samples) used where no profile is named.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, replace
from typing import Any, Protocol

Char = tuple[str, list[str]]
"""(characteristic UUID, flags)"""
Layout = list[tuple[str, list[Char]]]
"""[(service UUID, [characteristics])] in registration order"""

DFU_SERVICE = "0000fe59-0000-1000-8000-00805f9b34fb"
DFU_CHAR = "8ec90003-f315-4f60-9fb8-838830daea50"
COUNTER_HEADER = struct.Struct("<IQH")


@dataclass(frozen=True, slots=True)
class GattLayout:
    service_uuid: str
    notify_uuid: str
    control_uuid: str
    variants: list[Layout]
    """Layout 0, then what a "firmware update" changes it to (same profile characteristics,
    different handles and an extra service)."""


def layouts_for(service: str, notify: str, control: str, extra: list[Char]) -> GattLayout:
    base: Layout = [(service, [(notify, ["notify", "read"]),
                               (control, ["write", "write-without-response", "notify"]),
                               *extra])]
    updated: Layout = [(DFU_SERVICE, [(DFU_CHAR, ["write", "indicate"])]), *base]
    return GattLayout(service, notify, control, [base, updated])


class Feed(Protocol):
    needs_start_command: bool

    def layout(self) -> GattLayout: ...

    def control(self, value: bytes) -> str | None:
        """A write to the control characteristic: "start", "stop" or None."""
        ...

    def reply(self, value: bytes) -> bytes | None:
        """The control point's reply to that write (None: this band sends none)."""
        ...

    def info(self) -> bytes:
        """The value of the info characteristic (b"" when the profile has none)."""
        ...

    def time_reply(self, value: bytes, band_rx_host_ns: int,
                   band_tx_host_ns: int | None = None) -> bytes | None:
        """The reply to a time request (open profile version 2), None if not one."""
        ...

    def stop(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        """The stop command arrives: what the band still sends (see ``BandModel.stop``)."""
        ...

    def skip_until(self, host_ns: int) -> int:
        """Discard what the band produced before ``host_ns``; return samples discarded."""
        ...

    def deliveries_until(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        """(host arrival ns, packet, samples in it) for connection events up to ``host_ns``."""
        ...

    def next_event_ns(self) -> int: ...

    def garbage(self) -> bytes: ...


class CounterFeed:
    """Deterministic counter packets at ``rate_hz``, one batch per connection event."""

    needs_start_command = False
    SERVICE = "7e570001-0000-4000-8000-00000000c0de"
    NOTIFY = "7e570002-0000-4000-8000-00000000c0de"
    CONTROL = "7e570003-0000-4000-8000-00000000c0de"

    def __init__(self, rate_hz: float, seed: int, interval_ms: tuple[float, float],
                 start_host_ns: int, max_per_packet: int = 16) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.rng = random.Random(seed)
        self.interval_ns = int(self.rng.uniform(*interval_ms) * 1e6)
        self.max_per_packet = max_per_packet
        self.next_sample_ns = start_host_ns
        self.next_event = start_host_ns + self.interval_ns
        self.seq = 0
        self.sample = 0

    def layout(self) -> GattLayout:
        return layouts_for(self.SERVICE, self.NOTIFY, self.CONTROL, [])

    def control(self, value: bytes) -> str | None:
        return {b"\x01": "start", b"\x00": "stop"}.get(value[:1])

    def reply(self, value: bytes) -> bytes | None:
        return None

    def info(self) -> bytes:
        return b""

    def time_reply(self, value: bytes, band_rx_host_ns: int,
                   band_tx_host_ns: int | None = None) -> bytes | None:
        return None

    def stop(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        return self.deliveries_until(host_ns)

    def skip_until(self, host_ns: int) -> int:
        return sum(n for _h, _p, n in self.deliveries_until(host_ns))

    def deliveries_until(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        out: list[tuple[int, bytes, int]] = []
        while self.next_event <= host_ns:
            event = self.next_event
            n_ready = max(0, (event - self.next_sample_ns) // self.period_ns + 1)
            while n_ready > 0:
                n = min(n_ready, self.max_per_packet)
                packet = COUNTER_HEADER.pack(self.seq & 0xFFFFFFFF, self.next_sample_ns, n)
                out.append((event, packet + bytes(12 * n), n))
                self.seq += 1
                self.sample += n
                self.next_sample_ns += n * self.period_ns
                n_ready -= n
            self.next_event += self.interval_ns
        return out

    def next_event_ns(self) -> int:
        return self.next_event

    def garbage(self) -> bytes:
        return bytes([0xEE]) * self.rng.randint(0, 5)


class ModelFeed:
    """A sensor profile's GATT layout and commands, with ``BandModel`` packets."""

    def __init__(self, profile: str, *, rate_hz: float, seed: int, drift_ppm: float,
                 interval_ms: tuple[float, float], start_host_ns: int,
                 refuse: frozenset[str] = frozenset(), send_partial: bool = True,
                 info_scales: tuple[float, float] | None = None, version: int = 2) -> None:
        """``refuse``: streams ("gyro") the band answers "not supported" and never sends;
        ``send_partial``: whether it sends its partial frame at stop; ``info_scales``: the
        (acc, gyro) scales its info characteristic reports (open profile)."""
        from agent.sim.band_model import BandModel, BandParams
        from agent.wrist.profiles import load_profile

        self.profile = load_profile(profile)
        self.rate_hz = self.profile.pick_rate(rate_hz)
        lo, hi = interval_ms
        self.model = BandModel(BandParams(profile=profile, rate_hz=self.rate_hz, seed=seed,
                                          drift_ppm=drift_ppm, interval_ms=(lo, hi)),
                               start_host_ns)
        self.needs_start_command = bool(self.profile.start)
        self._start = set(self.profile.start_commands(self.rate_hz))
        self._stop = set(self.profile.stop_commands())
        self.rng = random.Random(seed)
        self.refuse = refuse
        self.send_partial = send_partial
        self.info_scales = info_scales
        self.version = version
        """Open profile: the profile version the firmware implements (1: no replies, no
        time exchange)."""
        self.last_span: tuple[int, int] | None = None
        """True sample numbers (first, last) of the last ``deliveries_until`` that had any."""

    def layout(self) -> GattLayout:
        p = self.profile
        extra: list[Char] = [(p.info_uuid, ["read"])] if p.info_uuid else []
        return layouts_for(p.service_uuid, p.notify_uuid, p.control_uuid, extra)

    def control(self, value: bytes) -> str | None:
        if value in self._start:
            return "start"
        if value in self._stop:
            return "stop"
        return None

    def reply(self, value: bytes) -> bytes | None:
        from agent.wrist import control

        name = self.profile.name
        if name == "polar-pmd":
            req = control.pmd_request(value)
            if req is None:
                return control.encode_pmd_reply(value[0] if value else 0, 0, 4)
            op, meas = req
            refused = control.PMD_STREAMS.get(meas) in self.refuse
            return control.encode_pmd_reply(op, meas, 3 if refused and op == 2 else 0)
        if name == "wearcap-open":
            if self.version < 2:
                return None  # version 1 firmware answers nothing
            op = value[0] if value else 0
            want = {0x01: 1, 0x02: 1, 0x03: 3, 0x04: 9}
            if op not in want:
                return control.encode_open_reply(op, 1)
            if len(value) != want[op]:
                return control.encode_open_reply(op, 2)
            if op == 0x02:
                return control.encode_open_reply(op, 0, struct.pack(
                    "<I", self.model._next_sample % (1 << 32)))
            if op == 0x03:
                return control.encode_open_reply(op, 0, struct.pack("<H", round(self.rate_hz)))
            if op == 0x04:
                return None  # answered by time_reply(), after the radio's latencies
            return control.encode_open_reply(op, 0)
        return None

    def time_reply(self, value: bytes, band_rx_host_ns: int,
                   band_tx_host_ns: int | None = None) -> bytes | None:
        """The reply to a time request that reached the band at host time
        ``band_rx_host_ns`` and is sent at ``band_tx_host_ns``: the host's send time echoed
        and the band's clock at both (µs)."""
        if self.profile.name != "wearcap-open" or self.version < 2 or len(value) != 9 \
                or value[0] != 0x04:
            return None
        from agent.wrist import control
        from agent.wrist.decode.open_profile import time_reply_params

        host = struct.unpack_from("<Q", value, 1)[0]
        rx_us = int(self.model.device_at(band_rx_host_ns)) // 1000
        tx = band_tx_host_ns if band_tx_host_ns is not None else band_rx_host_ns
        tx_us = int(self.model.device_at(tx)) // 1000
        return control.encode_open_reply(0x04, 0, time_reply_params(host, rx_us, tx_us))

    def info(self) -> bytes:
        if self.profile.name != "wearcap-open":
            return b""
        from agent.wrist.decode.open_profile import Info

        d = replace(Info.default(round(self.rate_hz)), version=self.version,
                    clock_tick_ns=1000, min_rate_hz=1, max_rate_hz=1000)
        if self.info_scales is not None:
            d = replace(d, acc_scale=self.info_scales[0], gyro_scale=self.info_scales[1])
        return d.encode()

    def skip_until(self, host_ns: int) -> int:
        n = self.model.skip_until(host_ns)
        self.model.connect(host_ns)
        return n

    def _sent(self, ds: list[Any]) -> list[tuple[int, bytes, int]]:
        if ds:
            self.last_span = (ds[0].first_sample, ds[-1].first_sample + ds[-1].n - 1)
        out = [(d.host_ns, d.packet, d.n) for d in ds]
        if "gyro" in self.refuse and self.profile.name == "polar-pmd":
            out = [o for o in out if o[1][0] & 0x3F != 5]  # GYRO frames are never sent
        return out

    def deliveries_until(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        return self._sent(self.model.deliveries_until(host_ns))

    def stop(self, host_ns: int) -> list[tuple[int, bytes, int]]:
        return self._sent(self.model.stop(host_ns, send_partial=self.send_partial))

    def next_event_ns(self) -> int:
        return int(self.model._next_event)

    def garbage(self) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(0, 7)))


def make_feed(profile: str, *, rate_hz: float, seed: int, drift_ppm: float,
              interval_ms: tuple[float, float], start_host_ns: int | None = None,
              **band: Any) -> Feed:
    """``profile`` "counter" for raw counter packets, else a sensor profile's name."""
    import time

    start = time.monotonic_ns() if start_host_ns is None else start_host_ns
    if profile == "counter":
        return CounterFeed(rate_hz, seed, interval_ms, start)
    return ModelFeed(profile, rate_hz=rate_hz, seed=seed, drift_ppm=drift_ppm,
                     interval_ms=interval_ms, start_host_ns=start, **band)
