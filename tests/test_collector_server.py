"""The collector over real HTTP: uvicorn in a thread on 127.0.0.1, httpx as the client."""

from __future__ import annotations

import os
import socket
import sqlite3
import tracemalloc

import pytest
from test_collector_support import (
    OCTET,
    ServerThread,
    checksum,
    metadata,
    raw_partial_patch,
    sha256,
    wait_for,
)

DEV = "sim-0001"
OTHER = "sim-0002"


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", max_size=8 * 1024 * 1024,
                     expire_seconds=3600).start()
    yield s
    s.stop()


@pytest.fixture
def dev(srv):
    c = srv.client(srv.enroll(DEV))
    yield c
    c.close()


def objects(srv) -> list[str]:
    root = srv.data / "objects"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def staged(srv) -> list[str]:
    return sorted(p.name for p in (srv.data / "staging").iterdir())


def test_options_advertises_the_contract(srv):
    r = srv.client(None).http.options("/files/")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) == {
        "creation", "creation-with-upload", "checksum", "termination", "expiration"}
    assert r.headers["tus-checksum-algorithm"] == "sha1,sha256"
    assert r.headers["tus-max-size"] == str(8 * 1024 * 1024)


def test_full_upload_verifies_and_stores_one_file(srv, dev):
    data = os.urandom(300_000)
    loc = dev.upload(DEV, 0, data, chunk=100_000)
    r = dev.head(loc)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["upload-offset"] == r.headers["upload-length"] == str(len(data))
    assert r.headers["wearcap-verified"] == f"sha256={sha256(data)}"
    assert "upload-expires" not in r.headers
    assert objects(srv) == [f"{DEV}/{DEV}-00000000.mcap"]
    assert (srv.data / "objects" / DEV / f"{DEV}-00000000.mcap").read_bytes() == data
    assert staged(srv) == []
    assert dev.get(loc).content == data


def test_creation_with_upload_and_sha256_checksum(srv, dev):
    data = os.urandom(5000)
    r = dev.create(DEV, 1, data, body=data, **{"Upload-Checksum": checksum("sha256", data)})
    assert r.status_code == 201, r.text
    assert r.headers["upload-offset"] == "5000"
    assert r.headers["wearcap-verified"] == f"sha256={sha256(data)}"


def test_resume_via_head_and_offset_mismatch_409(srv, dev):
    data = os.urandom(200_000)
    loc = dev.create(DEV, 2, data).headers["location"]
    assert dev.patch(loc, 0, data[:70_000]).status_code == 204
    r = dev.head(loc)
    assert r.headers["upload-offset"] == "70000" and "upload-expires" in r.headers
    assert "wearcap-verified" not in r.headers
    stale = dev.patch(loc, 0, data[:1000])
    assert stale.status_code == 409 and stale.headers["upload-offset"] == "70000"
    ahead = dev.patch(loc, 90_000, data[90_000:])
    assert ahead.status_code == 409
    r = dev.patch(loc, 70_000, data[70_000:])
    assert r.status_code == 204 and r.headers["wearcap-verified"] == f"sha256={sha256(data)}"


def test_chunk_checksum_mismatch_460_discards_the_chunk(srv, dev):
    data = os.urandom(100_000)
    loc = dev.create(DEV, 3, data).headers["location"]
    bad = dev.patch(loc, 0, data[:50_000], **{"Upload-Checksum": checksum("sha1", b"other")})
    assert bad.status_code == 460
    assert dev.head(loc).headers["upload-offset"] == "0"
    assert (srv.data / "staging" / f"{loc.rsplit('/', 1)[1]}.part").stat().st_size == 0
    ok = dev.patch(loc, 0, data, **{"Upload-Checksum": checksum("sha1", data)})
    assert ok.status_code == 204 and "wearcap-verified" in ok.headers


def test_whole_file_hash_mismatch_460_discards_upload(srv, dev):
    data = os.urandom(50_000)
    loc = dev.create(DEV, 4, data, sha=sha256(b"what the device claimed")).headers["location"]
    r = dev.patch(loc, 0, data)
    assert r.status_code == 460
    assert "SHA-256 mismatch" in r.text and "start this segment over" in r.text
    assert "wearcap-verified" not in r.headers
    assert dev.head(loc).status_code == 404
    assert objects(srv) == [] and staged(srv) == []
    assert dev.upload(DEV, 4, data)  # the client starts that segment over


