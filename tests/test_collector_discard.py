"""The wearer's discard on the collector, over real HTTP: the device's own request deletes
what the collector holds (verified objects, staged bytes, a PATCH in flight), a tombstone
keeps seq + SHA-256, completeness shows a discard (not a loss), and the seq is never
accepted again."""

from __future__ import annotations

import logging
import os

from test_collector_support import (  # noqa: F401 (collector_srv: the srv fixture)
    ServerThread,
    TusClient,
    collector_srv,
    raw_partial_patch,
    sha256,
    wait_for,
)

from agent.collector import auth
from agent.contract import discard_body, discard_path

DEV = "sim-0001"
OTHER = "sim-0002"


def objects(srv) -> list[str]:
    root = srv.data / "objects"
    return sorted(p.stem for p in root.rglob("*.mcap"))


def staged(srv) -> list[str]:
    return sorted(p.name for p in (srv.data / "staging").iterdir())


def discard(c: TusClient, device: str, *segs, request: str = "r1"):
    body = discard_body(request, [(s, h, n) for s, h, n in segs])
    return c.http.post(discard_path(device), headers=c.headers, json=body)


def sid(q: int, device: str = DEV) -> str:
    return f"{device}-{q:08d}"


def test_discard_purges_verified_and_staged_and_keeps_tombstones(srv, caplog):
    tok = srv.enroll(DEV)
    c = srv.client(tok)
    blobs = {q: os.urandom(30_000 + q) for q in range(3)}
    for q, b in blobs.items():
        c.upload(DEV, q, b)
    r = c.create(DEV, 3, os.urandom(5000))  # unfinished: only staged
    c.patch(r.headers["location"], 0, os.urandom(1000))
    assert objects(srv) == [sid(0), sid(1), sid(2)] and len(staged(srv)) == 1
    with caplog.at_level(logging.WARNING, "agent.collector"):
        r = discard(c, DEV, (sid(1), sha256(blobs[1]), len(blobs[1])), (sid(3), None, None),
                    (sid(5), "e" * 64, 10))  # 5: never uploaded, tombstoned all the same
    assert r.status_code == 200, r.text
    got = {d["seq"]: d for d in r.json()["discarded"]}
    assert got[1]["held"] == "verified" and got[3]["held"] == "open" and got[5]["held"] is None
    assert objects(srv) == [sid(0), sid(2)] and staged(srv) == []
    assert any("purged sim-0001-00000001" in m for m in caplog.messages)
    reader = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    rep = reader.get(f"/data/devices/{DEV}").json()
    assert rep["discarded"] == [[1, 1], [3, 3], [5, 5]] and rep["discarded_count"] == 3
    assert rep["missing"] == [[4, 4]]  # 4 was never seen: a loss, until it comes
    assert rep["highest_seq"] == 5 and rep["verified"] == 2
    tombs = {t["seq"]: t for t in rep["tombstones"]}
    assert tombs[1]["sha256"] == sha256(blobs[1]) and tombs[1]["reason"] == "wearer-discard"
    assert tombs[3]["sha256"] != ""  # taken from the upload's metadata
    assert tombs[1]["purged"] is not None
    assert reader.get(f"/data/devices/{DEV}/segments/{sid(1)}").status_code == 404
    # sent again (a device restarted before it saw the answer): the same, nothing new
    again = discard(c, DEV, (sid(1), sha256(blobs[1]), len(blobs[1])))
    assert again.status_code == 200
    assert again.json()["discarded"][0]["first_tombstoned"] == got[1]["first_tombstoned"]
    # the seq is never reissued: a new upload of it is refused, with or without other bytes
    for q in (1, 3, 5):
        r = c.create(DEV, q, os.urandom(100))
        assert r.status_code == 410 and "never accepted again" in r.text, q
    c.close()
    reader.close()


def test_only_the_device_itself_may_discard(srv):
    tok = srv.enroll(DEV)
    other = srv.enroll(OTHER)
    c = srv.client(tok)
    c.upload(DEV, 0, b"x" * 1000)
    store = srv.collector.store
    for token, want in ((other, 403), (auth.role_token(store, "reader"), 403),
                        (auth.admin_token(store), 403), (None, 401), ("wc_nope", 401)):
        r = discard(TusClient(srv.url, token), DEV, (sid(0), None, None))
        assert r.status_code == want, (token, r.text)
    # its own token, but another device's segment in the body
    r = discard(c, DEV, (sid(0, OTHER), None, None))
    assert r.status_code == 400 and "not a segment of" in r.text
    for bad in (b"not json", b"[]", b'{"segments": []}', b'{"segments": [{"segment_id": 1}]}',
                b'{"segments": [{"segment_id": "sim-0001-00000000", "sha256": "XY"}]}'):
        r = c.http.post(discard_path(DEV), headers=c.headers, content=bad)
        assert r.status_code == 400, bad
    assert objects(srv) == [sid(0)]  # nothing refused removed anything
    assert store.tombstones(DEV) == []
    c.close()


def test_discard_terminates_an_upload_in_flight(srv):
    tok = srv.enroll(DEV)
    c = srv.client(tok)
    r = c.create(DEV, 7, b"\0" * 200_000)
    loc = r.headers["location"]
    # a PATCH that declares 200 kB and sends 50 kB: the server is streaming it
    s = raw_partial_patch(srv.port, loc, tok, 0, 200_000, os.urandom(50_000))
    try:
        wait_for(lambda: os.path.getsize(srv.data / "staging" / staged(srv)[0]) >= 50_000,
                 "the PATCH to stream")
        r = discard(c, DEV, (sid(7), None, None))
        assert r.status_code == 200 and r.json()["discarded"][0]["held"] == "open"
        s.settimeout(20)
        answer = s.recv(4096).decode(errors="replace")
    finally:
        s.close()
    assert answer.startswith("HTTP/1.1 409"), answer  # the stream was cut off
    assert staged(srv) == [] and objects(srv) == []
    assert c.head(loc).status_code == 404
    assert c.patch(loc, 0, b"x").status_code == 404
    c.close()


def test_completeness_on_the_cli_shows_discards(srv, tmp_path):
    from conftest import run_cli

    c = srv.client(srv.enroll(DEV))
    c.upload(DEV, 0, b"a" * 100)
    assert discard(c, DEV, (sid(1), "b" * 64, 100)).status_code == 200
    c.close()
    import json

    r = run_cli("collector", "report", "--data", str(srv.data), "--json")
    assert r.returncode == 0, r.stderr
    (rep,) = json.loads(r.stdout)
    assert rep["complete"] and rep["missing"] == [] and rep["discarded"] == [[1, 1]]
