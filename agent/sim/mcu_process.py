"""The simulated head MCU in a process of its own, for measurements of the agent's clock.

    with SimMcuProcess(SimMcuParams(link="uart")) as mcu:   # same API as SimMcu, in part
        camera.exposure_hook = mcu.on_exposure
        mcu.path; mcu.truth_host_ns(device_ns); mcu.fault("garbage", 200); mcu.unplug() ...

In the agent's own process (agent.sim.mcu.SimMcu) the simulated MCU's thread shares the
interpreter lock and the cores with the agent's threads, so the instants it "stamps" in
hardware (a ping's arrival, a pong's departure) are late by however long it waited for the
lock: the mapped time's error then measures the simulator as much as the agent. Here the
MCU runs in a child process and only the OS schedules it, as a real MCU is not scheduled
at all. Commands go over a pipe; the ground truth is computed here from the same clock
model (agent.sim.mcu_link.McuClock with the child's start instant).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from typing import Any

from agent.sim.mcu import SimMcu, SimMcuParams
from agent.sim.mcu_link import McuClock

_CALLS = ("on_exposure", "press", "tap", "fault", "unplug", "replug", "set_battery")
_READS = ("stats", "exchanges", "led_history", "haptic_history")


def _child(conn: Connection, params: SimMcuParams) -> None:
    sim = SimMcu(params)
    sim.start()
    conn.send((sim.path, sim.t_start))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            if msg[0] == "read":
                conn.send(getattr(sim, msg[1]))
            else:
                getattr(sim, msg[0])(*msg[1:])
    except (EOFError, OSError):
        pass
    finally:
        sim.stop()
        conn.send("stopped")


class SimMcuProcess:
    def __init__(self, params: SimMcuParams | None = None) -> None:
        self.p = params or SimMcuParams()
        ctx = mp.get_context("spawn")  # no fork of a process with threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, self.p), name="sim-mcu",
                                 daemon=True)
        self._lock = threading.Lock()
        self.path = ""
        self.clock: McuClock | None = None

    def start(self) -> None:
        self._proc.start()
        self.path, t_start = self._conn.recv()
        self.clock = McuClock(offset_ns=self.p.offset_ns, drift_ppm=self.p.drift_ppm,
                              origin_ns=t_start)

    def stop(self) -> None:
        with self._lock:
            try:
                self._conn.send(("stop",))
                self._conn.recv()
            except (EOFError, OSError):
                pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()

    def __enter__(self) -> SimMcuProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def truth_host_ns(self, device_ns: int) -> int:
        assert self.clock is not None
        return self.clock.host_ns(device_ns)

    def _call(self, name: str, *args: Any) -> None:
        with self._lock:
            self._conn.send((name, *args))

    def _read(self, name: str) -> Any:
        with self._lock:
            self._conn.send(("read", name))
            return self._conn.recv()

    def __getattr__(self, name: str) -> Any:
        if name in _CALLS:
            return lambda *args: self._call(name, *args)
        if name in _READS:
            return self._read(name)
        raise AttributeError(name)
