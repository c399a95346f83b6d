"""The serial adapter for the head MCU (pyserial, imported lazily): bytes in, stamped.

    port = SerialLink("/dev/ttyAMA0" | "/dev/wearcap-mcu" | "usb:1209:0001", baud, on_bytes)
    port.start(); port.write(frame); port.stop()

A reader thread waits on the port and hands every read to ``on_bytes(host_ns, data)``, with
``host_ns`` taken as the read returns: the agent's receive time of everything in it. The
callback only pushes into a ring (agent.mcu.source); decoding happens in the writer's
``drain()``, so the serial side never blocks the capture loop.

The port is named by a path, a udev-style symlink (resolved again at every open, so a
re-enumerated device under a new ``ttyACM<n>`` is found through the same link), or
``usb:VID:PID`` (hex; matched with ``serial.tools.list_ports``). When the device goes away
(unplugged, or a read fails), the link reports ``lost`` and keeps trying to open it again
every ``retry_seconds``; when it is back it reports ``opened``. ``on_event(kind, host_ns,
detail)`` receives these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from agent.timeline import Clock, monotonic_ns

log = logging.getLogger("wearcap.mcu")


def resolve_port(spec: str) -> str | None:
    """The device path for a port spec, or None when it is not there now."""
    if spec.startswith("usb:"):
        try:
            vid, pid = (int(x, 16) for x in spec[4:].split(":"))
        except ValueError:
            raise ValueError(f"mcu port {spec!r}: expected usb:VID:PID in hex") from None
        from serial.tools import list_ports

        for p in sorted(list_ports.comports(), key=lambda p: p.device):
            if p.vid == vid and p.pid == pid:
                return str(p.device)
        return None
    if not os.path.exists(spec):
        return None
    return os.path.realpath(spec)


class SerialLink:
    def __init__(self, spec: str, baud: int, on_bytes: Callable[[int, bytes], None], *,
                 on_event: Callable[[str, int, str], None] | None = None,
                 on_open: Callable[[], None] | None = None,
                 clock: Clock = monotonic_ns, retry_seconds: float = 0.5,
                 poll_seconds: float = 0.05) -> None:
        self.spec = spec
        self.baud = baud
        self.on_bytes = on_bytes
        self.on_event = on_event or (lambda kind, ns, detail: None)
        self.on_open = on_open
        self.clock = clock
        self.retry_seconds = retry_seconds
        self.poll_seconds = poll_seconds
        self._ser: Any = None
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.device: str | None = None
        self.opens = 0
        self.losses = 0
        self.bytes_in = 0
        self.write_errors = 0

    # ------------------------------------------------------------ control
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mcu-serial", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close()

    @property
    def connected(self) -> bool:
        return self._ser is not None

    def write(self, data: bytes) -> int | None:
        """Write a frame now; the host time just before the write, or None if not open."""
        with self._wlock:
            ser = self._ser
            if ser is None:
                return None
            t = self.clock()
            try:
                ser.write(data)
            except Exception as exc:  # a port that just went away: the reader notices
                self.write_errors += 1
                log.debug("mcu write failed: %s", exc)
                return None
            return t

    # ------------------------------------------------------------ reader thread
    def _open(self) -> bool:
        import serial

        try:
            path = resolve_port(self.spec)
        except ValueError as exc:
            log.error("%s", exc)
            return False
        if path is None:
            return False
        try:
            ser = serial.Serial(path, self.baud, timeout=0, write_timeout=0.5,
                                exclusive=True)
        except (OSError, serial.SerialException) as exc:
            log.debug("mcu open %s failed: %s", path, exc)
            return False
        # bytes the device sent while nobody read are stale: their arrival time lies
        with contextlib.suppress(OSError, serial.SerialException):
            ser.reset_input_buffer()
        with self._wlock:
            self._ser = ser
        self.device = path
        self.opens += 1
        self.on_event("opened", self.clock(), path)
        if self.on_open is not None:
            self.on_open()
        return True

    def _close(self) -> None:
        with self._wlock:
            ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._ser is None and not self._open():
                self._stop.wait(self.retry_seconds)
                continue
            try:
                self._read_once()
            except Exception as exc:  # unplugged, EIO, a closed pty: reopen
                self.losses += 1
                self._close()
                self.on_event("lost", self.clock(), str(exc) or type(exc).__name__)

    def _read_once(self) -> None:
        ser = self._ser
        fd = ser.fileno()
        ready, _, _ = select.select([fd], [], [], self.poll_seconds)
        if not ready:
            return
        data = os.read(fd, 4096)
        now = self.clock()
        if not data:
            raise OSError("device disconnected (end of file)")
        self.bytes_in += len(data)
        self.on_bytes(now, data)
