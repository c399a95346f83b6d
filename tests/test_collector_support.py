"""Helpers for the collector tests: a real uvicorn server in a thread on 127.0.0.1, a settable
clock, and a minimal tus client on httpx. (No tests here.)"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agent.collector import auth
from agent.collector.app import build_app
from agent.collector.guard import Guard, Limits, uvicorn_options
from agent.collector.service import Collector

OCTET = "application/offset+octet-stream"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class ServerThread:
    """``Collector`` + starlette app served by uvicorn on a free loopback port."""

    def __init__(self, data: Path, *, public_url: str | None = None,
                 limits: Limits | None = None, **collector_kwargs) -> None:
        self.data = data
        self.public_url = public_url
        self.guard = Guard(limits or Limits())
        self.clock = collector_kwargs.pop("clock", None) or Clock()
        self.collector_kwargs = collector_kwargs
        self.collector: Collector | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> ServerThread:
        self.collector = Collector(self.data, clock=self.clock, **self.collector_kwargs)
        sock = socket.create_server(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self.collector, public_url=self.public_url, guard=self.guard),
            log_config=None, access_log=False, lifespan="on", **uvicorn_options(self.guard))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "collector did not start"
            assert self.thread.is_alive(), "collector thread died"
            time.sleep(0.01)
        self._sock = sock
        return self

    def stop(self) -> None:
        assert self.server and self.thread and self.collector
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive()
        self._sock.close()
        self.collector.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enroll(self, device: str, first_seq: int = 0) -> str:
        assert self.collector
        return auth.enroll(self.collector.store, device, first_seq=first_seq)

    def client(self, token: str | None) -> TusClient:
        return TusClient(self.url, token)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def metadata(device: str, seq: int, sha: str, **override: str) -> str:
    seg = f"{device}-{seq:08d}"
    fields = {"device_id": device, "segment_id": seg, "seq": str(seq), "sha256": sha,
              "filename": f"{seg}.mcap", **override}
    return ",".join(f"{k} {b64(v)}" for k, v in fields.items())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum(algo: str, data: bytes) -> str:
    return f"{algo} {base64.b64encode(hashlib.new(algo, data).digest()).decode()}"


@pytest.fixture(name="srv")
def collector_srv(tmp_path: Path) -> Iterator[ServerThread]:
    """``srv``: a collector on a loopback port with its data in ``tmp_path``, stopped after
    the test (a module that wants it imports ``collector_srv``)."""
    s = ServerThread(tmp_path / "data", expire_seconds=3600).start()
    yield s
    s.stop()


class TusClient:
    def __init__(self, base: str, token: str | None) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.headers = {"Tus-Resumable": "1.0.0"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def create(self, device: str, seq: int, data: bytes, *, sha: str | None = None,
               meta: str | None = None, length: int | None = None, body: bytes | None = None,
               **extra: str) -> httpx.Response:
        h = {**self.headers, "Upload-Length": str(len(data) if length is None else length),
             "Upload-Metadata": meta or metadata(device, seq, sha or sha256(data)), **extra}
        if body is not None:
            h["Content-Type"] = OCTET
        return self.http.post("/files/", headers=h, content=body)

    def patch(self, loc: str, offset: int, chunk: bytes, **extra: str) -> httpx.Response:
        h = {**self.headers, "Upload-Offset": str(offset), "Content-Type": OCTET, **extra}
        return self.http.patch(loc, headers=h, content=chunk)

    def head(self, loc: str) -> httpx.Response:
        return self.http.head(loc, headers=self.headers)

    def delete(self, loc: str) -> httpx.Response:
        return self.http.delete(loc, headers=self.headers)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path, headers=self.headers)

    def upload(self, device: str, seq: int, data: bytes, chunk: int = 64 * 1024) -> str:
        """Create and send ``data`` in chunks with sha1 checksums; returns the Location."""
        r = self.create(device, seq, data)
        assert r.status_code == 201, r.text
        loc = r.headers["location"]
        offset = int(r.headers["upload-offset"])
        while offset < len(data):
            part = data[offset:offset + chunk]
            r = self.patch(loc, offset, part, **{"Upload-Checksum": checksum("sha1", part)})
            assert r.status_code == 204, r.text
            offset = int(r.headers["upload-offset"])
        assert r.headers.get("wearcap-verified") == f"sha256={sha256(data)}"
        return loc


def raw_partial_patch(port: int, path: str, token: str, offset: int, declared: int,
                      sent: bytes) -> socket.socket:
    """Send a PATCH declaring ``declared`` body bytes but only ``sent``; returns the socket."""
    s = socket.create_connection(("127.0.0.1", port))
    head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {OCTET}\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n").encode()
    s.sendall(head + sent)
    return s


def wait_for(pred, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
