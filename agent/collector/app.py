"""The collector's HTTP face: starlette routes over :class:`~agent.collector.service.Collector`.

    OPTIONS /files/                tus capabilities (no auth)
    POST    /files/                create (creation-with-upload allowed); dedup answers 201 too
    HEAD    /files/{id}            offset, length, Upload-Expires or Wearcap-Verified
    PATCH   /files/{id}            append a chunk (checksum optional); verifies on the last one
    DELETE  /files/{id}            termination
    GET     /files/{id}            the verified bytes
    GET     /devices/{id}/segments completeness of one device (that device or admin)
    GET     /devices               completeness of every device (admin)
    POST    /devices               {"device_id": ..., "first_seq": 0} -> token (admin)
    POST    /devices/{id}/discard  the wearer's discard (that device), see collector/discard.py
    POST    /enroll, /devices/{id}/status, /devices/{id}/selftest   see agent/collector/fleet.py
    GET     /dashboard             the fleet dashboard (admin), see agent/collector/dashboard.py
    GET     /data/...              list, download (admin or reader), see agent/collector/data.py

Blocking work (SQLite, fsync, hashing, object-store transfers) runs in worker threads. A PATCH
body is written as it arrives, so memory does not grow with chunk size. A newer PATCH for the
same upload cancels an older one still streaming (a client that reconnected after a cut
should not wait for the server to notice the dead connection); the older one keeps what it
received, and the newer one is answered 409 if its offset is now stale.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.collector import auth, completeness, tus
from agent.collector.auth import Principal
from agent.collector.dashboard import Dashboard
from agent.collector.data import DataRoutes
from agent.collector.fleet import FleetRoutes
from agent.collector.guard import Guard, mark_authenticated
from agent.collector.s3staging import S3PatchWriter
from agent.collector.service import Collector, PatchWriter
from agent.collector.store import Upload
from agent.errors import CollectorError, InputError

log = logging.getLogger("agent.collector")
P = ParamSpec("P")
T = TypeVar("T")


async def run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@dataclass
class _Slot:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    streaming: anyio.CancelScope | None = None
    users: int = 0


class UploadLocks:
    """One writer per upload; a newcomer cancels the body stream of the current writer."""

    def __init__(self) -> None:
        self.slots: dict[str, _Slot] = {}

    @asynccontextmanager
    async def hold(self, upload_id: str) -> AsyncIterator[_Slot]:
        slot = self.slots.setdefault(upload_id, _Slot())
        slot.users += 1
        try:
            if slot.streaming is not None:
                slot.streaming.cancel()
            async with slot.lock:
                yield slot
        finally:
            slot.users -= 1
            if slot.users == 0:
                self.slots.pop(upload_id, None)


def _tus(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": tus.TUS_VERSION, **(headers or {})}


class CollectorApp:
    def __init__(self, collector: Collector, sweep_seconds: float = 60.0,
                 public_url: str | None = None, *, thumbnails: bool = False) -> None:
        self.c = collector
        self.locks = UploadLocks()
        self.sweep_seconds = sweep_seconds
        self.public_url = public_url.rstrip("/") if public_url else ""
        """Where clients reach this service (the balancer's URL behind one). Locations are
        built from it, never from the request's Host header; empty: relative Locations."""
        self.thumbnails = thumbnails
        """Dashboard thumbnails (workers' homes): off unless the collector is told."""

    # --- helpers ---------------------------------------------------------------------------
    async def _who(self, request: Request) -> Principal:
        who = await run(auth.authenticate, self.c.store, request.headers.get("authorization"))
        mark_authenticated(request.scope)
        return who

    async def _tus_who(self, request: Request) -> Principal:
        tus.check_version(request.headers.get("tus-resumable"))
        return await self._who(request)

    def _progress(self, up: Upload, status: int = 204, **extra: str) -> Response:
        h = tus.upload_headers(up.offset, up.length, up.state, up.sha256, up.expires)
        return Response(status_code=status, headers=_tus({**h, **extra}))

    async def _stream_into(self, request: Request, slot: _Slot,
                           writer: PatchWriter | S3PatchWriter) -> Upload:
        """Feed the body to ``writer``; returns the committed upload state."""
        with anyio.CancelScope() as scope:
            slot.streaming = scope
            try:
                async for chunk in request.stream():
                    if chunk:
                        writer.write(chunk)
            except tus.TusError:
                await run(writer.abort, False)
                raise
            except ClientDisconnect:  # the client left: keep what arrived
                with anyio.CancelScope(shield=True):
                    await run(writer.abort, True)
                raise
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:
                    # the server is shutting down: keep what arrived, now, without awaiting
                    # (the task is cancelled from outside; no await would run to the end)
                    writer.abort(True)
                raise
            finally:
                slot.streaming = None
        if scope.cancelled_caught:
            with anyio.CancelScope(shield=True):
                await run(writer.abort, True)
            raise tus.TusError(409, "a newer request for this upload took over")
        return await run(writer.finish)

    async def _write(self, request: Request, slot: _Slot, up: Upload) -> Upload:
        tus.check_body_size(request.headers.get("content-length"), up.offset, up.length)
        checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
        writer = await run(self.c.open_patch, up, checksum)
        up = await self._stream_into(request, slot, writer)
        if up.state == "complete":
            up = await run(self.c.finalize, up)
        return up

    # --- tus endpoints ---------------------------------------------------------------------
    async def options(self, request: Request) -> Response:
        return Response(status_code=204, headers=tus.options_headers(self.c.max_size))

    async def create(self, request: Request) -> Response:
        who = await self._tus_who(request)
        length = tus.parse_length(request.headers.get("upload-length"),
                                  request.headers.get("upload-defer-length"), self.c.max_size)
        if who.device is None:
            raise tus.TusError(403, "only device tokens may upload")
        meta = tus.validate_segment(
            tus.parse_metadata(request.headers.get("upload-metadata")), who.device)
        has_body = request.headers.get("content-length", "0") != "0" or \
            "chunked" in request.headers.get("transfer-encoding", "")
        if has_body and request.headers.get("content-type", "").split(";")[0].strip() \
                != tus.OFFSET_CONTENT_TYPE:
            raise tus.TusError(415, f"a body on POST needs {tus.OFFSET_CONTENT_TYPE}")
        up, created = await run(self.c.create, who, length, meta)
        location = f"{self.public_url}/files/{up.id}"
        if created and has_body:
            async with self.locks.hold(up.id) as slot:
                up = await self._write(request, slot, up)
        elif up.state == "complete":
            async with self.locks.hold(up.id):
                up = await run(self.c.finalize, await run(self.c.lookup, who, up.id))
        return self._progress(up, 201, Location=location)

    async def head(self, request: Request) -> Response:
        who = await self._tus_who(request)
        upload_id = request.path_params["upload_id"]
        up = await run(self.c.lookup, who, upload_id)
        if up.state == "complete":  # a restart came between the last byte and the hash
            async with self.locks.hold(upload_id):
                up = await run(self.c.finalize, await run(self.c.lookup, who, upload_id))
        return self._progress(up, 200)

    async def patch(self, request: Request) -> Response:
        who = await self._tus_who(request)
        upload_id = request.path_params["upload_id"]
        await run(self.c.lookup, who, upload_id)  # 404/410 before taking anything over
        async with self.locks.hold(upload_id) as slot:
            up = await run(self.c.lookup, who, upload_id)
            tus.check_patch(request.headers.get("content-type"),
                            request.headers.get("upload-offset"), up.offset)
            if up.state == "open":
                up = await self._write(request, slot, up)
            elif up.state == "complete":
                up = await run(self.c.finalize, up)
        return self._progress(up)

    async def delete(self, request: Request) -> Response:
        who = await self._tus_who(request)
        upload_id = request.path_params["upload_id"]
        await run(self.c.lookup, who, upload_id)
        async with self.locks.hold(upload_id):
            up = await run(self.c.lookup, who, upload_id)
            await run(self.c.terminate, up)
        return Response(status_code=204, headers=_tus())

    async def get(self, request: Request) -> Response:
        who = await self._who(request)
        up = await run(self.c.lookup, who, request.path_params["upload_id"])
        body = await run(self.c.read, up)
        return StreamingResponse(body, media_type="application/octet-stream", headers={
            "Content-Length": str(up.length), tus.VERIFIED_HEADER: f"sha256={up.sha256}"})

    # --- devices and completeness ----------------------------------------------------------
    async def device_segments(self, request: Request) -> Response:
        who = await self._who(request)
        device = request.path_params["device_id"]
        if not who.is_admin and who.device != device:
            raise tus.TusError(403, "a device may only read its own completeness")
        report = await run(completeness.device_report, self.c.store, device)
        if report is None:
            raise tus.TusError(404, "no such device")
        return JSONResponse(report)

    async def discard(self, request: Request) -> Response:
        """The wearer's discard (agent.contract.DISCARD_PATH): that device's token only."""
        from agent.collector.discard import purge
        from agent.contract import DiscardError, parse_discard_body

        who = await self._who(request)
        device = request.path_params["device_id"]
        if who.device != device:
            raise tus.TusError(403, "only the device itself may discard its segments")
        body = await request.body()
        if len(body) > 256 * 1024:
            raise tus.TusError(413, "discard request larger than 256 KiB")
        try:
            req, items = parse_discard_body(json.loads(body or b"null"), device)
        except (ValueError, DiscardError) as exc:
            raise tus.TusError(400, f"discard request: {exc}") from exc
        done = []
        for sid, seq, sha, size in items:
            up = await run(self.c.store.find_segment, device, sid)
            if up is not None:  # cancel a PATCH streaming into it, and hold it meanwhile
                async with self.locks.hold(up.id):
                    done.append(await run(purge, self.c, device, seq, sid,
                                          reason="wearer-discard", request=req, sha256=sha,
                                          length=size))
            else:
                done.append(await run(purge, self.c, device, seq, sid, reason="wearer-discard",
                                      request=req, sha256=sha, length=size))
        return JSONResponse({"request": req, "discarded": done})

    async def all_devices(self, request: Request) -> Response:
        who = await self._who(request)
        if not who.is_admin:
            raise tus.TusError(403, "admin token required")
        return JSONResponse(await run(completeness.fleet_report, self.c.store))

    async def enroll(self, request: Request) -> Response:
        who = await self._who(request)
        if not who.is_admin:
            raise tus.TusError(403, "admin token required")
        try:
            body: Any = json.loads(await request.body() or b"{}")
            device = body["device_id"]
            first_seq = body.get("first_seq", 0)
            if not isinstance(device, str):
                raise TypeError("device_id must be a string")
            if not isinstance(first_seq, int) or isinstance(first_seq, bool):
                raise TypeError("first_seq must be an integer")
            token = await run(auth.enroll, self.c.store, device, first_seq=first_seq)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise tus.TusError(400, f"body must be {{\"device_id\": ID, \"first_seq\": N}}: "
                                    f"{exc}") from exc
        return JSONResponse({"device_id": device, "token": token}, status_code=201)

    # --- assembly --------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweeper)
            yield
            tg.cancel_scope.cancel()

    async def _sweeper(self) -> None:
        while True:
            n = await run(self.c.sweep_expired)
            if n:
                log.info("expired %d unfinished uploads", n)
            try:
                await run(self.c.sweep_retention)
            except (CollectorError, tus.TusError) as exc:  # the next sweep tries again
                log.error("retention sweep failed: %s", exc)
            await anyio.sleep(self.sweep_seconds)

    def routes(self) -> list[Route]:
        return [
            Route("/files/", self.options, methods=["OPTIONS"]),
            Route("/files", self.options, methods=["OPTIONS"]),
            Route("/files/", self.create, methods=["POST"]),
            Route("/files", self.create, methods=["POST"]),
            Route("/files/{upload_id}", self.head, methods=["HEAD"], name="upload"),
            Route("/files/{upload_id}", self.patch, methods=["PATCH"]),
            Route("/files/{upload_id}", self.delete, methods=["DELETE"]),
            Route("/files/{upload_id}", self.get, methods=["GET"]),
            Route("/devices", self.all_devices, methods=["GET"]),
            Route("/devices", self.enroll, methods=["POST"]),
            Route("/devices/{device_id}/segments", self.device_segments, methods=["GET"]),
            Route("/devices/{device_id}/discard", self.discard, methods=["POST"]),
            *DataRoutes(self).routes(),  # /data/... for admin and reader tokens (data.py)
            *FleetRoutes(self).routes(),  # enrollment by code, status, selftest (fleet.py)
            *Dashboard(self, self.thumbnails).routes(),  # /dashboard (dashboard.py)
        ]


async def _tus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, tus.TusError)
    body = "" if request.method == "HEAD" else exc.message + "\n"
    return PlainTextResponse(body, status_code=exc.status, headers=_tus(exc.headers))


