"""Connection limits of the collector: slow or idle clients cannot starve enrolled devices.

What a connection may cost before it proves who it is, enforced on uvicorn's h11 protocol:

- **Header read time.** A request's headers must be complete ``header_timeout`` seconds after
  the connection opened (or the previous answer went out plus the keep-alive time), else the
  connection is closed. uvicorn alone waits forever.
- **Idle keep-alive** is bounded (``keep_alive``).
- **Connections in total** stay below the open-file limit (``max_connections``, by default
  the soft ``RLIMIT_NOFILE`` less a reserve for files, the database and the store), so
  ``accept()`` never fails for lack of descriptors.
- **Unauthenticated connections** (no request with a valid token yet) are capped at
  ``max_unauthenticated``; a newcomer over the cap closes the oldest one still waiting for its
  headers. A device connects and sends its headers at once, so it always gets through.
- **Per token, not per address**: at most ``per_token_requests`` requests in flight for one
  bearer token (429 beyond). Behind a load balancer every client has its address, and a
  factory NAT puts many rigs on one.
- **PROXY protocol** (v1/v2) from ``trusted_proxies``: the client address in logs and limits
  is the one the balancer saw. From those peers the header is required.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent.collector import proxyproto

log = logging.getLogger("agent.collector")

FD_RESERVE = 256
"""Descriptors kept free for staging files, the database, object-store sockets, threads."""
CONNECTION_KEY = "wearcap.connection"


def default_max_connections(soft_limit: int | None = None) -> int:
    soft = soft_limit if soft_limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65536
    return max(16, min(soft - FD_RESERVE if soft > 2 * FD_RESERVE else soft // 2, 20000))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """``127.0.0.1``, ``10.0.0.0/8``, ... -> networks (ValueError on a bad one)."""
    return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip())


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    keep_alive: float = 15.0
    max_connections: int = 0
    """0: :func:`default_max_connections`."""
    max_unauthenticated: int = 0
    """0: half of ``max_connections``."""
    per_token_requests: int = 4
    trusted_proxies: tuple[Network, ...] = ()

    def resolved(self) -> Limits:
        total = self.max_connections or default_max_connections()
        unauth = self.max_unauthenticated or max(8, total // 2)
        return Limits(self.header_timeout, self.keep_alive, total, min(unauth, total),
                      self.per_token_requests, self.trusted_proxies)


class Guard:
    """Shared state of one server's connections. Runs on the event loop thread only."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits.resolved()
        self.open: set[Any] = set()
        self.unauthenticated: dict[Any, None] = {}  # insertion order = oldest first
        self.in_flight: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    def is_trusted_proxy(self, host: str | None) -> bool:
        if not host or not self.limits.trusted_proxies:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.limits.trusted_proxies)

    def _evict_one(self) -> bool:
        for conn in self.unauthenticated:
            if not conn.busy:
                self.stats["evicted"] += 1
                conn.close_now()
                self._forget(conn)
                return True
        return False

    def opened(self, conn: Any) -> bool:
        """Admit a new connection (evicting an older idle unauthenticated one if needed)."""
        if len(self.open) >= self.limits.max_connections and not self._evict_one():
            self.stats["refused"] += 1
            return False
        if len(self.unauthenticated) >= self.limits.max_unauthenticated \
                and not self._evict_one():
            self.stats["refused"] += 1
            return False
        self.open.add(conn)
        self.unauthenticated[conn] = None
        self.stats["accepted"] += 1
        return True

    def authenticated(self, conn: Any) -> None:
        self.unauthenticated.pop(conn, None)

    def _forget(self, conn: Any) -> None:
        self.open.discard(conn)
        self.unauthenticated.pop(conn, None)

    def closed(self, conn: Any) -> None:
        self._forget(conn)

    # --- per-token requests ----------------------------------------------------------------
    def enter(self, authorization: str) -> str | None:
        """Count a request of this bearer token; None if the token is at its limit."""
        key = hashlib.sha256(authorization.encode("utf-8", "replace")).hexdigest()
        if self.in_flight[key] >= self.limits.per_token_requests:
            self.stats["token_limited"] += 1
            return None
        self.in_flight[key] += 1
        return key

    def leave(self, key: str) -> None:
        self.in_flight[key] -= 1
        if self.in_flight[key] <= 0:
            del self.in_flight[key]

    def snapshot(self) -> dict[str, int]:
        return {"open": len(self.open), "unauthenticated": len(self.unauthenticated),
                **self.stats}


def accept_batch(limits: Limits) -> int:
    """The listen backlog, which asyncio also uses as the number of sockets it accepts in one
    go: small enough that one burst cannot run past the descriptor reserve, nor evict a
    connection before its first bytes are read."""
    return max(8, min(128, limits.resolved().max_connections // 8))


def uvicorn_options(guard: Guard) -> dict[str, Any]:
    """The ``uvicorn.Config`` keywords that put ``guard`` in force."""
    return {"http": protocol_class(guard), "backlog": accept_batch(guard.limits),
            "timeout_keep_alive": max(1, round(guard.limits.keep_alive))}


def mark_authenticated(scope: Any) -> None:
    """Called by the app once a request on this connection carried a valid token."""
    conn = (scope.get("extensions") or {}).get(CONNECTION_KEY)
    if conn is not None:
        conn.guard.authenticated(conn)


def protocol_class(guard: Guard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the guard's limits (``uvicorn.Config(http=...)``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.guard = guard
            self.busy = False
            self._timer: asyncio.TimerHandle | None = None
            self._proxy_buf: bytes | None = None
            inner = self.app
            me = self

            async def app(scope: Any, receive: Any, send: Any) -> None:
                scope.setdefault("extensions", {})[CONNECTION_KEY] = me
                await inner(scope, receive, send)

            self.app = app

        def close_now(self) -> None:
            self._disarm()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.abort()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if not self.busy:
                self.guard.stats["header_timeouts"] += 1
                self.close_now()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if not self.guard.opened(self):
                transport.abort()
                return
            if self.guard.is_trusted_proxy(self.client[0] if self.client else None):
                self._proxy_buf = b""
            self._arm(self.guard.limits.header_timeout)

        def data_received(self, data: bytes) -> None:
            if self._proxy_buf is not None:
                buf = self._proxy_buf + data
                try:
                    header = proxyproto.parse(buf)
                except proxyproto.ProxyHeaderError as exc:
                    self.guard.stats["proxy_errors"] += 1
                    log.warning("%s: %s", self.client, exc)
                    self.close_now()
                    return
                if header is None:
                    self._proxy_buf = buf
                    return
                self._proxy_buf = None
                if header.client is not None:
                    self.client = header.client
                data = buf[header.consumed:]
                if not data:
                    return
            super().data_received(data)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before and self.conn.their_state is not h11.ERROR:
                self.busy = True
                self._disarm()

        def on_response_complete(self) -> None:
            self.busy = False
            super().on_response_complete()
            if not self.busy and not self.transport.is_closing():
                limits = self.guard.limits
                self._arm(limits.keep_alive + limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self.guard.closed(self)
            super().connection_lost(exc)

    return GuardedH11Protocol
