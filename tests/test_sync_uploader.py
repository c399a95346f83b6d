"""The httpx adapter against scripted servers (httpx.MockTransport): the URL is durable before
any data is sent, and hostile answers never crash it, lose the file or fake a verification."""

from __future__ import annotations

import hashlib
import random

import httpx
import pytest

from agent.sync import tus
from agent.sync.state import State
from agent.sync.uploader import Uploader

CAPS = tus.Caps(frozenset({"creation", "checksum", "termination"}), ("sha1",))
BASE = "http://collector.test/files/"


@pytest.fixture
def seg_file(tmp_path):
    p = tmp_path / "sealed" / "sim-0001-00000001.mcap"
    p.parent.mkdir()
    p.write_bytes(random.Random(1).randbytes(300_000))
    return p


def make(tmp_path, seg_file, handler):
    state = State(tmp_path / "db")
    state.add(seg_file.stem, 1, str(seg_file), seg_file.stat().st_size)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    up = Uploader(client, state, base_url=BASE, token="tok", chunk_bytes=64 * 1024)
    return state, up


def test_url_is_stored_before_the_first_byte_and_checksums_are_right(tmp_path, seg_file):
    data = seg_file.read_bytes()
    received = bytearray()
    seen_urls = []

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["authorization"] == "Bearer tok"
        if req.method == "POST":
            return httpx.Response(201, headers={"Location": "/files/u1"})
        if req.method == "HEAD":
            return httpx.Response(200, headers={"Upload-Offset": str(len(received))})
        body = req.read()
        seen_urls.append(state.get(seg_file.stem).upload_url)
        algo, b64 = req.headers["upload-checksum"].split()
        assert tus.checksum_header("sha1", hashlib.sha1(body).digest()) == f"{algo} {b64}"
        assert int(req.headers["upload-offset"]) == len(received)
        received.extend(body)
        h = {"Upload-Offset": str(len(received))}
        if len(received) == len(data):
            h["Wearcap-Verified"] = "sha256=" + hashlib.sha256(received).hexdigest()
        return httpx.Response(204, headers=h)

    state, up = make(tmp_path, seg_file, handler)
    ev = up.upload(state.get(seg_file.stem), CAPS, "sim-0001")
    assert isinstance(ev, tus.Verified)
    assert bytes(received) == data
    assert set(seen_urls) == {"http://collector.test/files/u1"}
    assert state.get(seg_file.stem).state == "verified"


HOSTILE = [
    {"Upload-Offset": "garbage"},
    {"Upload-Offset": "-1"},
    {"Upload-Offset": "99999999999"},
    {"Upload-Offset": "1" * 5000},
    {},
    {"Upload-Offset": "300000", "Wearcap-Verified": "sha256=" + "0" * 64},
    {"Upload-Offset": "0", "X-Huge": "x" * 60_000},
]


@pytest.mark.parametrize("status", [200, 204, 409, 460, 500, 302])
@pytest.mark.parametrize("headers", HOSTILE)
def test_hostile_answers_never_crash_or_verify(tmp_path, seg_file, status, headers):
    before = seg_file.read_bytes()

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(201, headers={"Location": "/files/u1"})
        if req.method == "GET":
            return httpx.Response(200, content=b"not the segment")
        return httpx.Response(status, headers=headers, content=b"x" * 10_000)

    state, up = make(tmp_path, seg_file, handler)
    for _ in range(3):
        ev = up.upload(state.get(seg_file.stem), CAPS, "sim-0001")
        assert not isinstance(ev, tus.Verified)
    assert state.get(seg_file.stem).state in ("sealed", "uploading", "uploaded", "rejected")
    assert seg_file.read_bytes() == before


def test_network_errors_become_retries(tmp_path, seg_file):
    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(201, headers={"Location": "/files/u1"})
        raise httpx.ReadTimeout("stalled", request=req)

    state, up = make(tmp_path, seg_file, handler)
    ev = up.upload(state.get(seg_file.stem), CAPS, "sim-0001")
    assert isinstance(ev, tus.Retry) and "ReadTimeout" in ev.reason
    seg = state.get(seg_file.stem)
    assert seg.state == "uploading" and seg.upload_url == "http://collector.test/files/u1"


# ---------------------------------------------------------------- hostile bytes on a real socket

RAW = {
    "huge header": b"HTTP/1.1 204 No Content\r\nUpload-Offset: 0\r\nX-Pad: " + b"a" * 200_000,
    "garbage status line": b"HTTP/9.9 banana\r\n\r\n",
    "not http at all": b"\x00\xff" * 1000,
    "closed mid-headers": b"HTTP/1.1 204 No Content\r\nUpload-Off",
    "negative offset": b"HTTP/1.1 204 No Content\r\nUpload-Offset: -3\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("answer", list(RAW), ids=list(RAW))
def test_hostile_bytes_from_a_real_socket(tmp_path, seg_file, answer):
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(65536)
                    if head.startswith(b"POST"):
                        conn.sendall(b"HTTP/1.1 201 Created\r\nLocation: /files/u1\r\n"
                                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    else:
                        conn.sendall(RAW[answer])
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    before = seg_file.read_bytes()
    state = State(tmp_path / "db")
    state.add(seg_file.stem, 1, str(seg_file), len(before))
    try:
        with httpx.Client(timeout=2.0) as client:
            up = Uploader(client, state, base_url=f"http://127.0.0.1:{port}/files/",
                          token="tok", chunk_bytes=64 * 1024)
            ev = up.upload(state.get(seg_file.stem), CAPS, "sim-0001")
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()
    assert isinstance(ev, tus.Retry), ev
    assert state.get(seg_file.stem).state == "uploading"
    assert seg_file.read_bytes() == before
