"""Two collector nodes on one PostgreSQL and one SeaweedFS (real servers, with auth): an upload
begun on one node is finished on the other; parts are >= 5 MiB but the last; the stored
object is read back and hashed before it is called verified; a node dying between sending
parts and committing loses no acknowledged byte."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.collector.s3 import S3Backend
from agent.collector.s3staging import PART_MIN, S3Staging, Staged
from agent.collector.store import open_store
from tests.pg import PgServer
from tests.seaweed import Seaweed
from tests.test_collector_support import ServerThread, checksum, metadata

pytestmark = pytest.mark.services
DEV = "fleet-0001"
BUCKET = "wearcap-test"
CHUNK = 4 * 1024 * 1024  # the device's sync.chunk_bytes: smaller than S3's part minimum


@pytest.fixture
def pg(pg_server: PgServer) -> PgServer:
    return pg_server


@pytest.fixture(scope="module")
def s3(s3_server: Seaweed) -> Seaweed:
    s3_server.client().create_bucket(Bucket=BUCKET)
    return s3_server


class Fleet:
    """N collector nodes sharing one database and one bucket."""

    def __init__(self, root: Path, pg: PgServer, s3: Seaweed, n: int = 2) -> None:
        url = pg.new_database()
        self.bucket = BUCKET  # one bucket (one SeaweedFS collection); a prefix per fleet
        self.prefix = "f" + os.urandom(4).hex()
        self.client = s3.client()
        self.nodes: list[ServerThread] = []
        self.stagings: list[S3Staging] = []
        for i in range(n):
            backend = S3Backend(self.bucket, endpoint_url=s3.endpoint, client=s3.client(),
                                prefix=self.prefix)
            staging = S3Staging(backend, root / f"node{i}" / "scratch", node=f"node{i}")
            self.stagings.append(staging)
            self.nodes.append(ServerThread(root / f"node{i}", store=open_store(url),
                                           backend=backend, shared_staging=staging).start())

    def parts(self) -> list[tuple[str, int, int, bool]]:
        return [p for s in self.stagings for p in s.log.sizes]

    def keys(self) -> dict[str, int]:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + "/")
        return {o["Key"][len(self.prefix) + 1:]: o["Size"] for o in listing.get("Contents", [])}

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def fleet(tmp_path: Path, pg: PgServer, s3: Seaweed) -> Iterator[Fleet]:
    f = Fleet(tmp_path, pg, s3)
    yield f
    f.stop()


def test_upload_begun_on_one_node_finishes_on_the_other(fleet: Fleet) -> None:
    a, b = fleet.nodes
    token = a.enroll(DEV, first_seq=1)
    data = os.urandom(3 * CHUNK + 12345)  # 12.0 MiB in 4 MiB PATCHes
    ca, cb = a.client(token), b.client(token)
    r = ca.create(DEV, 1, data)
    assert r.status_code == 201, r.text
    loc = r.headers["location"]
    for i, node in enumerate((ca, cb, ca, cb)):  # alternate nodes, as a balancer may
        offset = int(node.head(loc).headers["upload-offset"])
        assert offset == min(i * CHUNK, len(data))
        part = data[offset:offset + CHUNK]
        r = node.patch(loc, offset, part, **{"Upload-Checksum": checksum("sha1", part)})
        assert r.status_code == 204, r.text
    sha = hashlib.sha256(data).hexdigest()
    assert r.headers["wearcap-verified"] == f"sha256={sha}"
    assert cb.head(loc).headers["wearcap-verified"] == f"sha256={sha}"
    assert ca.get(loc).content == data
    # S3's rule: every part but the last >= 5 MiB (SeaweedFS would not insist; we do)
    parts = fleet.parts()
    assert len(parts) >= 2
    assert all(size >= PART_MIN for _, _, size, last in parts if not last), parts
    assert sum(size for *_, size, _ in parts) == len(data)
    # nothing staged is left behind: only the segment's object
    assert fleet.keys() == {f"{DEV}/{DEV}-00000001.mcap": len(data)}
    report = cb.get(f"/devices/{DEV}/segments").json()
    assert report["verified"] == 1 and report["complete"]


def test_node_dying_after_sending_parts_before_committing_loses_nothing(fleet: Fleet) -> None:
    """Parts and a tail written, the offset never committed (the node was killed): another
    node continues from the committed offset, overwriting those part numbers."""
    a, b = fleet.nodes
    token = a.enroll(DEV)
    data = os.urandom(2 * CHUNK + 777)
    ca, cb = a.client(token), b.client(token)
    loc = ca.create(DEV, 2, data).headers["location"]
    assert ca.patch(loc, 0, data[:CHUNK]).status_code == 204
    # what node a would have done with the next PATCH before dying: send parts, no commit
    store = a.collector.store if a.collector else None
    assert store is not None
    up = store.upload(loc.rsplit("/", 1)[1])
    assert up is not None and up.offset == CHUNK
    scratch = Path(tempfile.mkstemp()[1])
    scratch.write_bytes(os.urandom(CHUNK))  # other bytes than the file's
    ghost = fleet.stagings[0].append(up, Staged.from_json(up.staging), scratch, CHUNK)
    scratch.unlink()
    assert ghost.parts and store.upload(up.id) == up  # sent, not committed
    # the device resumes on node b from the server's offset
    offset = int(cb.head(loc).headers["upload-offset"])
    assert offset == CHUNK
    while offset < len(data):
        r = cb.patch(loc, offset, data[offset:offset + CHUNK])
        assert r.status_code == 204, r.text
        offset = int(r.headers["upload-offset"])
    assert r.headers["wearcap-verified"] == f"sha256={hashlib.sha256(data).hexdigest()}"
    assert cb.get(loc).content == data
    # the dead node's multipart upload (begun, never committed) does not stay in the bucket
    left = fleet.client.list_multipart_uploads(Bucket=fleet.bucket, Prefix=fleet.prefix)
    assert left.get("Uploads", []) == []


def test_a_node_starting_drops_the_bodies_it_was_receiving_when_it_died(
        tmp_path: Path, s3: Seaweed) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "tmpdead.patch").write_bytes(b"never acknowledged")
    (scratch / "keep.txt").write_bytes(b"not ours")
    backend = S3Backend(BUCKET, endpoint_url=s3.endpoint, client=s3.client())
    S3Staging(backend, scratch)
    assert sorted(p.name for p in scratch.iterdir()) == ["keep.txt"]


def test_bytes_that_do_not_hash_to_the_metadata_are_refused_after_read_back(
        fleet: Fleet) -> None:
    a, _ = fleet.nodes
    token = a.enroll(DEV)
    data = os.urandom(6 * 1024 * 1024)
    c = a.client(token)
    r = c.create(DEV, 3, data, meta=metadata(DEV, 3, hashlib.sha256(b"other").hexdigest()))
    loc = r.headers["location"]
    r = c.patch(loc, 0, data)
    assert r.status_code == 460, r.text
    assert c.head(loc).status_code == 404
    assert fleet.keys() == {}  # the object, its parts and tails are gone


def test_part_size_below_the_s3_minimum_is_refused(tmp_path: Path, s3: Seaweed) -> None:
    backend = S3Backend("x", endpoint_url=s3.endpoint, client=s3.client())
    with pytest.raises(ValueError, match="at least"):
        S3Staging(backend, tmp_path, part_bytes=4 * 1024 * 1024)


def test_discard_purges_objects_parts_and_tails_from_the_bucket(fleet: Fleet) -> None:
    """The wearer's discard on SeaweedFS: a verified object, and an unfinished upload's
    multipart parts and tail object, all gone; the node that purges is not the one that
    received the bytes."""
    from agent.contract import discard_body, discard_path

    a, b = fleet.nodes
    token = a.enroll(DEV, first_seq=1)
    ca, cb = a.client(token), b.client(token)
    small = os.urandom(300_000)
    ca.upload(DEV, 1, small, chunk=CHUNK)
    big = os.urandom(3 * CHUNK)
    loc = ca.create(DEV, 2, big).headers["location"]
    for off in (0, CHUNK):  # 8 MiB committed: a 5 MiB part plus a 3 MiB tail object
        assert ca.patch(loc, off, big[off:off + CHUNK]).status_code == 204
    keys = fleet.keys()
    assert f"{DEV}/{DEV}-00000001.mcap" in keys and len(keys) >= 2, keys  # object + tail
    uploads = fleet.client.list_multipart_uploads(Bucket=fleet.bucket,
                                                  Prefix=fleet.prefix + "/")
    assert len(uploads.get("Uploads", [])) == 1
    body = discard_body("r", [(f"{DEV}-00000001", hashlib.sha256(small).hexdigest(), None),
                              (f"{DEV}-00000002", None, None)])
    r = cb.http.post(discard_path(DEV), headers=cb.headers, json=body)
    assert r.status_code == 200, r.text
    assert [d["held"] for d in r.json()["discarded"]] == ["verified", "open"]
    assert fleet.keys() == {}
    uploads = fleet.client.list_multipart_uploads(Bucket=fleet.bucket,
                                                  Prefix=fleet.prefix + "/")
    assert uploads.get("Uploads", []) == []
    assert ca.patch(loc, 2 * CHUNK, big[2 * CHUNK:]).status_code == 404
    assert ca.create(DEV, 2, big).status_code == 410
    rep = cb.get(f"/devices/{DEV}/segments").json()
    assert rep["discarded"] == [[1, 2]] and rep["missing"] == []


def test_retention_purges_expired_segments_from_the_bucket(tmp_path: Path, pg: PgServer,
                                                           s3: Seaweed) -> None:
    """Retention through the same purge path, on PostgreSQL and SeaweedFS: the expired
    object leaves the bucket, a fresh one stays, completeness says expired."""
    prefix = "r" + os.urandom(4).hex()
    backend = S3Backend(BUCKET, endpoint_url=s3.endpoint, client=s3.client(), prefix=prefix)
    node = ServerThread(tmp_path / "node", store=open_store(pg.new_database()),
                        backend=backend, retention_seconds=3600.0).start()
    try:
        c = node.client(node.enroll(DEV))
        c.upload(DEV, 0, os.urandom(50_000))
        node.clock.now += 7200
        c.upload(DEV, 1, os.urandom(50_000))
        assert node.collector is not None
        node.collector.sweep_retention()
        listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
        assert [o["Key"] for o in listing.get("Contents", [])] == [
            f"{prefix}/{DEV}/{DEV}-00000001.mcap"]
        rep = c.get(f"/devices/{DEV}/segments").json()
        assert rep["expired"] == [[0, 0]] and rep["missing"] == [] and rep["verified"] == 1
        c.close()
    finally:
        node.stop()


def test_a_patch_that_loses_its_upload_to_a_discard_leaves_nothing_in_the_bucket(
        fleet: Fleet) -> None:
    """A node still streaming a PATCH when another node purged the upload: its commit fails
    (the row is gone), and the multipart upload and tail object it made are removed."""
    from agent.collector.discard import purge
    from agent.collector.tus import TusError

    a, b = fleet.nodes
    assert a.collector is not None and b.collector is not None
    data = os.urandom(PART_MIN + 300_000)
    ca = a.client(a.enroll(DEV))
    r = ca.create(DEV, 4, os.urandom(2 * len(data)))
    up = a.collector.store.upload(r.headers["location"].rsplit("/", 1)[1])
    assert up is not None
    writer = a.collector.open_patch(up, None)
    writer.write(data)  # one part of 5 MiB and a tail to come, on node a
    purge(b.collector, DEV, 4, up.segment_id, reason="wearer-discard")  # node b discards
    with pytest.raises(TusError) as err:
        writer.finish()
    assert err.value.status == 409
    assert fleet.keys() == {}
    uploads = fleet.client.list_multipart_uploads(Bucket=fleet.bucket,
                                                  Prefix=fleet.prefix + "/")
    assert uploads.get("Uploads", []) == []
