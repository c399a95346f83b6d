"""One asyncio event loop, on one thread, for every BLE link of the process.

bleak keeps one BlueZ manager (one D-Bus connection and a cache of BlueZ's objects) per event
loop. With a loop per band, the second band's manager could start while the first band's
scan was making BlueZ create the bands' device objects; the manager then lost those objects
(its start-up replaces signals handled between the reply to ``GetManagedObjects`` and its
own resumption with the older reply), and that band was "not found" for the whole recording.
One shared loop means one manager, set up once before any link scans, and half the D-Bus
signal parsing (every manager parses every band's notifications).

    loop = acquire()                  # starts the thread on first use
    fut = loop.submit(coro)           # a concurrent.futures.Future
    release(loop)                     # the last user stops the thread and closes the loop

A new loop is made after the last user leaves, so a later rig (a new private bus) gets a new
manager.

The loop is uvloop's where it is installed (``LOOP``; ``WEARCAP_BLE_LOOP=asyncio`` in the
environment keeps asyncio's). Every data notification wakes the loop once, and on a shared,
busy CPU each wake runs with the caches cold, so what a wake costs is mostly how much code it
runs: asyncio's loop iteration (``_run_once``, the selector, the handle) is Python, uvloop's is
compiled. The BLE loop costs about 15 % less per notification
(``bench/bench_capture_threads.py``, in turns against the asyncio loop). Timers differ:
asyncio's wake within a millisecond after their instant (its selector's timeout is rounded up
to one); uvloop's ``sleep`` rounds to a whole millisecond counted from the last whole one, so
it wakes up to 1.5 ms early. The coroutine whose timing matters (``BleLink._time_loop``, the
aimed time requests) sleeps with ``sleep_ns``, which wakes on uvloop about as asyncio's loop
does (``bench/bench_loop_timers.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def _loop_kind() -> str:
    if os.environ.get("WEARCAP_BLE_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


LOOP = _loop_kind()
"""The BLE loop's implementation: ``uvloop`` where it is installed, else ``asyncio``."""


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``LOOP`` names."""
    if LOOP == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep_ns(wait_ns: float) -> None:
    """Sleep ``wait_ns`` (<= 0: just yield), woken about when asyncio's own loop would wake
    the sleeper, on either loop. uvloop's ``sleep`` rounds the delay to a whole millisecond
    and counts it from the last whole millisecond of its clock (the monotonic clock), so it
    wakes up to 1.5 ms early. Its ``call_at`` counts the rounded delay from that same
    millisecond, so the instant itself is aimed at (within +-0.5 ms), and the loop's own
    lateness comes on top, as on asyncio's loop (``bench/bench_loop_timers.py``)."""
    loop = asyncio.get_running_loop()
    if wait_ns <= 0 or not _is_uvloop(loop):
        await asyncio.sleep(max(0.0, wait_ns) / 1e9)
        return
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(time.monotonic() + wait_ns / 1e9, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    return isinstance(loop, uvloop.Loop)


class SharedLoop:
    def __init__(self) -> None:
        self.loop = new_loop()
        self.users = 0
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._main, name="ble-loop", daemon=True)
        self.thread.start()
        self._started.wait()

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._started.set)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_lock = threading.Lock()
_shared: SharedLoop | None = None


def acquire() -> SharedLoop:
    """The process's BLE loop (started if needed), counted as used until ``release``."""
    global _shared
    with _lock:
        if _shared is None or not _shared.alive:
            _shared = SharedLoop()
        _shared.users += 1
        return _shared


def release(shared: SharedLoop) -> None:
    global _shared
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        if _shared is shared:
            _shared = None
    shared.close()


def current() -> SharedLoop | None:
    """The running shared loop, if any (for status and tests)."""
    return _shared
