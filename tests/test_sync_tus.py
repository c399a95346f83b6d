"""The sans-IO tus client: requests built, responses interpreted, hostile answers survived."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sync import tus
from agent.sync.tus import Phase, Response

SHA = hashlib.sha256(b"segment").hexdigest()
BASE = "http://127.0.0.1:8750/files/"
URL = BASE + "abc"
WEARCAP = tus.Caps(frozenset({"creation", "checksum", "termination"}), ("sha1", "sha256"))
PLAIN = tus.Caps(frozenset({"creation", "termination"}))


def machine(length=10_000, chunk=4096, url=None, caps=WEARCAP):
    return tus.TusUpload(base_url=BASE, length=length, sha256=SHA, caps=caps, chunk_bytes=chunk,
                         metadata={"device_id": "sim-0001", "segment_id": "sim-0001-00000001",
                                   "seq": "1", "sha256": SHA, "filename": "x.mcap"},
                         auth_headers={"Authorization": "Bearer t"}, url=url)


def R(status, **headers):
    return Response(status, {k.replace("_", "-").lower(): str(v) for k, v in headers.items()})


def at_patch(m, offset):
    m.next_request()
    assert isinstance(m.receive(R(200, Upload_Offset=offset, Upload_Length=m.length)),
                      tus.Progress)
    assert m.phase is Phase.PATCH


def test_metadata_round_trip_and_keys():
    meta = {"device_id": "sim-0001", "seq": "12", "filename": "a b,c.mcap", "empty": ""}
    assert tus.decode_metadata(tus.encode_metadata(meta)) == meta
    with pytest.raises(ValueError):
        tus.encode_metadata({"bad key": "x"})
    with pytest.raises(ValueError):
        tus.encode_metadata({"a,b": "x"})


@pytest.mark.parametrize(("headers", "checksum", "termination"), [
    ({"tus-version": "1.0.0", "tus-extension": "creation,checksum,termination",
      "tus-checksum-algorithm": "sha1,sha256"}, "sha1", True),
    ({"tus-version": "1.0.0", "tus-extension": "creation,checksum",
      "tus-checksum-algorithm": "sha256,md5"}, "sha256", False),
    ({"tus-version": "1.0.0", "tus-extension": "creation,termination"}, None, True),
    ({"tus-version": "1.0.0", "tus-extension": "creation",
      "tus-checksum-algorithm": "sha1"}, None, False),  # algorithms without the extension
])
def test_caps(headers, checksum, termination):
    caps = tus.parse_caps(Response(204, headers))
    assert caps is not None
    assert caps.checksum == checksum
    assert caps.termination is termination


@pytest.mark.parametrize("resp", [
    Response(204, {"tus-version": "0.2.2"}), Response(500, {}), Response(404, {}),
])
def test_not_a_tus_server(resp):
    assert tus.parse_caps(resp) is None


def test_happy_path_requests_and_events():
    m = machine(length=10_000, chunk=4096)
    req = m.next_request()
    h = dict(req.headers)
    assert (req.method, req.url) == ("POST", BASE)
    assert h["Upload-Length"] == "10000" and h["Tus-Resumable"] == "1.0.0"
    assert tus.decode_metadata(h["Upload-Metadata"])["sha256"] == SHA
    assert h["Authorization"] == "Bearer t"
    assert m.receive(R(201, Location="/files/abc")) == tus.Created(URL)
    assert m.next_request().method == "HEAD"
    assert m.receive(R(200, Upload_Offset=0, Upload_Length=10_000)) == tus.Progress(0)
    sent = []
    while True:
        req = m.next_request()
        assert req.method == "PATCH"
        h = dict(req.headers)
        assert h["Content-Type"] == "application/offset+octet-stream"
        assert req.checksum == "sha1"
        off, n = req.body
        assert h["Upload-Offset"] == str(off) and h["Content-Length"] == str(n)
        sent.append(req.body)
        extra = {"Wearcap_Verified": f"sha256={SHA}"} if off + n == 10_000 else {}
        ev = m.receive(R(204, Upload_Offset=off + n, **extra))
        if isinstance(ev, tus.Verified):
            break
        assert ev == tus.Progress(off + n)
    assert sent == [(0, 4096), (4096, 4096), (8192, 1808)]
    assert m.next_request() is None


def test_resume_starts_with_head_and_continues_from_the_server_offset():
    m = machine(url=URL)
    req = m.next_request()
    assert (req.method, req.url) == ("HEAD", URL)
    m.receive(R(200, Upload_Offset=5000, Upload_Length=10_000))
    assert m.next_request().body == (5000, 4096)


def test_complete_without_header_is_verified_by_download_or_left_unverified():
    m = machine(url=URL, caps=PLAIN)
    m.next_request()
    m.receive(R(200, Upload_Offset=10_000, Upload_Length=10_000))
    assert m.next_request().method == "GET"
    assert m.downloaded(SHA) == tus.Verified(SHA)
    m = machine(url=URL, caps=PLAIN)
    m.next_request()
    m.receive(R(200, Upload_Offset=10_000))
    assert isinstance(m.downloaded(None, 405), tus.Unverifiable)
    m = machine(url=URL, caps=PLAIN)
    m.next_request()
    m.receive(R(200, Upload_Offset=10_000))
    assert isinstance(m.downloaded(None, 503), tus.Retry)
    # the server holds other bytes: terminate, then create again
    m = machine(url=URL, caps=PLAIN)
    m.next_request()
    m.receive(R(200, Upload_Offset=10_000))
    assert isinstance(m.downloaded("0" * 64), tus.Resync)
    assert m.next_request().method == "DELETE"
    assert isinstance(m.receive(R(204)), tus.Restarted)
    assert m.url is None and m.next_request().method == "POST"


@pytest.mark.parametrize(("resp", "event", "next_method"), [
    (R(201, Location="/files/abc"), tus.Created, "HEAD"),
    (R(200, Location="http://127.0.0.1:8750/files/abc"), tus.Created, "HEAD"),  # dedup
    (R(201), tus.Retry, "POST"),
    (R(201, Location="http://evil.example/files/abc"), tus.Retry, "POST"),
    (R(201, Location="ftp://127.0.0.1:8750/x"), tus.Retry, "POST"),
    (R(201, Location="/files/" + "a" * 5000), tus.Retry, "POST"),
    (R(409), tus.Rejected, "POST"),
    (R(413), tus.Rejected, "POST"),
    (R(403), tus.Rejected, "POST"),
    (R(400), tus.Rejected, "POST"),
    (R(401), tus.Retry, "POST"),
    (R(500), tus.Retry, "POST"),
    (R(302, Location="/elsewhere"), tus.Retry, "POST"),
])
def test_create_answers(resp, event, next_method):
    m = machine()
    m.next_request()
    ev = m.receive(resp)
    assert isinstance(ev, event)
    if event is tus.Retry and resp.status == 401:
        assert ev.auth
    if not isinstance(ev, tus.Rejected):
        assert m.next_request().method == next_method


@pytest.mark.parametrize(("headers", "status", "event", "next_method"), [
    ({}, 200, tus.Retry, "HEAD"),                                       # missing offset
    ({"upload-offset": "12abc"}, 200, tus.Retry, "HEAD"),               # garbage
    ({"upload-offset": "-5"}, 200, tus.Retry, "HEAD"),
    ({"upload-offset": "9" * 40}, 200, tus.Retry, "HEAD"),              # huge
    ({"upload-offset": "20000"}, 200, tus.Resync, "DELETE"),            # beyond the length
    ({"upload-offset": "10", "upload-length": "99"}, 200, tus.Resync, "DELETE"),
    ({"upload-offset": "10"}, 200, tus.Progress, "PATCH"),
    ({"upload-offset": "10000", "wearcap-verified": f"sha256={SHA}"}, 200, tus.Verified, None),
    ({"upload-offset": "10000", "wearcap-verified": "sha256=" + "0" * 64}, 200, tus.Progress,
     "GET"),
    ({"upload-offset": "500", "wearcap-verified": f"sha256={SHA}"}, 200, tus.Progress, "PATCH"),
    ({}, 404, tus.Restarted, "POST"),
    ({}, 410, tus.Restarted, "POST"),
    ({}, 403, tus.Rejected, None),
    ({}, 401, tus.Retry, "HEAD"),
    ({}, 503, tus.Retry, "HEAD"),
])
def test_head_answers(headers, status, event, next_method):
    m = machine(url=URL)
    m.next_request()
    ev = m.receive(Response(status, headers))
    assert isinstance(ev, event)
    if next_method is not None:
        assert m.next_request().method == next_method


def test_offset_beyond_length_without_termination_creates_again():
    m = machine(url=URL, caps=tus.Caps(frozenset({"creation"})))
    m.next_request()
    assert isinstance(m.receive(R(200, Upload_Offset=99_999)), tus.Restarted)
    assert m.next_request().method == "POST"


@pytest.mark.parametrize(("resp", "event", "next_method", "offset"), [
    (R(204, Upload_Offset=4096 + 4096), tus.Progress, "PATCH", 8192),
    (R(204, Upload_Offset=4096 + 100), tus.Progress, "PATCH", 4196),   # partial acceptance
    (R(204, Upload_Offset=4096 + 4097), tus.Resync, "HEAD", None),     # more than we sent
    (R(204, Upload_Offset=100), tus.Resync, "HEAD", None),             # went backwards
    (R(204, Upload_Offset=4096), tus.Resync, "HEAD", None),            # no progress
    (R(204), tus.Resync, "HEAD", None),                                # missing
    (R(204, Upload_Offset="zz"), tus.Resync, "HEAD", None),            # garbage
    (R(409), tus.Resync, "HEAD", None),
    (R(460), tus.Resync, "HEAD", None),
    (R(404), tus.Restarted, "POST", None),
    (R(410), tus.Restarted, "POST", None),
    (R(413), tus.Rejected, None, None),
    (R(500), tus.Retry, "HEAD", None),
])
def test_patch_answers(resp, event, next_method, offset):
    m = machine(url=URL)
    at_patch(m, 4096)
    req = m.next_request()
    assert req.body == (4096, 4096)
    ev = m.receive(resp)
    assert isinstance(ev, event)
    nxt = m.next_request()
    assert (nxt.method if nxt else None) == next_method
    if offset is not None:
        assert m.offset == offset


def test_final_patch_with_a_wrong_verified_header_is_not_trusted():
    m = machine(length=100, url=URL)
    at_patch(m, 0)
    m.next_request()
    ev = m.receive(R(204, Upload_Offset=100, Wearcap_Verified="sha256=" + "f" * 64))
    assert ev == tus.Progress(100)
    assert m.next_request().method == "HEAD"


def test_repeated_conflicts_back_off_instead_of_looping():
    m = machine(url=URL)
    events = []
    for _ in range(tus.MAX_RESYNCS + 1):
        at_patch(m, 0)
        m.next_request()
        events.append(m.receive(R(409)))
    assert all(isinstance(e, tus.Resync) for e in events[:-1])
    assert isinstance(events[-1], tus.Retry)


def test_repeated_restarts_back_off():
    m = machine(url=URL)
    events = []
    for _ in range(tus.MAX_RESTARTS + 1):
        if m.url is None:
            m.next_request()
            m.receive(R(201, Location="/files/x"))
        m.next_request()
        events.append(m.receive(R(404)))
    assert isinstance(events[-1], tus.Retry)
    assert m.url is None


def test_network_error_mid_patch_resumes_with_head():
    m = machine(url=URL)
    at_patch(m, 0)
    m.next_request()
    assert isinstance(m.network_error("cut"), tus.Retry)
    assert m.next_request().method == "HEAD"


STATUSES = [200, 201, 204, 301, 400, 401, 403, 404, 409, 410, 412, 413, 415, 460, 500, 503]
HEADER_VALUES = st.one_of(st.none(), st.integers(-5, 30_000).map(str),
                          st.text(max_size=30), st.just("9" * 50))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STATUSES), HEADER_VALUES, HEADER_VALUES,
                          st.sampled_from(["none", "good", "bad"]),
                          st.sampled_from(["/files/a", "", "http://x.example/f", None])),
                max_size=40))
def test_hostile_server_never_crashes_or_fakes_verification(answers):
    m = machine(length=10_000, chunk=4096)
    for status, offset, length, verified, location in answers:
        req = m.next_request()
        if req is None:
            break
        if req.body is not None:
            off, n = req.body
            assert off >= 0 and n > 0 and off + n <= 10_000
        if req.method in ("GET",):
            ev = m.downloaded(None, status)
        else:
            headers = {}
            if offset is not None:
                headers["upload-offset"] = offset
            if length is not None:
                headers["upload-length"] = length
            if location is not None:
                headers["location"] = location
            good = verified == "good"
            if verified != "none":
                headers["wearcap-verified"] = f"sha256={SHA if good else '1' * 64}"
            ev = m.receive(Response(status, headers))
            if isinstance(ev, tus.Verified):
                assert good and status in (200, 204)
                assert offset is not None and offset.strip() == "10000"
        assert m.offset is None or 0 <= m.offset <= 10_000
        if isinstance(ev, tus.TERMINAL):
            assert m.next_request() is None
            break


def test_phase_transitions_live_in_one_table():
    from agent.sync.tus import TRANSITIONS, Phase

    assert not [k for k in TRANSITIONS if k[0] is Phase.DONE]  # DONE is final
    # every phase but DONE can be left, and every phase is reachable
    assert {k[0] for k in TRANSITIONS} == set(Phase) - {Phase.DONE}
    assert set(TRANSITIONS.values()) | {Phase.CREATE} == set(Phase)
    m = tus.TusUpload(base_url="http://h/files/", length=10, sha256="0" * 64, metadata={},
                      caps=tus.Caps(), chunk_bytes=4)
    m.phase = Phase.DONE
    with pytest.raises(RuntimeError, match="no transition"):
        m._go("created")
