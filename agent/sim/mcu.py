"""The simulated head MCU, on a pseudo-terminal: the agent's real pyserial code reads it.

    mcu = SimMcu(SimMcuParams(link="uart"))
    mcu.start()                 # a pty; mcu.path is a stable symlink to its slave side
    camera.exposure_hook = mcu.on_exposure      # the camera's TRUE exposure times
    mcu.press(0.3)              # the wearer's button (also scripted: params.script)
    mcu.fault("garbage", 200) / fault("truncate") / unplug() / replug()
    mcu.truth_host_ns(tick_ns)  # ground truth: the host instant of an MCU clock reading
    mcu.stop()

It behaves as docs/mcu-protocol.md says firmware must:
- its own clock (``agent.sim.mcu_link.McuClock``: offset, drift, wander, 1 us ticks);
- each message reaches the agent after the link's latency (``LinkModel``: UART wire time and
  host jitter, or USB CDC's 1 ms frames; never symmetric), in order;
- a ping is stamped when it arrives at the MCU (after the link's forward latency), and the
  pong is queued at once;
- a 1 kHz IMU sampled on the MCU's clock (data-ready jitter of a few us), sent in frames of
  ``imu_batch`` samples, numbered, with a seq counter on every frame;
- a strobe per camera frame, from the exposure times the camera reports through
  ``on_exposure`` (the simulated sensor's truth, not the agent's stamps);
- button edges, battery reports, hello at start and on request, LED/haptic commands kept in
  ``led_history`` / ``haptic_history`` for tests;
- the host-silence rule: an accepted host silent for 3 s without a ``bye`` is shown as a
  fault (appended to ``led_history``, counted in ``stats["host_silence_faults"]``);
- faults: ``garbage`` bytes, a ``truncate``d frame, ``unplug()`` (the pty closes, frames in
  flight are lost, the IMU keeps sampling) and ``replug()`` (a new pty behind the same
  symlink, as udev does on re-enumeration).

Taps: ``tap(host_ns)`` puts a sharp acceleration spike on the head IMU at that instant, for
tap calibration against a wrist band.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import os
import random
import select
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.mcu import protocol as p
from agent.sim.mcu_link import LinkModel, McuClock

MOD32 = 1 << 32


@dataclass
class SimMcuParams:
    link: str = "uart"
    baud: int = 921_600
    drift_ppm: float = 35.0
    offset_ns: int = 3_141_592_653
    seed: int = 7
    imu_hz: float = 1000.0
    imu_batch: int = 20
    battery_percent: float = 80.0
    battery_drain_pct_per_min: float = 0.0
    charging: bool = False
    script: list[tuple[float, float]] = field(default_factory=list)
    """Button presses: (seconds after the host first accepts the MCU's hello, that is once
    it listens, held seconds). A press before anyone reads the port is lost, as on a rig."""
    major: int = p.PROTO_MAJOR
    minor: int = p.PROTO_MINOR
    directory: str | None = None


def params_from_config(cfg: Any) -> SimMcuParams:
    """The simulated MCU of a config's [sim] section (agent.config.SimSection)."""
    presses = []
    for item in cfg.sim.mcu_presses:
        at, _, held = str(item).partition(":")
        presses.append((float(at), float(held or 0.2)))
    return SimMcuParams(link=cfg.sim.mcu_link, baud=cfg.mcu.baud,
                        drift_ppm=cfg.sim.mcu_drift_ppm, seed=cfg.sim.seed + 100,
                        script=presses)


