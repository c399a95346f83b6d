"""A fault-injecting TCP proxy on 127.0.0.1, for tests and harnesses of the sync service.

    with FaultProxy(upstream_port) as proxy:      # listens on proxy.port
        proxy.rate = 2_000_000                    # slow link: bytes/s each way (None = off)
        proxy.cut_after(100_000)                  # cut the connection after N more bytes up
        proxy.drop_next()                         # close the next new connection at once
        proxy.stall(5.0)                          # forward nothing for 5 s, connection open
        proxy.stall_after(100_000, 5.0)           # ... starting after N more bytes up
        proxy.drop_all()                          # drop every open connection now
        proxy.refuse(); proxy.accept()            # server down (connection refused) / back up
        proxy.upstream = other_port               # the server restarted elsewhere

Counters: ``bytes_up`` (client to server), ``bytes_down``, ``connections``, ``faults``.
The loop runs in a daemon thread; every control method is safe to call from the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

READ = 16 * 1024


class FaultProxy:
    def __init__(self, upstream: int, port: int = 0, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.rate: float | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.faults = 0
        self._cut: int | None = None
        self._drop = 0
        self._stall_until = 0.0
        self._stall_at: tuple[int, float] | None = None
        self._next = {True: 0.0, False: 0.0}
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="faultproxy")

    # -- lifecycle

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- faults

    def cut_after(self, nbytes: int) -> None:
        """Cut the connection carrying the next ``nbytes``-th byte client->server."""
        self._cut = nbytes

    def drop_next(self, n: int = 1) -> None:
        """Close the next ``n`` new connections as soon as they are accepted."""
        self._drop += n

    def stall(self, seconds: float) -> None:
        """Forward nothing in either direction for ``seconds`` (connections stay open)."""
        self._stall_until = time.monotonic() + seconds
        self.faults += 1

    def stall_after(self, nbytes: int, seconds: float) -> None:
        """Stall for ``seconds`` once ``nbytes`` more bytes went client->server."""
        self._stall_at = (nbytes, seconds)

    def drop_all(self) -> None:
        """Drop every open connection now."""
        self._call(self._abort_all(count=True))

    def refuse(self) -> None:
        """Server down: stop listening (connection refused) and drop open connections."""
        self._call(self._shutdown())
        self.faults += 1

    def accept(self) -> None:
        """Server back: listen again on the same port."""
        self._call(self._listen())

    # -- internals (event loop thread)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                      reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._abort_all(count=False)

    async def _abort_all(self, count: bool) -> None:
        if count and self._conns:
            self.faults += 1
        for cw, sw in list(self._conns):
            cw.transport.abort()
            sw.transport.abort()
        self._conns.clear()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._drop > 0:
            self._drop -= 1
            self.faults += 1
            cw.transport.abort()
            return
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.transport.abort()
            return
        pair = (cw, sw)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(cr, sw, pair, up=True),
                                 self._pipe(sr, cw, pair, up=False))
        finally:
            self._conns.discard(pair)
            cw.transport.abort()
            sw.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], up: bool) -> None:
        try:
            while True:
                size = READ if not self.rate else max(1024, min(READ, int(self.rate / 50)))
                data = await reader.read(size)
                if not data:
                    break
                if up and self._stall_at is not None:
                    left, secs = self._stall_at
                    if len(data) >= left:
                        self._stall_at = None
                        self.stall(secs)
                    else:
                        self._stall_at = (left - len(data), secs)
                while time.monotonic() < self._stall_until:
                    await asyncio.sleep(min(0.05, self._stall_until - time.monotonic()))
                if up and self._cut is not None:
                    if len(data) >= self._cut:
                        data = data[: self._cut]
                        self._cut = None
                        self.bytes_up += len(data)
                        writer.write(data)
                        with contextlib.suppress(Exception):
                            await writer.drain()
                        self.faults += 1
                        break
                    self._cut -= len(data)
                await self._pace(len(data), up)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in pair:
                w.transport.abort()

    async def _pace(self, n: int, up: bool) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now - 0.1, self._next[up])  # up to 100 ms of burst credit, like a link
        self._next[up] = start + n / self.rate
        if self._next[up] > now:
            await asyncio.sleep(self._next[up] - now)
