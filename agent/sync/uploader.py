"""The httpx adapter: runs one segment's ``TusUpload`` against a server, streaming from disk.

Memory does not grow with file size: a PATCH body is read from the file in ``BLOCK`` pieces
(os.pread) as httpx sends it, the chunk checksum is a first pass over the same range, and a
verification download is hashed as it arrives. Every event is written to the state database
before the next request, above all the upload URL before the first byte of data.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from agent.contract import SEALED_SUFFIX, segment_metadata
from agent.digest import sha256_file
from agent.sync import tus
from agent.sync.policy import TokenBucket
from agent.sync.state import Segment, State

log = logging.getLogger(__name__)

BLOCK = 64 * 1024
MAX_BODY = 1024
"""Bytes of an error answer kept for the reason shown to the user."""


class Stopped(Exception):
    """The service is stopping: the in-flight request is abandoned (resumed next run)."""


def file_sha256(path: Path, should_stop: Callable[[], bool] = lambda: False) -> str:
    """The segment's SHA-256; abandoned (Stopped) as soon as the service is stopping."""

    def check() -> None:
        if should_stop():
            raise Stopped

    return sha256_file(path, check)


def timeouts(connect: float, read: float, write: float) -> httpx.Timeout:
    """Connect/read/write/pool timeouts. ``write`` is the stall limit: a send that makes no
    progress for that long aborts the request, which is then resumed from the server's offset."""
    return httpx.Timeout(connect=connect, read=read, write=write, pool=connect)