@pytest.mark.parametrize("auth", [None, "Bearer wc_not-a-token", "Basic dXNlcjpwYXNz", "Bearer"])
def test_missing_or_wrong_token_401(srv, auth):
    c = srv.client(None)
    h = {"Authorization": auth} if auth else {}
    r = c.create(DEV, 0, b"x", **h)
    assert r.status_code == 401 and "bearer" in r.headers["www-authenticate"].lower()
    assert c.http.get(f"/devices/{DEV}/segments", headers=h).status_code == 401


def test_wrong_tus_version_412_and_content_type_415(srv, dev):
    r = dev.create(DEV, 0, b"x", **{"Tus-Resumable": "0.2.2"})
    assert r.status_code == 412 and r.headers["tus-version"] == "1.0.0"
    loc = dev.create(DEV, 0, b"x").headers["location"]
    h = {**dev.headers, "Upload-Offset": "0", "Content-Type": "text/plain"}
    assert dev.http.patch(loc, headers=h, content=b"x").status_code == 415


def test_devices_cannot_touch_each_other(srv, dev):
    other = srv.client(srv.enroll(OTHER))
    data = os.urandom(1000)
    loc = dev.upload(DEV, 0, data)
    half = dev.create(DEV, 1, data).headers["location"]
    for url in (loc, half):
        assert other.head(url).status_code == 404
        assert other.patch(url, 0, data).status_code == 404
        assert other.delete(url).status_code == 404
        assert other.get(url).status_code == 404
    assert other.head(loc.rsplit("/", 1)[0] + "/" + "0" * 32).status_code == 404
    # writing into the other namespace, even with a matching segment id
    assert other.create(DEV, 5, data).status_code == 403
    assert other.create(OTHER, 5, data, meta=metadata(OTHER, 5, sha256(data),
                                                      segment_id=f"{DEV}-00000005")
                        ).status_code == 403
    assert other.get(f"/devices/{DEV}/segments").status_code == 403
    assert other.get("/devices").status_code == 403
    assert dev.head(loc).status_code == 200 and dev.get(loc).content == data


@pytest.mark.parametrize("field,value", [
    ("segment_id", f"../{DEV}-00000001"), ("segment_id", f"{DEV}/../../x-00000001"),
    ("segment_id", f"{DEV}-0000000\x001"), ("segment_id", f"{DEV}-" + "1" * 300),
    ("filename", "../../../etc/cron.d/x"), ("filename", "x" * 500), ("device_id", ".."),
])
def test_path_tricks_400(srv, dev, field, value):
    data = b"payload"
    r = dev.create(DEV, 1, data, meta=metadata(DEV, 1, sha256(data), **{field: value}))
    assert r.status_code == 400, r.text
    assert objects(srv) == [] and staged(srv) == []


def test_oversize_413(srv, dev):
    assert dev.create(DEV, 0, b"", length=8 * 1024 * 1024 + 1).status_code == 413
    data = os.urandom(1000)
    loc = dev.create(DEV, 0, data).headers["location"]
    assert dev.patch(loc, 0, data + b"extra").status_code == 413  # Content-Length too big

    def chunked():  # no Content-Length: the server stops at Upload-Length
        yield data
        yield b"more than announced"

    h = {**dev.headers, "Upload-Offset": "0", "Content-Type": OCTET}
    assert dev.http.patch(loc, headers=h, content=chunked()).status_code == 413
    assert dev.head(loc).headers["upload-offset"] == "0"


def test_dedup_returns_existing_location_and_keeps_one_copy(srv, dev):
    data = os.urandom(20_000)
    loc = dev.upload(DEV, 7, data)
    again = dev.create(DEV, 7, data, body=data)
    assert again.status_code == 201 and again.headers["location"] == loc
    assert again.headers["wearcap-verified"] == f"sha256={sha256(data)}"
    assert dev.create(DEV, 7, os.urandom(20_000)).status_code == 409  # cannot overwrite
    assert objects(srv) == [f"{DEV}/{DEV}-00000007.mcap"]
    rows = sqlite3.connect(srv.data / "collector.sqlite3").execute(
        "SELECT count(*) FROM uploads").fetchone()[0]
    assert rows == 1


