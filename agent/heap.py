"""Heap settings for a process that records for hours (glibc only; a no-op elsewhere).

glibc serves a large allocation (>= 128 KiB) from its own mmap and gives it back on free,
but after the first such free it raises that threshold (up to 32 MiB) and serves later
large blocks from the heap, where the holes they leave are rarely returned. The capture
process makes a large transient block every second (a chunk's buffer, its zstd context,
decoded pictures), so with the sliding threshold its RSS creeps up for many minutes.
Pinning the threshold keeps those blocks out of the heap: on the simulated rig the capture
process runs about 6 MB lower and flatter (``bench/bench_capture.py --soak``). ``trim``
hands free heap pages back at each segment roll.

``freeze`` keeps the objects alive once recording runs (the imported modules, the started
sources: ~46,000 on the simulated rig) out of the cyclic collector's passes until ``thaw``.
Each full pass walked all of them (about 35 ms of CPU here, one every ~40 s: 0.1 % of a core,
and a pause the serial and BLE readers wait through); after ``freeze`` a pass walks only what
recording allocates. Nothing is leaked: ``thaw`` hands them back to the collector.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc has it, musl and others may not
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve blocks of ``nbytes`` and more from mmap for the life of the process."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(nbytes)))
    if not ok:
        log.info("heap: mallopt(M_MMAP_THRESHOLD) refused")
    return ok


def trim() -> bool:
    """Give free heap memory back to the system (True if some was released)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(ctypes.c_size_t(0)))


def freeze() -> None:
    """Leave every object alive now out of the cyclic collector's passes (``gc.freeze``)."""
    gc.freeze()


def thaw() -> None:
    """Undo ``freeze``: those objects are collected as usual again."""
    gc.unfreeze()
