"""Ground-truth models of the MCU's clock and of the serial link's latency (pure, seeded).

The simulated MCU (agent/sim/mcu.py), the clock tests and bench/bench_mcu_clock.py share
them, so what the bench measures is what the rig runs.

- ``McuClock``: the MCU's crystal, with an offset, a drift (ppm), a slow sinusoidal drift
  wander (temperature) and 1 us ticks. ``device_ns(host_ns)`` is the truth the simulator
  knows and the agent must estimate; ``host_ns(device_ns)`` inverts it.
- ``LinkModel``: latency of each direction, never symmetric.
  - ``uart``: the bytes' time on the wire at ``baud`` (10 bits a byte), plus the host's
    tty/scheduler latency (exponential, larger on the receive side, with rare multi-ms
    spikes of a loaded host) and the MCU's interrupt latency.
  - ``usb-cdc``: full-speed USB moves bulk data in 1 ms frames. A request waits for the next
    frame of the host controller's 1 ms schedule; the answer, queued by the MCU just after,
    waits for the IN poll of a later frame, then for the host's URB completion. Half the
    round trip is therefore about 0.5 ms or more, and the two halves differ.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass
class McuClock:
    offset_ns: int = 3_141_592_653
    drift_ppm: float = 35.0
    wander_ppm: float = 0.3
    wander_period_s: float = 600.0
    tick_ns: int = 1_000
    origin_ns: int = 0

    def _phase(self, dt_ns: float) -> float:
        """Integrated drift (ns) over dt_ns of host time, wander included."""
        w = 2 * math.pi / (self.wander_period_s * 1e9)
        return (self.drift_ppm * 1e-6 * dt_ns
                + self.wander_ppm * 1e-6 * (1 - math.cos(w * dt_ns)) / w)

    def exact_ns(self, host_ns: int) -> float:
        dt = host_ns - self.origin_ns
        return self.offset_ns + dt + self._phase(dt)

    def device_ns(self, host_ns: int) -> int:
        """The MCU's clock reading (ticks, in ns) at a host instant."""
        t = self.exact_ns(host_ns)
        return int(t // self.tick_ns) * self.tick_ns

    def host_ns(self, device_ns: int) -> int:
        """The host instant at which the MCU's clock read ``device_ns`` (Newton, 3 steps)."""
        h = float(device_ns - self.offset_ns + self.origin_ns)
        for _ in range(3):
            h -= (self.exact_ns(int(h)) - device_ns) / (1 + self.drift_ppm * 1e-6)
        return round(h)


@dataclass
class LinkModel:
    kind: str = "uart"  # "uart" | "usb-cdc"
    baud: int = 921_600
    seed: int = 1
    host_tx_us: float = 15.0
    """Mean host-side send latency (write syscall to the UART FIFO / the next URB)."""
    host_rx_us: float = 60.0
    """Mean host-side receive latency (tty flip buffer, wake-up): larger than the send side."""
    spike_p: float = 0.01
    spike_us: float = 3000.0
    mcu_isr_us: float = 3.0
    usb_complete_us: float = 120.0
    frame_phase_ns: int = 371_000

    def __post_init__(self) -> None:
        if self.kind not in ("uart", "usb-cdc"):
            raise ValueError("link kind is 'uart' or 'usb-cdc'")
        self.rng = random.Random(self.seed)

    def _wire_ns(self, nbytes: int) -> int:
        return int(nbytes * 10 * 1e9 / self.baud)

    def _next_frame(self, t: int) -> int:
        p = self.frame_phase_ns
        return p + ((t - p) // 1_000_000 + 1) * 1_000_000

    def to_mcu(self, host_ns: int, nbytes: int) -> int:
        """Host instant at which a message written at ``host_ns`` is read by the MCU."""
        r = self.rng
        t = host_ns + int(r.expovariate(1 / self.host_tx_us) * 1000)
        if self.kind == "usb-cdc":
            t = self._next_frame(t) + int(r.uniform(20_000, 60_000))
        else:
            t += self._wire_ns(nbytes)
        return t + int(r.expovariate(1 / self.mcu_isr_us) * 1000)

    def to_host(self, mcu_ns: int, nbytes: int) -> int:
        """Host instant at which the agent can read a message the MCU queued at ``mcu_ns``."""
        r = self.rng
        if self.kind == "usb-cdc":
            t = self._next_frame(mcu_ns + 50_000) + int(r.expovariate(1 / self.usb_complete_us)
                                                          * 1000)
        else:
            t = mcu_ns + self._wire_ns(nbytes)
            t += int(r.expovariate(1 / self.host_rx_us) * 1000)
        if r.random() < self.spike_p:
            t += int(r.uniform(0.2, 1.0) * self.spike_us * 1000)
        return t


def exchange(clock: McuClock, link: LinkModel, host_send_ns: int,
             nbytes: int = 12) -> tuple[int, int, int]:
    """One simulated ping/pong: (host_send_ns, device_ns, host_recv_ns)."""
    at_mcu = link.to_mcu(host_send_ns, nbytes)
    d = clock.device_ns(at_mcu)
    back = link.to_host(at_mcu + int(link.rng.uniform(2_000, 8_000)), nbytes + 6)
    return host_send_ns, d, back