def test_unfinished_upload_is_returned_to_a_client_that_lost_its_url(srv, dev):
    data = os.urandom(30_000)
    loc = dev.create(DEV, 8, data).headers["location"]
    dev.patch(loc, 0, data[:10_000])
    again = dev.create(DEV, 8, data)
    assert again.status_code == 201 and again.headers["location"] == loc
    assert again.headers["upload-offset"] == "10000"
    assert dev.patch(loc, 10_000, data[10_000:]).status_code == 204


def test_cut_body_keeps_received_bytes_but_not_with_a_checksum(srv, dev):
    data = os.urandom(100_000)
    loc = dev.create(DEV, 9, data).headers["location"]
    path = "/files/" + loc.rsplit("/", 1)[1]
    token = dev.headers["Authorization"].split()[1]
    s = raw_partial_patch(srv.port, path, token, 0, len(data), data[:40_000])
    wait_for(lambda: os.path.getsize(srv.data / "staging" / (path[7:] + ".part")) == 40_000,
             "bytes to reach staging")
    s.close()
    wait_for(lambda: dev.head(loc).headers["upload-offset"] == "40000", "partial commit")
    # with a checksum the cut chunk cannot be trusted and is dropped
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: {OCTET}\r\n"
               f"Upload-Offset: 40000\r\nContent-Length: 60000\r\n"
               f"Upload-Checksum: {checksum('sha1', data[40_000:])}\r\n\r\n").encode()
              + data[40_000:70_000])
    wait_for(lambda: os.path.getsize(srv.data / "staging" / (path[7:] + ".part")) == 70_000,
             "bytes to reach staging")
    s.close()
    wait_for(lambda: os.path.getsize(srv.data / "staging" / (path[7:] + ".part")) == 40_000,
             "checksummed partial chunk dropped")
    assert dev.head(loc).headers["upload-offset"] == "40000"
    assert dev.patch(loc, 40_000, data[40_000:]).status_code == 204


def test_newer_patch_takes_over_a_stalled_one(srv, dev):
    data = os.urandom(100_000)
    loc = dev.create(DEV, 10, data).headers["location"]
    path = "/files/" + loc.rsplit("/", 1)[1]
    token = dev.headers["Authorization"].split()[1]
    stalled = raw_partial_patch(srv.port, path, token, 0, len(data), data[:25_000])
    wait_for(lambda: os.path.getsize(srv.data / "staging" / (path[7:] + ".part")) == 25_000,
             "stalled bytes to arrive")
    r = dev.patch(loc, 0, data)  # the client reconnected and retries from its old offset
    assert r.status_code == 409 and r.headers["upload-offset"] == "25000"
    r = dev.patch(loc, 25_000, data[25_000:])
    assert r.status_code == 204 and r.headers["wearcap-verified"] == f"sha256={sha256(data)}"
    stalled.close()


def test_termination(srv, dev):
    data = os.urandom(10_000)
    loc = dev.create(DEV, 11, data).headers["location"]
    dev.patch(loc, 0, data[:5000])
    assert dev.delete(loc).status_code == 204
    assert dev.head(loc).status_code == 404
    assert dev.patch(loc, 5000, data[5000:]).status_code == 404
    assert staged(srv) == []
    done = dev.upload(DEV, 12, data)
    assert dev.delete(done).status_code == 204
    assert objects(srv) == []


def test_expiration_410_then_a_fresh_upload(srv, dev):
    data = os.urandom(10_000)
    r = dev.create(DEV, 13, data)
    loc = r.headers["location"]
    assert "GMT" in r.headers["upload-expires"]
    dev.patch(loc, 0, data[:1000])
    srv.clock.now += 3601
    assert dev.head(loc).status_code == 410
    assert dev.patch(loc, 1000, data[1000:]).status_code == 410
    assert staged(srv) == []
    fresh = dev.create(DEV, 13, data)
    assert fresh.status_code == 201 and fresh.headers["location"] != loc
    assert fresh.headers["upload-offset"] == "0"


