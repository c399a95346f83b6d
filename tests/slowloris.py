"""A slow-loris crowd: N connections from several 127.0.0.x addresses that send a request's
headers one line at a time and never finish them; each one the server closes is reopened.

    with SlowLoris(port, 2000, sources=["127.0.0.2", ...]) as crowd: ...
    crowd.open_now, crowd.peak_open, crowd.opened, crowd.closed_by_server, crowd.connect_errors
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from types import TracebackType


class SlowLoris:
    def __init__(self, port: int, n: int, *, sources: list[str], drip: float = 0.5,
                 reopen_after: float = 0.2) -> None:
        self.port = port
        self.n = n
        self.sources = sources
        self.drip = drip
        self.reopen_after = reopen_after
        self.open_now = 0
        self.peak_open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.connect_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> SlowLoris:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        addrs = itertools.cycle(self.sources)
        tasks = [asyncio.create_task(self._one(next(addrs), i)) for i in range(self.n)]
        self._ready.set()
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, source: str, i: int) -> None:
        assert self._stop is not None
        await asyncio.sleep((i % 100) * 0.01)  # do not open them all in one burst
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0))
            except OSError:
                self.connect_errors += 1
                await asyncio.sleep(self.reopen_after)
                continue
            self.opened += 1
            self.open_now += 1
            self.peak_open = max(self.peak_open, self.open_now)
            try:
                writer.write(b"POST /files/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                n = 0
                while not self._stop.is_set():
                    await writer.drain()
                    with contextlib.suppress(asyncio.TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), self.drip) == b"":
                            break  # the server closed it
                    writer.write(f"X-Slow-{n}: a\r\n".encode())
                    n += 1
                self.closed_by_server += not self._stop.is_set()
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open_now -= 1
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            await asyncio.sleep(self.reopen_after)