class SimMcu:
    def __init__(self, params: SimMcuParams | None = None) -> None:
        self.p = params or SimMcuParams()
        self.rng = random.Random(self.p.seed)
        self.t_start = time.monotonic_ns()
        self.clock = McuClock(offset_ns=self.p.offset_ns, drift_ppm=self.p.drift_ppm,
                              origin_ns=self.t_start)
        self.link = LinkModel(self.p.link, baud=self.p.baud, seed=self.p.seed + 1)
        self._dir = Path(self.p.directory or tempfile.mkdtemp(prefix="wearcap-mcu-"))
        self.path = str(self._dir / "mcu")
        self._master: int | None = None
        self._slave: int | None = None
        self._lock = threading.Lock()
        self._out: list[tuple[int, int, bytes, int]] = []  # heap: (at_ns, order, frame, n)
        self._order = 0
        self._last_deliver = 0
        self._seq = 0
        self._imu_index = 0
        self._next_imu_ns = self.t_start
        self._strobe_index = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder = p.Decoder()
        self._presses: list[tuple[int, bool]] = []  # (host_ns, down)
        self._taps: list[int] = []
        self._plugged = False
        self._accepted = False
        self._host_rx = 0  # last valid frame from the host (host-silence rule)
        self._bye = False
        self._next_hello = 0
        self._next_battery = 0
        self.battery = self.p.battery_percent
        self.charging = self.p.charging
        self.led_history: list[tuple[int, int, int]] = []
        self._tx: collections.deque[tuple[int, int, bytes, int]] = collections.deque()
        self._tx_partial = 0
        self._pong_orders: dict[int, int] = {}
        self.exchanges: dict[int, list[int]] = {}
        """Per pong tick: [the instant the sim read the ping, the modelled instant the MCU
        stamped it, the instant the link model delivers the pong, the instant the sim wrote
        it to the pty]: what the real pty and scheduler add, for bench/bench_mcu_rig.py."""
        self.haptic_history: list[tuple[int, int, int]] = []
        self.stats: dict[str, Any] = {"frames_out": 0, "frames_lost_unplugged": 0,
                                      "imu_samples": 0, "strobes": 0, "pongs": 0,
                                      "pings": 0, "garbage_bytes": 0, "truncated": 0,
                                      "unplugs": 0, "samples_while_unplugged": 0,
                                      "rx_bad": 0, "accepts": 0, "samples_sent": 0,
                                      "samples_never_sent": 0,
                                      "frames_dropped_no_reader": 0,
                                      "host_silence_faults": 0}
        self._script_started = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._plug()
        self._thread = threading.Thread(target=self._run, name="sim-mcu", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._unplug_fds()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __enter__(self) -> SimMcu:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _plug(self) -> None:
        import tty

        m, s = os.openpty()
        tty.setraw(s)
        os.set_blocking(m, False)
        name = os.ttyname(s)
        tmp = self.path + ".new"
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.symlink(name, tmp)
        os.replace(tmp, self.path)
        with self._lock:
            self._master, self._slave = m, s
            self._plugged = True
            self._accepted = False
            self._next_hello = 0

    def _unplug_fds(self) -> None:
        with self._lock:
            m, s = self._master, self._slave
            self._master = self._slave = None
            self._plugged = False
        for fd in (m, s):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ------------------------------------------------------------ ground truth
    def truth_host_ns(self, device_ns: int) -> int:
        """Host instant at which the MCU's (unwrapped) clock read ``device_ns``."""
        return self.clock.host_ns(device_ns)

    def tick(self, host_ns: int) -> int:
        """The MCU's uint32 us tick at a host instant."""
        return (self.clock.device_ns(host_ns) // p.TICK_NS) % MOD32

    # ------------------------------------------------------------ scripted input
    def press(self, held_s: float, at_ns: int | None = None) -> None:
        t = time.monotonic_ns() + 1_000_000 if at_ns is None else at_ns
        with self._lock:
            self._presses += [(t, True), (t + int(held_s * 1e9), False)]
            self._presses.sort()

    def tap(self, host_ns: int) -> None:
        with self._lock:
            self._taps.append(host_ns)

    def on_exposure(self, index: int, start_ns: int, end_ns: int) -> None:
        """The camera's true exposure of frame ``index`` (host ns): one strobe pulse."""
        rise, fall = self.tick(start_ns), self.tick(end_ns)
        with self._lock:
            self._strobe_index += 1
            n = self._strobe_index - 1
        self._send(p.Strobe(0, n % MOD32, rise, fall), max(end_ns, time.monotonic_ns()))
        self.stats["strobes"] += 1

    # ------------------------------------------------------------ faults
    def fault(self, kind: str, n: int = 64) -> None:
        if kind == "garbage":
            junk = bytes(self.rng.randrange(256) for _ in range(n))
            self._queue(junk, time.monotonic_ns())
            self.stats["garbage_bytes"] += n
        elif kind == "truncate":
            f = p.encode(p.Battery(self._next_seq(), 3700, 50, False))
            self._queue(f[: len(f) // 2] + b"\x00", time.monotonic_ns())
            self.stats["truncated"] += 1
        else:
            raise ValueError(f"unknown fault {kind!r}")

    def unplug(self) -> None:
        self.stats["unplugs"] += 1
        self._unplug_fds()
        with self._lock:
            self.stats["frames_lost_unplugged"] += len(self._out)
            self.stats["samples_never_sent"] += sum(e[3] for e in self._out)
            self._out.clear()

    def replug(self) -> None:
        self._plug()

    def set_battery(self, percent: float, charging: bool | None = None) -> None:
        self.battery = percent
        if charging is not None:
            self.charging = charging
        self._next_battery = 0

    # ------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        with self._lock:
            s = self._seq
            self._seq = (s + 1) % p.SEQ_MOD
        return s

    def _send(self, msg: Any, queued_host_ns: int) -> tuple[int, int]:
        """Queue a message for the link; (its delivery instant, its order number)."""
        msg = type(msg)(self._next_seq(), *[getattr(msg, f) for f in msg.__dataclass_fields__
                                            if f != "seq"])
        frame = p.encode(msg)
        at = self.link.to_host(queued_host_ns, len(frame))
        return self._queue(frame, at, msg.n if isinstance(msg, p.ImuBatch) else 0)

    def _queue(self, data: bytes, at_ns: int, samples: int = 0) -> tuple[int, int]:
        with self._lock:
            if not self._plugged:
                self.stats["frames_lost_unplugged"] += 1
                self.stats["samples_never_sent"] += samples
                return at_ns, -1
            at = max(at_ns, self._last_deliver)  # one wire: in order
            self._last_deliver = at
            self._order += 1
            heapq.heappush(self._out, (at, self._order, data, samples))
            return at, self._order

    # ------------------------------------------------------------ the MCU's loop
    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic_ns()
            self._sample_imu(now)
            self._buttons(now)
            self._periodic(now)
            self._deliver(now)
            self._receive(now)
            with self._lock:
                nxt = self._out[0][0] if self._out else now + 5_000_000
            wait = min(max(nxt - time.monotonic_ns(), 0), self._next_imu_ns + 10_000_000
                       - now, 5_000_000)
            fd = self._master
            if fd is not None:
                try:
                    select.select([fd], [fd] if self._tx else [], [], max(wait, 0) / 1e9)
                except (OSError, ValueError):
                    time.sleep(0.001)
            else:
                time.sleep(max(wait, 0) / 1e9)

    def _imu_sample(self, k: int, host_ns: int) -> tuple[int, ...]:
        t = host_ns / 1e9
        ax = int(300 * math.sin(2 * math.pi * 0.7 * t)) + self.rng.randint(-4, 4)
        ay = int(200 * math.sin(2 * math.pi * 1.3 * t)) + self.rng.randint(-4, 4)
        az = 2048 + self.rng.randint(-4, 4)
        for tap in self._taps:
            dt = host_ns - tap
            if 0 <= dt < 3_000_000:
                az += int(12000 * math.exp(-dt / 600_000))
        gx, gy, gz = (int(80 * math.sin(2 * math.pi * 0.4 * t + i)) + self.rng.randint(-2, 2)
                      for i in range(3))
        return ax, ay, max(-32768, min(32767, az)), gx, gy, gz

    def _sample_imu(self, now: int) -> None:
        """Every sample up to now, on the MCU's clock grid; a frame per imu_batch samples."""
        period_dev = int(1e9 / self.p.imu_hz)
        n = self.p.imu_batch
        while True:
            first_dev = self.clock.offset_ns + (self._imu_index + 1) * period_dev
            last_host = self.clock.host_ns(first_dev + (n - 1) * period_dev)
            if last_host > now:
                self._next_imu_ns = last_host
                return
            ticks, data = [], []
            for i in range(n):
                dev = first_dev + i * period_dev + self.rng.randint(0, 3) * 1000
                host = self.clock.host_ns(dev)
                ticks.append((dev // p.TICK_NS) % MOD32)
                data.append(self._imu_sample(self._imu_index + i, host))
            tick0 = ticks[0]
            deltas = tuple((t - tick0) % MOD32 for t in ticks[1:])
            samples = b"".join(struct.pack("<6h", *s) for s in data)
            msg = p.ImuBatch(0, self._imu_index % MOD32, tick0, deltas, samples)
            self._imu_index += n
            self.stats["imu_samples"] += n
            if not self._plugged:
                self.stats["samples_while_unplugged"] += n
            self._send(msg, last_host + 20_000)

    def _buttons(self, now: int) -> None:
        with self._lock:
            due = [e for e in self._presses if e[0] <= now]
            self._presses = [e for e in self._presses if e[0] > now]
        for t, down in due:
            self._send(p.Button(0, down, self.tick(t)), max(t, now))

    def _host_silence(self, now: int) -> None:
        """docs/mcu-protocol.md, "Host silence": an accepted host that says nothing for
        HOST_SILENCE_S, without a bye, is shown as a fault, kept until the next led."""
        if (self._accepted and not self._bye
                and now - self._host_rx > p.HOST_SILENCE_S * 1e9):
            from agent.mcu.led import FAST, RED

            self.led_history.append((now, FAST, RED))
            self.stats["host_silence_faults"] += 1
            self._accepted = False  # as after boot: hello once a second until an accept
            self._next_hello = now

    def _periodic(self, now: int) -> None:
        self._host_silence(now)
        if self._plugged and not self._accepted and now >= self._next_hello:
            self._next_hello = now + 1_000_000_000
            self._send(p.Hello(0, self.p.major, self.p.minor, "sim-1.0", {
                "imu_hz": int(self.p.imu_hz), "acc_g": 16, "gyro_dps": 2000, "strobe": True,
                "led": True, "haptic": True, "battery": True}), now)
        if now >= self._next_battery:
            self._next_battery = now + 5_000_000_000
            mins = (now - self.t_start) / 6e10
            pct = max(0.0, self.battery - self.p.battery_drain_pct_per_min * mins
                      * (0 if self.charging else 1))
            mv = int(3300 + 9 * pct)
            self._send(p.Battery(0, mv, int(pct), self.charging), now)

    TX_BUFFER_S = 2.0
    """How long a frame may wait for a reader (a host that does not read, or has not opened
    the port yet) before it is dropped: about the 32-64 KiB a host's tty layer buffers. The
    MCU never blocks on its transmitter; a pty only takes ~17 KB, so without this the
    simulator would stall, then deliver seconds of old samples at once."""

    def _deliver(self, now: int) -> None:
        with self._lock:
            while self._out and self._out[0][0] <= now:
                e = heapq.heappop(self._out)
                self._tx.append((e[0], e[1], e[2], e[3]))
            fd = self._master
        tx = self._tx
        while tx:
            _, order, frame, n = tx[0]
            try:
                if fd is None:
                    raise OSError("unplugged")
                if self._tx_partial:
                    frame = frame[self._tx_partial:]
                k = os.write(fd, frame)
            except BlockingIOError:
                break  # the reader is behind: try again at the next turn of the loop
            except OSError:
                self.stats["frames_lost_unplugged"] += len(tx)
                self.stats["samples_never_sent"] += sum(e[3] for e in tx)
                tx.clear()
                self._tx_partial = 0
                return
            if k < len(frame):  # a frame begun on the wire is finished first
                self._tx_partial += k
                break
            self._tx_partial = 0
            tx.popleft()
            self.stats["frames_out"] += 1
            self.stats["samples_sent"] += n
            if order in self._pong_orders:
                tick = self._pong_orders.pop(order)
                rec = self.exchanges.get(tick)
                if rec is not None:
                    rec[3] = time.monotonic_ns()
        stale = time.monotonic_ns() - int(self.TX_BUFFER_S * 1e9)
        while tx and tx[0][0] < stale and not self._tx_partial:  # behind an absent reader
            _, _, _, n = tx.popleft()
            self.stats["frames_dropped_no_reader"] += 1
            self.stats["samples_never_sent"] += n

    def _receive(self, now: int) -> None:
        fd = self._master
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        now = time.monotonic_ns()  # after the read: the ping was certainly here by now
        bad = self._decoder.bad_frames
        for m in self._decoder.feed(data):
            self._host_rx = now
            if isinstance(m, p.Bye):
                self._bye = True
            if isinstance(m, p.Ping):
                self.stats["pings"] += 1
                at_mcu = self.link.to_mcu(now, 11)
                tick = self.tick(at_mcu)
                at, order = self._send(p.Pong(0, m.ping_id, tick), at_mcu + 3_000)
                self.stats["pongs"] += 1
                if len(self.exchanges) < 100_000:
                    self.exchanges[tick] = [now, at_mcu, at, 0]
                    self._pong_orders[order] = tick
            elif isinstance(m, p.HelloRequest):
                self._accepted = False
                self._next_hello = 0
            elif isinstance(m, p.Accept):
                self._accepted = m.major == self.p.major
                self._bye = False
                self.stats["accepts"] += 1
                if not self._script_started:
                    self._script_started = True
                    for at_s, held in self.p.script:
                        self.press(held, at_ns=now + int(at_s * 1e9))
                self._next_battery = 0  # the host is listening now: tell it at once
            elif isinstance(m, p.Led):
                self.led_history.append((now, m.pattern, m.rgb))
            elif isinstance(m, p.Haptic):
                self.haptic_history.append((now, m.pattern, m.ms))
        if self._decoder.bad_frames > bad:
            self.stats["rx_bad"] += self._decoder.bad_frames - bad
            self._send(p.McuError(0, 1, "bad frame received"), now)