def test_completeness_view_reports_the_gap(srv, dev):
    for seq in (0, 1, 3, 6):
        dev.upload(DEV, seq, os.urandom(1000 + seq))
    dev.create(DEV, 7, b"unfinished")
    r = dev.get(f"/devices/{DEV}/segments")
    assert r.status_code == 200
    rep = r.json()
    assert rep["missing"] == [[2, 2], [4, 5], [7, 7]]
    assert (rep["received"], rep["verified"], rep["highest_seq"]) == (5, 4, 7)
    assert rep["missing_count"] == 4 and rep["complete"] is False
    from agent.collector import auth
    admin = srv.client(auth.admin_token(srv.collector.store))
    fleet = admin.get("/devices").json()
    assert [d["device_id"] for d in fleet] == [DEV]
    assert admin.get(f"/devices/{DEV}/segments").json() == rep


def test_admin_enrolls_over_http(srv):
    from agent.collector import auth
    admin = srv.client(auth.admin_token(srv.collector.store))
    r = admin.http.post("/devices", headers=admin.headers, json={"device_id": "rig-7"})
    assert r.status_code == 201
    rig = srv.client(r.json()["token"])
    assert rig.upload("rig-7", 0, b"hello")
    bad = admin.http.post("/devices", headers=admin.headers, json={"device_id": "../x"})
    assert bad.status_code == 400
    assert rig.http.post("/devices", headers=rig.headers, json={"device_id": "y"}
                         ).status_code == 403


def _patch_peak(dev, seq: int, size: int) -> int:
    block = os.urandom(64 * 1024)
    data_sha = sha256(block * (size // len(block)))
    loc = dev.create(DEV, seq, b"", length=size, sha=data_sha).headers["location"]

    def body():
        for _ in range(size // len(block)):
            yield block

    h = {**dev.headers, "Upload-Offset": "0", "Content-Type": OCTET,
         "Content-Length": str(size)}
    tracemalloc.start()
    try:
        r = dev.http.patch(loc, headers=h, content=body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 204 and "wearcap-verified" in r.headers
    return peak


def test_patch_memory_does_not_grow_with_body_size(srv, dev):
    small = _patch_peak(dev, 14, 2 * 1024 * 1024)
    big = _patch_peak(dev, 15, 8 * 1024 * 1024)
    print(f"peak traced memory: 2 MiB PATCH {small >> 10} KiB, 8 MiB PATCH {big >> 10} KiB")
    assert big < small + 1024 * 1024
    assert big < 8 * 1024 * 1024 / 2


def test_parallel_devices_upload_at_once(srv):
    from concurrent.futures import ThreadPoolExecutor

    devices = [f"rig-{i}" for i in range(4)]
    tokens = {d: srv.enroll(d) for d in devices}

    def work(device: str) -> list[str]:
        c = srv.client(tokens[device])
        try:
            return [c.upload(device, seq, os.urandom(20_000 + seq), chunk=7000)
                    for seq in range(5)]
        finally:
            c.close()

    with ThreadPoolExecutor(4) as pool:
        locations = [loc for locs in pool.map(work, devices) for loc in locs]
    assert len(set(locations)) == 20
    assert len(objects(srv)) == 20 and staged(srv) == []
    from agent.collector.completeness import fleet_report
    assert all(r["complete"] and r["verified"] == 5 for r in fleet_report(srv.collector.store))


def test_crash_between_storing_and_recording_verification(tmp_path):
    """The verified file was moved into objects/ but the server died before recording it."""
    from agent.collector.service import Collector
    from agent.collector.tus import SegmentMeta

    data = os.urandom(70_000)
    c = Collector(tmp_path / "d")
    from agent.collector import auth
    auth.enroll(c.store, DEV)
    who = auth.Principal("device", DEV)
    meta = SegmentMeta(DEV, f"{DEV}-00000005", 5, sha256(data), f"{DEV}-00000005.mcap")
    up, _ = c.create(who, len(data), meta)
    w = c.open_patch(up, None)
    w.write(data)
    up = w.finish()
    assert up.state == "complete"
    c.backend.store(up, c.staging.path(up.id))  # ...and the process dies here
    c.close()
    srv = ServerThread(tmp_path / "d").start()
    try:
        client = srv.client(srv.enroll(DEV))
        r = client.head(f"/files/{up.id}")
        assert r.headers["upload-offset"] == str(len(data))
        assert r.headers["wearcap-verified"] == f"sha256={sha256(data)}"
        assert objects(srv) == [f"{DEV}/{DEV}-00000005.mcap"]
        client.close()
    finally:
        srv.stop()