class Uploader:
    def __init__(self, client: httpx.Client, state: State, *, base_url: str, token: str,
                 chunk_bytes: int, bucket: TokenBucket | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[str, int, int], None] | None = None,
                 heartbeat: Callable[[], None] = lambda: None,
                 on_repair: Callable[[str, str], None] = lambda seg, why: None) -> None:
        self.client = client
        self.on_repair = on_repair
        """Called with (segment id, reason) when the server held wrong bytes and they are
        being replaced: never silent."""
        self.heartbeat = heartbeat
        """Called per block sent, hashed or downloaded: progress is liveness (watchdog)."""
        self.state = state
        self.base_url = base_url
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.chunk_bytes = chunk_bytes
        self.bucket = bucket
        self._should_stop = should_stop
        self.on_progress = on_progress
        self.bytes_sent = 0

    def should_stop(self) -> bool:
        self.heartbeat()
        return self._should_stop()

    # -- probe

    def probe(self) -> tus.Caps | None:
        """OPTIONS on the base URL: the server's caps, or None if it does not answer tus."""
        try:
            r = self.client.request("OPTIONS", self.base_url, headers=self.auth)
        except (httpx.HTTPError, OSError) as exc:
            log.debug("probe %s: %s", self.base_url, exc)
            return None
        return tus.parse_caps(tus.Response(r.status_code, _headers(r)))

    # -- one segment

    def upload(self, seg: Segment, caps: tus.Caps, device_id: str) -> tus.Event:
        """Work on ``seg`` until a terminal event or a Retry; raises Stopped when asked to."""
        path = Path(seg.path)
        if not path.is_file():
            why = "sealed file vanished before verification"
            self.state.transition(seg.id, "missing", last_error=why)
            return tus.Rejected(why)
        if seg.upload_url is None and path.stat().st_size != seg.size:
            # sealed files are immutable; one that changed before any upload is re-read
            log.warning("%s changed size since discovery; hashing it again", path)
            seg = self._set(seg, size=path.stat().st_size, sha256=None)
        if seg.sha256 is None:
            seg = self._set(seg, sha256=file_sha256(path, self.should_stop))
        assert seg.sha256 is not None
        m = tus.TusUpload(
            base_url=self.base_url, length=seg.size, sha256=seg.sha256, caps=caps,
            chunk_bytes=self.chunk_bytes, auth_headers=self.auth, url=seg.upload_url,
            metadata={**segment_metadata(device_id, seg.seq, seg.sha256),
                      "segment_id": seg.id, "filename": seg.id + SEALED_SUFFIX})
        budget = 3 * (seg.size // self.chunk_bytes + 1) + 30
        for _ in range(budget):
            if self.should_stop():
                raise Stopped
            req = m.next_request()
            if req is None:
                break
            if req.method == "GET":
                ev = self._download(m, req, seg.size)
            else:
                try:
                    resp = self._send(req, path)
                except (httpx.HTTPError, OSError) as exc:
                    ev = m.network_error(f"{req.method}: {type(exc).__name__}: {exc}"[:300])
                else:
                    ev = m.receive(resp)
            seg = self._record(seg, m, ev)
            if isinstance(ev, (tus.Resync, tus.Restarted)) and ev.repair:
                self.on_repair(seg.id, ev.reason)
            if isinstance(ev, (*tus.TERMINAL, tus.Retry)):
                return ev
        return tus.Retry("too many requests without finishing")

    # -- persistence

    def _set(self, seg: Segment, **fields: object) -> Segment:
        self.state.update(seg.id, **fields)
        new = self.state.get(seg.id)
        assert new is not None
        return new

    def _record(self, seg: Segment, m: tus.TusUpload, ev: tus.Event) -> Segment:
        st = self.state
        if isinstance(ev, tus.Created):
            if seg.state != "sealed":
                seg = st.transition(seg.id, "sealed", upload_url=None, upload_offset=0)
            return st.transition(seg.id, "uploading", upload_url=ev.url, upload_offset=0)
        if isinstance(ev, tus.Verified):
            if self.on_progress:
                self.on_progress(seg.id, seg.size, seg.size)
            return st.transition(seg.id, "verified", upload_offset=seg.size, last_error=None)
        if isinstance(ev, tus.Unverifiable):
            return st.transition(seg.id, "uploaded", upload_offset=seg.size, last_error=ev.reason)
        if isinstance(ev, tus.Rejected):
            return st.transition(seg.id, "rejected", last_error=ev.reason)
        if m.url is None and seg.upload_url is not None:  # the machine forgot the URL
            return st.transition(seg.id, "sealed", upload_url=None, upload_offset=0)
        if isinstance(ev, tus.Progress) and ev.offset != seg.upload_offset:
            if self.on_progress:
                self.on_progress(seg.id, ev.offset, seg.size)
            return self._set(seg, upload_offset=ev.offset)
        return seg

    # -- HTTP

    def _send(self, req: tus.Request, path: Path) -> tus.Response:
        headers = dict(req.headers)
        content: Iterator[bytes] | None = None
        if req.body is not None:
            offset, length = req.body
            if req.checksum:
                digest = _range_digest(path, offset, length, req.checksum, self.should_stop)
                headers["Upload-Checksum"] = tus.checksum_header(req.checksum, digest)
            content = self._stream(path, offset, length)
        request = self.client.build_request(req.method, req.url, headers=headers,
                                            content=content)
        resp = self.client.send(request, stream=True)
        try:
            body = b""
            try:
                for piece in resp.iter_raw():
                    body += piece
                    if len(body) >= MAX_BODY:
                        break
            except httpx.StreamConsumed:  # an in-memory response (already read)
                body = resp.content
            return tus.Response(resp.status_code, _headers(resp), body[:MAX_BODY])
        finally:
            resp.close()

    def _stream(self, path: Path, offset: int, length: int) -> Iterator[bytes]:
        fd = os.open(path, os.O_RDONLY)
        try:
            pos, end = offset, offset + length
            while pos < end:
                if self.should_stop():
                    raise Stopped
                block = os.pread(fd, min(BLOCK, end - pos), pos)
                if not block:
                    raise OSError(f"{path}: file shorter than recorded (at {pos})")
                if self.bucket is not None:
                    self.bucket.take(len(block))
                pos += len(block)
                self.bytes_sent += len(block)
                yield block
        finally:
            os.close(fd)

    def _download(self, m: tus.TusUpload, req: tus.Request, length: int) -> tus.Event:
        """GET the upload and hash it (third-party servers without the verified header)."""
        h = hashlib.sha256()
        got = 0
        try:
            with self.client.stream("GET", req.url, headers=dict(req.headers)) as r:
                if r.status_code != 200:
                    return m.downloaded(None, r.status_code)
                for piece in r.iter_bytes(BLOCK):
                    got += len(piece)
                    if got > length:
                        break
                    h.update(piece)
                    if self.should_stop():
                        raise Stopped
        except (httpx.HTTPError, OSError) as exc:
            return m.network_error(f"GET: {type(exc).__name__}: {exc}"[:300])
        return m.downloaded(h.hexdigest() if got == length else f"length {got}")


def _range_digest(path: Path, offset: int, length: int, algo: str,
                  should_stop: Callable[[], bool]) -> bytes:
    h = hashlib.new(algo)
    fd = os.open(path, os.O_RDONLY)
    try:
        pos, end = offset, offset + length
        while pos < end:
            block = os.pread(fd, min(BLOCK, end - pos), pos)
            if not block:
                raise OSError(f"{path}: file shorter than recorded (at {pos})")
            h.update(block)
            pos += len(block)
            if should_stop():
                raise Stopped
    finally:
        os.close(fd)
    return h.digest()


def _headers(resp: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items()}