async def _backend_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return PlainTextResponse(f"storage failed: {exc}\n", status_code=503, headers=_tus())


async def _disconnect(request: Request, exc: Exception) -> Response:
    return Response(status_code=400)  # the client is gone; nobody reads this


class AccessLog:
    """Logs each request at INFO: method, path, status, bytes in, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = [0]
        received = [0]

        async def counting_receive() -> Message:
            msg = await receive()
            received[0] += len(msg.get("body", b""))
            return msg

        async def capture(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, counting_receive, capture)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %s %d in=%d %.1fms", client[0], scope["method"], scope["path"],
                     status[0], received[0], (time.monotonic() - start) * 1000)


class TokenLimit:
    """At most ``per_token_requests`` requests in flight per bearer token (429 beyond)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth_header = None
        if scope["type"] == "http":
            for k, v in scope["headers"]:
                if k == b"authorization":
                    auth_header = v.decode("latin-1")
                    break
        if auth_header is None:
            await self.app(scope, receive, send)
            return
        key = self.guard.enter(auth_header)
        if key is None:
            resp = PlainTextResponse("too many requests in flight for this token\n",
                                     status_code=429,
                                     headers=_tus({"Retry-After": "1"}))
            await resp(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.guard.leave(key)


def build_app(collector: Collector, sweep_seconds: float = 60.0, *,
              public_url: str | None = None, guard: Guard | None = None,
              thumbnails: bool = False) -> ASGIApp:
    api = CollectorApp(collector, sweep_seconds, public_url, thumbnails=thumbnails)
    app: ASGIApp = Starlette(routes=api.routes(), lifespan=api.lifespan,
                             exception_handlers={tus.TusError: _tus_error,
                                                 CollectorError: _backend_error,
                                                 ClientDisconnect: _disconnect})
    if guard is not None:
        app = TokenLimit(app, guard)
    return AccessLog(app)
