"""The host timeline: CLOCK_MONOTONIC nanoseconds, and what anchors it per segment.

Code that reads a clock takes a ``Clock`` so that tests control time.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

Clock = Callable[[], int]
"""A function returning nanoseconds on the host timeline."""

monotonic_ns: Clock = time.monotonic_ns

TIMELINE_DOC = (
    "log_time and every *_host_ns field: CLOCK_MONOTONIC nanoseconds on the host named by "
    "boot_id; wall time = realtime_ns + (t - monotonic_ns) using the segment's anchor"
)


def boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


def ntp_synchronized() -> bool | None:
    """Whether the kernel believes the wall clock is synchronised (None: cannot tell)."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

        class Timex(ctypes.Structure):
            _fields_ = [("modes", ctypes.c_uint), ("_pad", ctypes.c_byte * 204)]

        tx = Timex()
        state = libc.adjtimex(ctypes.byref(tx))
        if state < 0:
            return None
        return bool(state != 5)  # TIME_ERROR (5): clock not synchronised
    except Exception:
        if shutil.which("timedatectl"):
            try:
                out = subprocess.run(
                    ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                    capture_output=True, text=True, timeout=2, check=False,
                ).stdout.strip()
                return out == "yes"
            except (OSError, subprocess.SubprocessError):
                return None
        return None


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """Realtime and monotonic read together; the pair with the tightest bracket of 5 reads."""

    boot_id: str
    monotonic_ns: int
    realtime_ns: int
    uncertainty_ns: int
    ntp_synchronized: bool | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_anchor(clock: Clock = monotonic_ns, tries: int = 5) -> ClockAnchor:
    best: tuple[int, int, int] | None = None
    for _ in range(tries):
        a = clock()
        r = time.time_ns()
        b = clock()
        if best is None or b - a < best[2]:
            best = ((a + b) // 2, r, b - a)
    assert best is not None
    return ClockAnchor(
        boot_id=boot_id(),
        monotonic_ns=best[0],
        realtime_ns=best[1],
        uncertainty_ns=best[2],
        ntp_synchronized=ntp_synchronized(),
    )
