"""Data access for data engineers: the reader role, over real HTTP and the real CLI.

Every role x every data endpoint: admin and reader get the data, a device token is refused
(403, its own device included), no token or a revoked one is a 401."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli
from test_collector_support import (  # noqa: F401 (collector_srv: the srv fixture)
    ServerThread,
    TusClient,
    collector_srv,
    sha256,
)

from agent.collector import auth

DEV = "sim-0001"
OTHER = "sim-0002"


@pytest.fixture
def held(srv):
    """Two verified segments of DEV (seq 0 and 2) and an unfinished one (seq 3)."""
    tok = srv.enroll(DEV)
    srv.enroll(OTHER)
    c = srv.client(tok)
    blobs = {q: os.urandom(20_000 + q) for q in (0, 2)}
    for q, b in blobs.items():
        c.upload(DEV, q, b)
    r = c.create(DEV, 3, os.urandom(1000))
    assert r.status_code == 201
    c.close()
    return tok, blobs


ENDPOINTS = ["/data/devices", f"/data/devices/{DEV}",
             f"/data/devices/{DEV}/segments/{DEV}-00000000"]


def _tokens(srv, dev_token):
    store = srv.collector.store
    revoked = auth.role_token(store, "reader")
    auth.revoke_role(store, "reader")
    return {"admin": auth.admin_token(store), "reader": auth.role_token(store, "reader"),
            "device-own": dev_token, "device-other": auth.enroll(store, "sim-0003"),
            "none": None, "unknown": "wc_" + "x" * 43, "revoked-reader": revoked}


EXPECT = {"admin": 200, "reader": 200, "device-own": 403, "device-other": 403, "none": 401,
          "unknown": 401, "revoked-reader": 401}


def test_every_role_on_every_data_endpoint(srv, held):
    tokens = _tokens(srv, held[0])
    seen = {}
    for role, tok in tokens.items():
        c = TusClient(srv.url, tok)
        for path in ENDPOINTS:
            r = c.get(path)
            seen[(role, path)] = r.status_code
            if r.status_code == 403:
                assert "reader" in r.text
        c.close()
    want = {(role, path): EXPECT[role] for role in tokens for path in ENDPOINTS}
    assert seen == want


def test_reader_lists_devices_segments_and_completeness(srv, held):
    _, blobs = held
    c = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    fleet = {d["device_id"]: d for d in c.get("/data/devices").json()}
    assert set(fleet) == {DEV, OTHER}
    assert fleet[DEV]["verified"] == 2 and fleet[DEV]["missing"] == [[1, 1], [3, 3]]
    assert fleet[DEV]["in_progress"] == 1
    one = c.get(f"/data/devices/{DEV}").json()
    segs = {s["seq"]: s for s in one["segments"]}
    assert sorted(segs) == [0, 2, 3]
    assert segs[0]["state"] == "verified" and segs[0]["sha256"] == sha256(blobs[0])
    assert segs[2]["length"] == len(blobs[2])
    assert segs[3]["state"] == "open" and segs[3]["download"] is None
    assert c.get("/data/devices/nobody").status_code == 404
    c.close()


def test_reader_downloads_a_segment_byte_for_byte(srv, held):
    _, blobs = held
    c = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    seg = c.get(f"/data/devices/{DEV}").json()["segments"][1]
    r = c.get(seg["download"])
    assert r.status_code == 200 and r.content == blobs[2]
    assert r.headers["wearcap-verified"] == f"sha256={sha256(blobs[2])}"
    # not held, unfinished, another device's id, not a segment id: all 404
    for path in (f"/data/devices/{DEV}/segments/{DEV}-00000001",
                 f"/data/devices/{DEV}/segments/{DEV}-00000003",
                 f"/data/devices/{DEV}/segments/{OTHER}-00000000",
                 f"/data/devices/{DEV}/segments/..%2Fetc"):
        assert c.get(path).status_code == 404, path
    c.close()


def test_reader_cannot_write(srv, held):
    c = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    assert c.create(DEV, 9, b"x" * 10).status_code == 403
    assert c.http.post("/devices", headers=c.headers,
                       json={"device_id": "new"}).status_code == 403
    c.close()


def test_cli_issues_and_revokes_a_reader_token(tmp_path):
    data = tmp_path / "data"
    r = run_cli("collector", "token", "--role", "reader", "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["role"] == "reader" and doc["token"].startswith("wc_")
    plain = run_cli("collector", "token", "--role", "reader", "--data", str(data))
    assert plain.returncode == 0 and plain.stdout.strip().startswith("wc_")
    s = ServerThread(data).start()
    try:
        old, new = TusClient(s.url, doc["token"]), TusClient(s.url, plain.stdout.strip())
        assert old.get("/data/devices").status_code == 401  # replaced
        assert new.get("/data/devices").status_code == 200
        r = run_cli("collector", "token", "--role", "reader", "--revoke", "--data", str(data),
                    "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"role": "reader", "revoked": True}
        assert new.get("/data/devices").status_code == 401
        old.close()
        new.close()
    finally:
        s.stop()
    again = run_cli("collector", "token", "--role", "reader", "--revoke", "--data", str(data))
    assert again.returncode == 2 and "no reader token" in again.stderr
    assert "Traceback" not in again.stderr
    bad = run_cli("collector", "token", "--role", "device", "--data", str(data))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
