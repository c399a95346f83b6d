"""Interop with a third-party tus server (@tus/server on Node, a real child process), and
resume through the fault proxy: a cut re-sends at most one chunk."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from faultproxy import FaultProxy
from sync_servers import (
    DEVICE,
    make_segments,
    node_available,
    sha256_file,
    tus_node_server,
    write_config,
)

from agent import config
from agent.sync.service import SyncService

pytestmark = pytest.mark.skipif(not node_available(),
                                reason="needs node and tests/interop/node_modules "
                                       "(./install.sh --dev)")
CHUNK = 256 * 1024


@pytest.fixture
def node(tmp_path):
    with tus_node_server(tmp_path) as srv:
        (tmp_path / "token").write_text("unused-by-this-server\n")
        yield srv


def stored(srv) -> dict[str, str]:
    """{sha256: upload id} of every upload the third-party server holds."""
    return {sha256_file(p): p.name for p in srv.root.iterdir() if p.suffix != ".json"}


def test_upload_to_third_party_server_verified_by_download(tmp_path, node):
    paths = make_segments(tmp_path / "spool", DEVICE, 3, 700_000)
    want = {sha256_file(p) for p in paths}
    cfg = write_config(tmp_path / "agent.toml", url=node.url, spool=tmp_path / "spool",
                       token_file=tmp_path / "token", chunk_bytes=CHUNK)
    r = run_cli("sync", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["verified"]) == 3
    assert set(stored(node)) == want and len(list(node.root.glob("*.json"))) == 3
    metas = [json.loads(p.read_text())["metadata"] for p in node.root.glob("*.json")]
    assert sorted(m["segment_id"] for m in metas) == sorted(p.stem for p in paths)
    assert {m["sha256"] for m in metas} == want
    assert not any(p.exists() for p in paths)


def run_service(tmp_path, url, **sync):
    cfg_path = write_config(tmp_path / "agent.toml", url=url, spool=tmp_path / "spool",
                            token_file=tmp_path / "token", backoff_base=0.01, backoff_cap=0.1,
                            **sync)
    cfg = config.load(cfg_path)
    svc = SyncService(cfg, spool=tmp_path / "spool", token="t", once=True)
    return svc.run()


@pytest.mark.parametrize("cut_at", [100, 300_000, 1_000_000])
def test_cut_mid_body_resends_at_most_one_chunk(tmp_path, node, cut_at):
    size = 2_000_000
    make_segments(tmp_path / "spool", DEVICE, 1, size, start=1)
    with FaultProxy(node.port) as proxy:
        clean = tmp_path / "clean"
        clean.mkdir()
        (clean / "token").write_text("t")
        make_segments(clean / "spool", DEVICE, 1, size, start=1)
        assert run_service(clean, proxy.url + "/files/", chunk_bytes=CHUNK).ok
        baseline = proxy.bytes_up
        proxy.bytes_up = 0
        proxy.cut_after(cut_at)
        summary = run_service(tmp_path, proxy.url + "/files/", chunk_bytes=CHUNK)
        assert summary.ok, summary.to_dict()
        assert proxy.faults == 1
        extra = proxy.bytes_up - baseline
    # a cut costs the part of one chunk in flight plus a few requests' headers
    assert extra <= CHUNK + 3_000, extra


def test_stall_is_detected_and_the_upload_resumes(tmp_path, node):
    make_segments(tmp_path / "spool", DEVICE, 1, 1_000_000)
    with FaultProxy(node.port) as proxy:
        proxy.stall_after(300_000, 4.0)  # longer than every timeout below
        summary = run_service(tmp_path, proxy.url + "/files/", chunk_bytes=CHUNK,
                              read_timeout=1.0, write_timeout=1.0, stall_seconds=1.0)
    assert summary.ok, summary.to_dict()
    assert proxy.faults == 1
    assert summary.retries >= 1 and "Timeout" in " ".join(summary.errors), summary.errors


def test_tampered_upload_on_a_third_party_server_is_repaired_and_reported(tmp_path, node):
    """The server holds the segment complete but with other bytes: the download check finds
    it, the upload is deleted and sent again, and the summary says so (not retries: 0)."""
    import httpx

    from agent.contract import encode_metadata, segment_metadata
    from agent.sync.state import State

    (path,) = make_segments(tmp_path / "spool", DEVICE, 1, 300_000, start=4)
    want = sha256_file(path)
    bad = bytearray(path.read_bytes())
    bad[1000] ^= 0xFF  # one flipped byte, same length
    h = {"Tus-Resumable": "1.0.0", "Upload-Length": str(len(bad)),
         "Upload-Metadata": encode_metadata(segment_metadata(DEVICE, 4, want))}
    r = httpx.post(node.url, headers=h)
    url = httpx.URL(node.url).join(r.headers["location"])
    r = httpx.patch(url, content=bytes(bad), headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204
    state = State(tmp_path / "spool" / "sync.sqlite3")
    state.add(path.stem, 4, str(path), path.stat().st_size)
    state.update(path.stem, sha256=want)
    state.transition(path.stem, "uploading", upload_url=str(url), upload_offset=len(bad))
    state.close()
    summary = run_service(tmp_path, node.url, chunk_bytes=CHUNK)
    assert summary.ok, summary.to_dict()
    assert summary.verified == [path.stem]
    assert summary.repairs == 1, summary.to_dict()
    assert any("repaired" in e for e in summary.errors), summary.errors
    assert summary.to_dict()["repairs"] == 1
    assert want in stored(node)
